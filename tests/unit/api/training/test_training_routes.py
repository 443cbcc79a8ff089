"""Seed 002's face over the real app and Store in memory, with a SlurmCluster whose storage and job files are a
temporary directory on this side (localLogs): validation, session ids, tenancy, stop and the queue, metrics and
logs from the job's files, the registries with streamed uploads, refused names and sizes."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from aifactory.clusters import ClusterRegistry
from aifactory.storage import PARTIAL_MARK
from tests.unit.api.memory import fresh_default_models, make_api  # noqa: F401

GOOD = {"model_architecture": "mlp", "dataset_name": "digits", "learning_rate": 0.001, "batch_size": 32, "epochs": 5}


@pytest.fixture
def api(tmp_path):
    api = make_api()
    (tmp_path / "jobs").mkdir()
    api.store.clusters.put(api.store._stamp({"metadata": {"name": "default"}, "spec": {
        "url": "http://127.0.0.1:9", "workingDirectory": str(tmp_path / "jobs"), "localLogs": True,
        "storage": {"path": str(tmp_path / "storage"), "maxUploadMegabytes": 1}}}))

    async def no_secrets(ref):
        raise AssertionError("no Secret is read here")
    api.client.app.state.aifactory._clusters = ClusterRegistry(no_secrets, with_pollers=False)
    api.tmp = tmp_path
    return api


def call(api, method, path, key=None, **kw):
    return api.client.request(method, path, headers=api.as_key(key or api.manager), **kw)


def run_of(api, session):
    return api.store.trainings.named(session.replace("_", "-"))


def set_status(api, session, **status):
    obj = run_of(api, session)
    obj.setdefault("status", {}).update(status)
    api.store.trainings.put(api.store._stamp(obj))


@pytest.mark.parametrize("change", [
    {"learning_rate": 0.00009}, {"learning_rate": 1.01}, {"batch_size": 0}, {"batch_size": 257}, {"epochs": 0},
    {"epochs": 1001}, {"optimizer": "lbfgs"}, {"loss_function": "hinge"}, {"learning_rate": "fast"},
])
def test_start_validates_as_the_seed_does(api, change):
    response = call(api, "POST", "/api/v1/training/start", json={**GOOD, **change})
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert api.store.list_trainings() == []


@pytest.mark.parametrize("missing", ["model_architecture", "dataset_name", "learning_rate", "batch_size", "epochs"])
def test_start_needs_each_required_field(api, missing):
    body = {k: v for k, v in GOOD.items() if k != missing}
    assert call(api, "POST", "/api/v1/training/start", json=body).status_code == 422


def test_unknown_architecture_or_dataset_is_404_in_the_seeds_words(api):
    response = call(api, "POST", "/api/v1/training/start", json={**GOOD, "model_architecture": "transformer9"})
    assert response.status_code == 404 and response.json() == {"detail": "Architecture 'transformer9' not found"}
    response = call(api, "POST", "/api/v1/training/start", json={**GOOD, "dataset_name": "cifar10"})
    assert response.status_code == 404 and response.json() == {"detail": "Dataset 'cifar10' not found"}
    assert api.store.list_trainings() == []


def test_start_makes_a_training_run_whose_name_is_the_session_id(api):
    response = call(api, "POST", "/api/v1/training/start",
                    json={**GOOD, "optimizer": "sgd", "loss_function": "mse", "model_architecture": "resnet50"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"sess_[0-9a-f]{12}", body["session_id"])
    assert body["status"] == "queued" and body["message"] == "Training session created and started"
    run = run_of(api, body["session_id"])
    assert run["metadata"]["namespace"] == "team-a" and run["metadata"]["name"] == body["session_id"].replace("_", "-")
    assert run["spec"] == {"architecture": "resnet50", "dataset": "digits", "hyperparameters": {
        "learningRate": 0.001, "batchSize": 32, "epochs": 5, "optimizer": "sgd", "lossFunction": "mse"},
        "recipe": "training/pytorch", "resources": {}, "cluster": "default", "stop": False}
    status = call(api, "GET", f"/api/v1/training/{body['session_id']}/status").json()
    assert status == {"session_id": body["session_id"], "state": "queued", "current_epoch": None, "total_epochs": 5,
                      "start_time": None, "end_time": None, "error_message": None}
    sessions = call(api, "GET", "/api/v1/training/sessions").json()
    assert [s["session_id"] for s in sessions] == [body["session_id"]]
    assert sessions[0]["config"] == {"model_architecture": "resnet50", "dataset_name": "digits", "learning_rate": 0.001,
                                     "batch_size": 32, "epochs": 5, "optimizer": "sgd", "loss_function": "mse"}


def test_another_tenants_session_does_not_exist(api):
    session = call(api, "POST", "/api/v1/training/start", json=GOOD).json()["session_id"]
    other = api.store.add_key("team-b", __import__("aifactory.models").models.Role.management)
    api.store.add_tenant("team-b")
    for method, path in [("GET", f"/api/v1/training/{session}/status"), ("POST", f"/api/v1/training/{session}/stop"),
                         ("DELETE", f"/api/v1/training/queue/{session}"), ("GET", f"/api/v1/training/{session}/logs")]:
        response = call(api, method, path, key=other)
        assert response.status_code == 404 and response.json() == {"detail": f"Session '{session}' not found"}
    assert call(api, "GET", "/api/v1/training/sessions", key=other).json() == []
    assert call(api, "GET", f"/api/v1/training/{session}/status", key=api.admin).status_code == 200
    assert call(api, "GET", "/api/v1/training/sess_NOPE/status").status_code == 404


def test_an_inference_key_may_not_train(api):
    assert call(api, "POST", "/api/v1/training/start", key=api.inference, json=GOOD).status_code == 403
    assert api.client.get("/api/v1/training/sessions").status_code == 401


def test_stop_and_the_queue(api):
    first = call(api, "POST", "/api/v1/training/start", json=GOOD).json()["session_id"]
    second = call(api, "POST", "/api/v1/training/start", json=GOOD).json()["session_id"]
    set_status(api, first, state="running", jobId="11", currentEpoch=2)
    set_status(api, second, state="queued", message="Waiting for a free training slot")
    queue = call(api, "GET", "/api/v1/training/queue").json()
    assert [q["session_id"] for q in queue] == [second]
    assert queue[0]["status"]["state"] == "queued" and queue[0]["status"]["current_epoch"] is None
    response = call(api, "DELETE", f"/api/v1/training/queue/{first}")
    assert response.status_code == 409
    assert response.json()["detail"] == (f"Session '{first}' is not queued: it is running; stop it with "
                                         f"POST /api/v1/training/{first}/stop")
    assert run_of(api, first)["spec"]["stop"] is False
    response = call(api, "DELETE", f"/api/v1/training/queue/{second}")
    assert response.json() == {"message": f"Queued session {second} cancelled successfully"}
    assert run_of(api, second)["spec"]["stop"] is True
    assert call(api, "GET", "/api/v1/training/queue").json() == []
    response = call(api, "POST", f"/api/v1/training/{first}/stop")
    assert response.json() == {"message": f"Training session {first} stopped successfully"}
    assert run_of(api, first)["spec"]["stop"] is True
    set_status(api, first, state="stopped")
    response = call(api, "POST", f"/api/v1/training/{first}/stop")
    assert response.status_code == 409 and response.json() == {"detail": f"Session '{first}' is not active: it is stopped"}


def test_metrics_history_and_logs_come_from_the_jobs_files(api):
    session = call(api, "POST", "/api/v1/training/start", json=GOOD).json()["session_id"]
    assert call(api, "GET", f"/api/v1/training/{session}/history").json() == []
    assert call(api, "GET", f"/api/v1/training/{session}/metrics").status_code == 404
    logs = call(api, "GET", f"/api/v1/training/{session}/logs").json()
    assert len(logs) == 1 and logs[0]["message"].startswith("Queued: no Slurm job yet")
    set_status(api, session, state="running", jobId="42", startTime="2026-01-01T00:00:05Z")
    jobs = api.tmp / "jobs"
    lines = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 10, "val_loss": 1.1 / e, "val_accuracy": 0.4 + e / 10,
              "timestamp": f"2026-01-01T00:00:0{e}Z"} for e in (1, 2)]
    (jobs / "aifactory-42.metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines) + '{"epoch": 3, "lo')
    history = call(api, "GET", f"/api/v1/training/{session}/history").json()
    assert history == [{"session_id": session, **m} for m in lines]  # the half-written line is not an epoch
    assert call(api, "GET", f"/api/v1/training/{session}/metrics").json() == {"session_id": session, **lines[1]}
    (jobs / "aifactory-42.out").write_text("aifactory: job 42 on node1\n2026-01-01T00:00:06Z INFO Starting training\n"
                                           "2026-01-01T00:00:07Z INFO Epoch 1/5 completed\n")
    (jobs / "aifactory-42.err").write_text("some warning\n")
    logs = call(api, "GET", f"/api/v1/training/{session}/logs?limit=100").json()
    assert {"session_id": session, "timestamp": "2026-01-01T00:00:07Z", "level": "INFO",
            "message": "Epoch 1/5 completed"} in logs
    assert {"session_id": session, "timestamp": "2026-01-01T00:00:05Z", "level": "ERROR",
            "message": "some warning"} in logs
    assert [e["message"] for e in call(api, "GET", f"/api/v1/training/{session}/logs?limit=1").json()] == [
        "Epoch 1/5 completed"]


def upload(api, kind, name, content: bytes, filename="file.bin", key=None):
    param = "model_name" if kind == "models" else "dataset_name"
    return call(api, "POST", f"/api/v1/{kind}", key=key, params={param: name},
                files={"file": (filename, io.BytesIO(content), "application/octet-stream")})


def area_files(api):
    root = api.tmp / "storage"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_models_upload_list_download_delete(api):
    content = bytes(range(256)) * 1000
    response = upload(api, "models", "my_model", content, "model.pth")
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Model 'my_model' uploaded successfully", "name": "my_model",
                               "size_mb": round(len(content) / 2**20, 3)}
    assert area_files(api) == ["team-a/models/my_model.pth"]
    listed = call(api, "GET", "/api/v1/models").json()
    assert [(m["name"], m["file_path"]) for m in listed] == [("my_model", "models/my_model.pth")]
    download = call(api, "GET", "/api/v1/models/my_model")
    assert download.status_code == 200 and download.content == content
    assert call(api, "GET", "/api/v1/models", key=api.admin).json() == []  # another tenant's area
    assert call(api, "GET", "/api/v1/models/my_model", key=api.admin).status_code == 404
    assert call(api, "DELETE", "/api/v1/models/my_model").json() == {"message": "Model 'my_model' deleted successfully"}
    assert call(api, "GET", "/api/v1/models/my_model").json() == {"detail": "Model 'my_model' not found"}
    assert call(api, "DELETE", "/api/v1/models/my_model").status_code == 404


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "/etc/passwd", ".hidden", "a..b", f"x{PARTIAL_MARK}1"])
def test_names_that_could_leave_the_area_are_refused_and_leave_nothing(api, name):
    for kind in ("models", "datasets"):
        response = upload(api, kind, name, b"1,2,3\n", "data.csv")
        assert response.status_code == 400, response.text
        assert "Invalid" in response.json()["detail"]
    assert area_files(api) == []


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(api):
    big = b"0" * (2 * 2**20)  # the fixture's limit is 1 MiB
    for kind in ("models", "datasets"):
        response = upload(api, kind, "big", big, "big.csv")
        assert response.status_code == 413 and response.json() == {"detail": "File too large: the limit is 1 MiB"}
    assert area_files(api) == []
    # Just over the limit, with a body the size check up front lets through: refused while streaming.
    response = upload(api, "models", "big", b"0" * (2**20 + 10))
    assert response.status_code == 413 and area_files(api) == []


def test_datasets_upload_and_details(api):
    listed = call(api, "GET", "/api/v1/datasets").json()
    assert [d["name"] for d in listed] == ["digits"]
    digits = call(api, "GET", "/api/v1/datasets/digits").json()
    assert digits["sample_count"] == 1797 and digits["dimensions"] == "8x8"
    csv = "a,b,c,label\n" + "".join(f"{i},{i + 1},{i + 2},{i % 2}\n" for i in range(50))
    response = upload(api, "datasets", "tiny", csv.encode(), "tiny.csv")
    assert response.status_code == 200, response.text
    info = call(api, "GET", "/api/v1/datasets/tiny").json()
    assert info | {"created_at": None} == {"name": "tiny", "size_mb": round(len(csv) / 2**20, 3), "sample_count": 50,
                                           "format": "csv", "dimensions": "3", "created_at": None,
                                           "file_path": "datasets/tiny.csv"}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((30, 4, 4), dtype=np.float32), y=np.arange(30) % 3)
    assert upload(api, "datasets", "images", buffer.getvalue(), "images.npz").status_code == 200
    info = call(api, "GET", "/api/v1/datasets/images").json()
    assert (info["format"], info["sample_count"], info["dimensions"]) == ("npz", 30, "4x4")
    assert [d["name"] for d in call(api, "GET", "/api/v1/datasets").json()] == ["digits", "images", "tiny"]
    assert upload(api, "datasets", "weird", b"xx", "weird.parquet").status_code == 400
    assert call(api, "GET", "/api/v1/datasets/nope").json() == {"detail": "Dataset 'nope' not found"}
    # An uploaded dataset may be trained on.
    assert call(api, "POST", "/api/v1/training/start", json={**GOOD, "dataset_name": "tiny"}).status_code == 200


def test_system_info_sums_the_nodes_as_slurm_reports_them():
    from aifactory.api.training.schemas import SystemInfo
    from aifactory.api.trainings import SystemLoad

    load = SystemLoad(nodes=2, cpus=64, cpus_allocated=16, cpu_load=16.0, memory_mb=512_000, memory_free_mb=384_000,
                      memory_allocated_mb=100_000, gpus=8, gpus_used=2, gpu_memory_mb=8 * 81920,
                      gpu_memory_used_mb=2 * 81920, disk_total=10 * 2**40, disk_free=4 * 2**40, read_at=1700000000)
    info = SystemInfo.of(load).model_dump()
    assert info | {"timestamp": None} == {
        "cpu_usage_percent": 25.0, "memory_used_mb": 128_000, "memory_total_mb": 512_000, "memory_percent": 25.0,
        "disk_free_gb": 4096.0, "disk_total_gb": 10240.0, "gpu_available": True, "gpu_usage_percent": 25.0,
        "gpu_memory_used_mb": 163840, "gpu_memory_total_mb": 655360, "timestamp": None, "nodes": 2, "cpu_count": 64,
        "cpus_allocated": 16, "memory_allocated_mb": 100_000}
    none = SystemInfo.of(SystemLoad(1, 2, 0, None, 1000, None, 0, 0, 0, None, None, None, None, None))
    assert none.gpu_available is False and none.cpu_usage_percent is None and none.memory_used_mb is None


def test_a_broken_multipart_body_is_400_and_leaves_nothing(api):
    boundary = "a222103b9b30b1f9e8be6882ecedb1d2"
    for body in (f"--{boundary}\r\n[]--{boundary}--\r\n",
                 f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\n1,2\n3,'):
        response = api.client.post("/api/v1/datasets", params={"dataset_name": "d"}, content=body.encode(),
                                   headers={**api.as_key(api.manager),
                                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 400, response.text
    assert call(api, "POST", "/api/v1/models", params={"model_name": "m"}, json={"not": "multipart"}).status_code == 400
    assert area_files(api) == []
