"""Seed 002's training API on the real stack: real Slurm jobs that train a real PyTorch model.

- the seed's complete workflow (the README's Bash example): digits + mlp, 5 epochs, queued -> running ->
  completed, its history, metrics and logs, the model downloaded, loaded with torch and predicting digits;
- stop cancels the Slurm job; a tenant limited to one session queues the second (GET /queue, DELETE /queue/{id}),
  a job held in Slurm's queue reads queued with Slurm's reason; a running session cannot be cancelled there;
- an uploaded dataset trains; traversal names and oversized uploads are refused and leave nothing behind;
- `kubectl get tr` shows the columns; the storage's files through SFTP on a real sshd.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from aifactory.devstack.process import state_dir
from aifactory.devstack.stack import API_URL
from aifactory.storage import PARTIAL_MARK
from aifactory.trainer import load_dataset, split
from tests.e2e import test_identity
from tests.e2e.test_readme_examples import example

LIMITED = "train-limited"  # a tenant allowed one training session at a time
STORAGE = lambda: state_dir() / "slurm" / "storage"  # noqa: E731  (the local stack's SlurmCluster storage.path)
GOOD = {"model_architecture": "mlp", "dataset_name": "digits", "learning_rate": 0.001, "batch_size": 32}
LONG = {**GOOD, "batch_size": 4, "epochs": 1000}  # minutes of training: long enough to be stopped


@pytest.fixture(scope="module")
def runs(stack):
    """Training runs made by this module are deleted (their jobs cancelled) at its end."""
    yield
    for namespace in ("default", LIMITED):
        stack.kubectl("delete", "trainingruns", "--all", "-n", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def limited_key(stack, runs) -> str:
    stack.ensure_namespace(LIMITED)
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "aifactory.io/v1alpha1", "kind": "Tenant", "metadata": {"name": LIMITED},
        "spec": {"quotas": {"maxTrainingSessions": 1}}}))
    key = stack.make_key(LIMITED, "management")
    test_identity.MADE_KEYS.append(key)
    with stack.api(key) as client:  # the API's watch brings the new key within moments
        deadline = time.monotonic() + 15
        while client.get("/api/v1/training/sessions").status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.2)
    return key


def run_json(stack, session: str, namespace: str = "default") -> dict:
    got = stack.kubectl("get", "trainingrun", session.replace("_", "-"), "-n", namespace, "-o", "json")
    return json.loads(got.stdout)


def wait_state(client, session: str, want, timeout: float = 180, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/training/{session}/status").json()
        if want(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"{session}: timed out waiting for {what or 'a state'}; last status {status}")


class StateWatch:
    """Every state each TrainingRun of a namespace passes through, from a kubectl watch (none is missed)."""

    def __init__(self, stack, namespace: str = "default"):
        argv = ["kubectl", "--kubeconfig", str(stack.kube.kubeconfig), "get", "trainingruns", "-n", namespace,
                "--watch", "-o", "jsonpath={.metadata.name} {.status.state}{'\\n'}"]
        self.seen: dict[str, list[str]] = {}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            name, _, state = line.strip().partition(" ")
            states = self.seen.setdefault(name, [])
            if state and (not states or states[-1] != state):
                states.append(state)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.mark.skipif(shutil.which("jq") is None, reason="the seed's Bash example uses jq")
def test_the_seeds_training_workflow_trains_a_model_that_predicts_digits(stack, runs, tmp_path):
    import torch

    watch = StateWatch(stack)
    env = {**os.environ, "AIFACTORY_API_URL": API_URL, "AIFACTORY_API_KEY": stack.api_key}
    try:
        result = subprocess.run(["bash", "-c", example("training-bash")], env=env, capture_output=True, text=True,
                                timeout=300, cwd=tmp_path)
    finally:
        time.sleep(1)
        watch.stop()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    session = re.search(r"Started session: (sess_[0-9a-f]{12})", out).group(1)
    assert watch.seen[session.replace("_", "-")] == ["queued", "running", "completed"], (watch.seen, out)
    printed = re.findall(r"State: (\w+)", out)
    assert printed[-1] == "completed" and set(printed) <= {"queued", "running", "completed"}, out

    with stack.api() as client:
        history = client.get(f"/api/v1/training/{session}/history").json()
        assert [m["epoch"] for m in history] == [1, 2, 3, 4, 5]
        losses = [m["loss"] for m in history]
        assert losses[-1] < losses[0] and losses == sorted(losses, reverse=True), losses
        assert history[-1]["val_accuracy"] > 0.8, history[-1]
        assert client.get(f"/api/v1/training/{session}/metrics").json() == history[-1]
        status = client.get(f"/api/v1/training/{session}/status").json()
        assert status["state"] == "completed" and status["current_epoch"] == 5 and status["total_epochs"] == 5
        assert status["start_time"] and status["end_time"] and status["error_message"] is None
        logs = client.get(f"/api/v1/training/{session}/logs", params={"limit": 100}).json()
        messages = [e["message"] for e in logs]
        assert any(m.startswith("Starting training session") for m in messages)
        assert any(m.startswith("Epoch 5/5 completed") for m in messages)
        assert all(e["session_id"] == session and e["level"] and e["timestamp"] for e in logs)
        models = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert "Epoch 5/5 completed" in out and "Downloaded model" in out
    name = f"mlp_digits_{session}"
    assert name in models and models[name]["file_path"] == f"models/{name}.pth"
    run = run_json(stack, session)
    assert run["status"]["model"] == name and run["status"]["jobId"]
    assert stack.slurm_job(run["status"]["jobId"])["job_state"] == "COMPLETED"

    # The downloaded model loads with torch and predicts the digits of the validation split.
    downloaded = tmp_path / "model.pth"
    assert abs(downloaded.stat().st_size - models[name]["size_mb"] * 2**20) < 2**10
    extra = {"aifactory.json": ""}
    model = torch.jit.load(str(downloaded), _extra_files=extra)
    data = load_dataset("digits", None)
    _, validation = split(len(data.x))
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.x[validation])).argmax(1).numpy()
    accuracy = float((predicted == data.y[validation]).mean())
    assert accuracy > 0.8 and abs(accuracy - history[-1]["val_accuracy"]) < 1e-3, accuracy
    assert json.loads(extra["aifactory.json"])["session_id"] == session


def test_kubectl_shows_training_runs_with_their_columns(stack, runs):
    table = stack.kubectl("get", "tr", "-n", "default").stdout.splitlines()
    assert table and table[0].split() == ["NAME", "STATE", "EPOCH", "EPOCHS", "LOSS", "ACCURACY", "JOB", "AGE"]
    completed = [line.split() for line in table[1:] if " completed " in line]
    assert completed, table
    name, state, epoch, epochs, loss, accuracy, job = completed[0][:7]
    assert (state, epoch, epochs) == ("completed", "5", "5") and float(loss) < 1 and float(accuracy) > 0.8
    assert job.isdigit()


def test_stopping_a_running_session_cancels_its_slurm_job(stack, runs):
    with stack.api() as client:
        session = client.post("/api/v1/training/start", json=LONG).json()["session_id"]
        wait_state(client, session, lambda s: s["state"] == "running" and (s["current_epoch"] or 0) >= 1,
                   what="running with an epoch done")
        job_id = run_json(stack, session)["status"]["jobId"]
        response = client.post(f"/api/v1/training/{session}/stop")
        assert response.json() == {"message": f"Training session {session} stopped successfully"}
        status = wait_state(client, session, lambda s: s["state"] == "stopped", timeout=60, what="stopped")
        assert status["end_time"] and 1 <= status["current_epoch"] < 1000
        assert stack.slurm_job(job_id)["job_state"] == "CANCELLED"
        again = client.post(f"/api/v1/training/{session}/stop")
        assert again.status_code == 409 and "stopped" in again.json()["detail"]
        assert client.get(f"/api/v1/training/{session}/history").json()  # what it learnt so far stays readable


def test_a_tenant_limited_to_one_session_queues_the_next(stack, runs, limited_key):
    with stack.api(limited_key) as client:
        first = client.post("/api/v1/training/start", json=LONG).json()["session_id"]
        second = client.post("/api/v1/training/start", json={**GOOD, "epochs": 1}).json()["session_id"]
        wait_state(client, first, lambda s: s["state"] == "running", what="the first running")
        time.sleep(3)  # a few of the operator's ticks: the second must stay queued
        assert client.get(f"/api/v1/training/{second}/status").json()["state"] == "queued"
        second_run = run_json(stack, second, LIMITED)
        assert "jobId" not in second_run["status"] and "free training slot" in second_run["status"]["message"]
        queue = client.get("/api/v1/training/queue").json()
        assert [q["session_id"] for q in queue] == [second] and queue[0]["status"]["state"] == "queued"

        refused = client.delete(f"/api/v1/training/queue/{first}")
        assert refused.status_code == 409 and "is not queued: it is running" in refused.json()["detail"]
        assert client.get(f"/api/v1/training/{first}/status").json()["state"] == "running"

        cancelled = client.delete(f"/api/v1/training/queue/{second}")
        assert cancelled.json() == {"message": f"Queued session {second} cancelled successfully"}
        wait_state(client, second, lambda s: s["state"] == "stopped", timeout=30, what="the second stopped")
        assert client.get("/api/v1/training/queue").json() == []
        assert "jobId" not in run_json(stack, second, LIMITED)["status"]  # it never had a job

        # Slurm's own queue reads queued too, with its pending reason: a run asking for both CPUs of the node
        # while the first holds one (another tenant, without a limit of its own).
        held = f"held-{uuid.uuid4().hex[:6]}"
        stack.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "aifactory.io/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": held, "namespace": "default"},
            "spec": {"architecture": "mlp", "dataset": "digits", "resources": {"cpu": stack.slurm_cpus()},
                     "hyperparameters": {"learningRate": 0.001, "batchSize": 32, "epochs": 1}}}))
        with stack.api() as admin:
            held_id = held.replace("-", "_")
            pending = lambda _: "Resources" in (run_json(stack, held_id).get("status") or {}).get("message", "")
            wait_state(admin, held_id, pending, timeout=60, what="Slurm's pending reason in the status")
            status = run_json(stack, held_id)["status"]
            assert status["state"] == "queued" and status["message"] == "Queued by Slurm: Resources", status
            assert admin.get(f"/api/v1/training/{held_id}/status").json()["state"] == "queued"
            assert held_id in [q["session_id"] for q in admin.get("/api/v1/training/queue").json()]
            assert admin.delete(f"/api/v1/training/queue/{held_id}").status_code == 200
            wait_state(admin, held_id, lambda s: s["state"] == "stopped", timeout=60, what="held stopped")
            assert stack.slurm_job(status["jobId"])["job_state"] == "CANCELLED"

        client.post(f"/api/v1/training/{first}/stop")
        wait_state(client, first, lambda s: s["state"] == "stopped", timeout=60, what="the first stopped")


def area_files() -> set[str]:
    root = STORAGE()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_an_uploaded_dataset_trains(stack, runs):
    data = load_dataset("digits", None)
    csv = "".join(",".join(str(int(v)) for v in row) + f",{label}\n" for row, label in zip(data.x, data.y))
    name = f"digits-csv-{uuid.uuid4().hex[:4]}"
    with stack.api() as client:
        uploaded = client.post("/api/v1/datasets", params={"dataset_name": name},
                               files={"file": ("digits.csv", io.BytesIO(csv.encode()), "text/csv")})
        assert uploaded.status_code == 200, uploaded.text
        info = client.get(f"/api/v1/datasets/{name}").json()
        assert (info["sample_count"], info["dimensions"], info["format"]) == (1797, "64", "csv")
        session = client.post("/api/v1/training/start",
                              json={**GOOD, "dataset_name": name, "epochs": 2}).json()["session_id"]
        status = wait_state(client, session, lambda s: s["state"] in ("completed", "failed", "stopped"),
                            what="the end")
        assert status["state"] == "completed", status
        history = client.get(f"/api/v1/training/{session}/history").json()
        assert [m["epoch"] for m in history] == [1, 2] and history[-1]["val_accuracy"] > 0.5
        assert f"mlp_{name}_{session}" in {m["name"] for m in client.get("/api/v1/models").json()}


def test_traversal_names_and_oversized_uploads_are_refused_and_leave_nothing(stack, runs):
    before = area_files()
    with stack.api() as client:
        for name in ("../escape", "..", "a/b", "/etc/cron.d/x", ".hidden"):
            for kind, param in (("models", "model_name"), ("datasets", "dataset_name")):
                response = client.post(f"/api/v1/{kind}", params={param: name},
                                       files={"file": ("x.csv", io.BytesIO(b"1,2\n"), "text/csv")})
                assert response.status_code == 400, (name, response.text)
        stack.kubectl("patch", "slurmcluster", "default", "--type=merge", "-p",
                      json.dumps({"spec": {"storage": {"maxUploadMegabytes": 1}}}))
        try:
            body = b"0," * (2**20)  # 2 MiB: over the limit, streamed
            deadline = time.monotonic() + 15
            while True:  # the API's watch brings the changed SlurmCluster within moments
                response = client.post("/api/v1/models", params={"model_name": "too-big"},
                                       files={"file": ("big.pth", io.BytesIO(body), "application/octet-stream")})
                if response.status_code == 413 or time.monotonic() > deadline:
                    break
                client.delete("/api/v1/models/too-big")
                time.sleep(0.5)
            assert response.status_code == 413 and response.json() == {"detail": "File too large: the limit is 1 MiB"}
            response = client.post("/api/v1/datasets", params={"dataset_name": "too-big"},
                                   files={"file": ("big.csv", io.BytesIO(b"0" * (2**20 + 100)), "text/csv")})
            assert response.status_code == 413
        finally:
            stack.kubectl("patch", "slurmcluster", "default", "--type=json", "-p",
                          json.dumps([{"op": "remove", "path": "/spec/storage/maxUploadMegabytes"}]))
    after = area_files()
    assert after == before, after ^ before
    assert not any(PARTIAL_MARK in f for f in after)
    assert not Path("/etc/cron.d/x").exists()


def test_the_storage_through_sftp_on_a_real_sshd(stack, tmp_path_factory):
    from aifactory.devstack.sshd import LocalSshd, free_port
    from aifactory.slurm.files import SftpFiles, TooLarge
    from aifactory.slurm.ssh import SshConnection, SshTarget

    port = free_port()
    sshd = LocalSshd(port=port, base_dir=tmp_path_factory.mktemp("sshd"), name=f"sshd-files-{port}")
    sshd.up()
    area = tmp_path_factory.mktemp("area")
    try:
        ssh = SshConnection(SshTarget(host="127.0.0.1", port=port, user=sshd.user, private_key=sshd.private_key(),
                                      known_hosts=sshd.known_hosts()))
        files = SftpFiles(ssh)

        async def chunks(count: int, size: int = 1 << 20):
            for i in range(count):
                yield bytes([i % 256]) * size

        async def scenario() -> None:
            target = f"{area}/models/m.pth"
            assert await files.write(target, chunks(3)) == 3 << 20
            assert [f.name for f in await files.list(f"{area}/models")] == ["m.pth"]
            assert (await files.stat(target)).size == 3 << 20
            read = [c async for c in files.read(target)]
            assert b"".join(read) == b"".join([bytes([i]) * (1 << 20) for i in range(3)]) and len(read) >= 3
            with pytest.raises(TooLarge):
                await files.write(f"{area}/models/big.pth", chunks(3), limit=2 << 20)
            assert [f.name for f in await files.list(f"{area}/models")] == ["m.pth"]  # no partial file left
            usage = await files.disk_usage(str(area))
            assert 0 < usage.free <= usage.total
            assert await files.read_text(f"{area}/nothing.txt") is None
            assert await files.remove(target) and not await files.remove(target)
            await ssh.close()

        asyncio.run(scenario())
    finally:
        sshd.down()


def scontrol_node(stack) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "node", "--oneliner"], env={**stack.slurm.env(), "PATH": "/usr/bin"},
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def test_system_info_agrees_with_scontrol_show_node(stack):
    with stack.api() as client:
        before = scontrol_node(stack)
        info = client.get("/api/v1/system/info").json()
        after = scontrol_node(stack)
        inference = stack.make_key("default", "inference")
        test_identity.MADE_KEYS.append(inference)
    assert info["nodes"] == 1 and info["cpu_count"] == int(before["CPUTot"])
    assert info["memory_total_mb"] == int(before["RealMemory"])
    used = sorted(int(n["RealMemory"]) - int(n["FreeMem"]) for n in (before, after))
    slack = 0.05 * int(before["RealMemory"])  # FreeMem moves between reads
    assert used[0] - slack <= info["memory_used_mb"] <= used[1] + slack, (info, used)
    loads = sorted(min(100.0, 100 * float(n["CPULoad"]) / int(n["CPUTot"])) for n in (before, after))
    assert loads[0] - 30 <= info["cpu_usage_percent"] <= loads[1] + 30, (info, loads)  # a 1-minute load average
    assert before["Gres"] == "(null)" and info["gpu_available"] is False and info["gpu_usage_percent"] is None
    disk = shutil.disk_usage(STORAGE() if STORAGE().exists() else state_dir())
    assert abs(info["disk_total_gb"] - disk.total / 2**30) < 0.2 and abs(info["disk_free_gb"] - disk.free / 2**30) < 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["timestamp"])
    deadline = time.monotonic() + 15
    with stack.api(inference) as reader:  # any key may read the machine's load
        while (answer := reader.get("/api/v1/system/info")).status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.status_code == 200


def test_a_run_that_fails_says_why_in_the_trainers_words(stack, runs):
    with stack.api() as client:
        name = f"broken-{uuid.uuid4().hex[:4]}"
        assert client.post("/api/v1/datasets", params={"dataset_name": name}, files={
            "file": ("broken.csv", io.BytesIO(b"a,b,label\n1,2,0\nthree,4,1\n"), "text/csv")}).status_code == 200
        session = client.post("/api/v1/training/start",
                              json={**GOOD, "dataset_name": name, "epochs": 1}).json()["session_id"]
        status = wait_state(client, session, lambda s: s["state"] in ("completed", "failed", "stopped"), what="the end")
        assert status["state"] == "failed" and status["error_message"].startswith(f"{name}.csv is not a CSV of numbers")
        logs = client.get(f"/api/v1/training/{session}/logs").json()
        assert any(e["level"] == "ERROR" and "is not a CSV of numbers" in e["message"] for e in logs)
    conditions = {c["type"]: c for c in run_json(stack, session)["status"]["conditions"]}
    assert conditions["Stalled"]["status"] == "True" and conditions["Ready"]["status"] == "False"


def test_uploads_and_downloads_stream_through_the_api(stack, runs, tmp_path):
    """256 MiB up and down again: the API process never holds more than a few chunks of it."""
    from aifactory.devstack.stack import API

    size = 256 * 2**20
    source = tmp_path / "big.pth"
    with source.open("wb") as f:
        for i in range(size // 2**20):
            f.write(bytes([i % 251]) * 2**20)

    def rss_mb() -> float:
        for line in Path(f"/proc/{API.pid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    peak = [rss_mb()]
    base = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with stack.api() as client, source.open("rb") as f:
            client.timeout = 300
            uploaded = client.post("/api/v1/models", params={"model_name": "stream-test"},
                                   files={"file": ("big.pth", f, "application/octet-stream")})
            assert uploaded.status_code == 200, uploaded.text
            assert uploaded.json()["size_mb"] == 256.0
            received = 0
            with client.stream("GET", "/api/v1/models/stream-test") as response:
                assert response.headers["content-length"] == str(size)
                for chunk in response.iter_bytes():
                    received += len(chunk)
            assert received == size
            assert client.delete("/api/v1/models/stream-test").status_code == 200
    finally:
        done.set()
        sampler.join()
    grown = max(peak) - base
    print(f"API RSS {base:.0f} MiB before, peak {max(peak):.0f} MiB while 256 MiB went up and down")
    assert grown < 64, f"the API grew by {grown:.0f} MiB while streaming 256 MiB"


def test_a_run_on_a_cluster_behind_ssh_is_followed_through_sftp(stack, runs, tmp_path_factory):
    """An ssh-cli SlurmCluster built from real Secrets, without localLogs: the operator reads the metrics file and
    the API the history, logs and registry through the one SSH connection (SFTP and tail), not this filesystem."""
    from aifactory.devstack.sshd import LocalSshd, free_port
    from aifactory.devstack.stack import NAMESPACE, default_slurmcluster

    port = free_port()
    sshd = LocalSshd(port=port, base_dir=tmp_path_factory.mktemp("sshd"), name=f"sshd-training-{port}")
    sshd.up()
    cluster, secret, storage = f"train-ssh-{port}", f"train-login-{port}", tmp_path_factory.mktemp("ssh-storage")
    local = default_slurmcluster(stack.slurm)["spec"]
    name = f"over-ssh-{uuid.uuid4().hex[:4]}"
    try:
        stack.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/ssh-auth",
            "metadata": {"name": secret, "namespace": NAMESPACE},
            "stringData": {"ssh-privatekey": sshd.private_key()}}))
        stack.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": cluster},
            "spec": {"transport": "ssh-cli", "user": "root",
                     "ssh": {"host": "127.0.0.1", "port": port, "user": sshd.user,
                             "keySecretRef": {"name": secret}, "knownHosts": sshd.known_hosts()},
                     "cli": {"environment": stack.slurm.env()}, "partition": stack.slurm.partition,
                     "workingDirectory": local["workingDirectory"], "jobEnvironment": local["jobEnvironment"],
                     "pollIntervalSeconds": 2, "storage": {"path": str(storage)}}}))
        stack.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "aifactory.io/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"architecture": "cnn", "dataset": "digits", "cluster": cluster,
                     "hyperparameters": {"learningRate": 0.01, "batchSize": 64, "epochs": 2}}}))
        session = name.replace("-", "_")
        with stack.api() as client:
            status = wait_state(client, session, lambda s: s["state"] in ("completed", "failed", "stopped"),
                                what="the end")
            assert status["state"] == "completed" and status["current_epoch"] == 2, status
            history = client.get(f"/api/v1/training/{session}/history").json()
            assert [m["epoch"] for m in history] == [1, 2]
            logs = client.get(f"/api/v1/training/{session}/logs").json()
            assert any(e["message"].startswith("Epoch 2/2 completed") for e in logs)
        run = run_json(stack, session)
        assert run["status"]["latest"]["epoch"] == 2  # the operator read it over SFTP
        assert (storage / "default" / "models" / f"cnn_digits_{session}.pth").is_file()
        # A finished run can be deleted after its cluster: its job has nothing left to cancel.
        stack.kubectl("delete", "slurmcluster", cluster)
        stack.kubectl("delete", "trainingrun", name, "-n", "default", "--timeout=30s")
    finally:
        # The run goes before its cluster: its finalizer asks that cluster whether the job ended.
        stack.kubectl("delete", "trainingrun", name, "-n", "default", "--ignore-not-found", "--timeout=60s",
                      check=False)
        stack.kubectl("delete", "slurmcluster", cluster, "--ignore-not-found", check=False)
        stack.kubectl("delete", "secret", secret, "-n", NAMESPACE, "--ignore-not-found", check=False)
        sshd.down()
