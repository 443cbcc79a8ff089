"""AIService resources become Slurm jobs and working endpoints: real kube-apiserver, real slurmrestd, real model.

The tests that take `slurm_release` run against Slurm 22.05, 24.11 and 26.05, through SlurmClusters built from
real Secrets; the lifecycle test also through each transport (rest, ssh-tunnel, ssh-cli).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest
import yaml


def test_embeddings_service_runs_and_answers_then_delete_cancels_the_job(stack, services, unique_name):
    name = services(unique_name("emb"), "embeddings/minilm")
    seen = stack.phases_until(name, "running", timeout=240)
    assert seen[0] == "pending" and "starting" in seen, seen
    status = stack.get(name)["status"]
    assert status["jobId"] and status["node"] == stack.slurm.node_name
    assert status["endpoint"].startswith("http://127.0.0.1:")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"

    # A real request, answered by the real model.
    answer = httpx.post(f"{status['endpoint']}/v1/embeddings", json={"input": ["hello world", "bonjour"]},
                        timeout=30).json()
    assert [len(d["embedding"]) for d in answer["data"]] == [384, 384]

    # The job Slurm runs is the one the status names, and it is running.
    assert stack.slurm_job(status["jobId"])["job_state"] == "RUNNING"

    # kubectl shows the columns that matter.
    table = stack.kubectl("get", "ais", name).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "RECIPE", "JOB", "NODE", "ENDPOINT", "AGE"]
    assert table[1].split()[:5] == [name, "running", "embeddings/minilm", status["jobId"], status["node"]]
    stack.kubectl("wait", "--for=condition=Ready", f"ais/{name}", "--timeout=10s")

    # Delete cancels the Slurm job; the resource goes once Slurm confirms.
    stack.kubectl("delete", "ais", name, "--wait=false")
    stack.wait_gone(name, 60)
    assert stack.slurm_job(status["jobId"])["job_state"] == "CANCELLED"


def test_kubectl_wait_returns_when_the_service_becomes_ready(stack, services, unique_name):
    name = services(unique_name("wait"), "testing/openai-echo")
    result = stack.kubectl("wait", "--for=condition=Ready", f"ais/{name}", "--timeout=120s", timeout=150)
    assert "condition met" in result.stdout
    assert stack.get(name)["status"]["phase"] == "running"


@pytest.mark.parametrize("transport", ["rest", "ssh-tunnel", "ssh-cli"])
def test_a_service_runs_answers_and_ends_through_each_transport(stack, slurm_release, services, unique_name,
                                                               transport):
    s = slurm_release
    name = services(unique_name(f"life-{transport}"), "testing/openai-echo", cluster=s.clusters[transport])
    stack.phases_until(name, "running", timeout=120)
    status = stack.get(name)["status"]
    assert status["node"] == s.slurm.node_name and status["endpoint"].startswith("http://127.0.0.1:")
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["status"] == "True"
    # A real request, answered by the service the job started (inside the release's chroot for 24.11 and 26.05).
    answer = httpx.post(f"{status['endpoint']}/v1/chat/completions", timeout=30,
                        json={"messages": [{"role": "user", "content": "hello"}]}).json()
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    job_id = status["jobId"]
    assert s.state(job_id) == "RUNNING"  # the job slurmrestd runs is the one the status names

    if transport == "rest":
        # scancel outside aifactory: the service follows Slurm.
        s.run("scancel", job_id)
        final = stack.wait_for(name, lambda o: o["status"]["phase"] == "cancelled", 30, what="cancelled")["status"]
        assert final["slurmState"] == "CANCELLED" and "endpoint" not in final
        ready = {c["type"]: c for c in final["conditions"]}["Ready"]
        assert ready["status"] == "False" and ready["reason"] == "Cancelled"
    else:
        # Delete cancels the job through the same transport; the resource goes once Slurm confirms.
        stack.kubectl("delete", "ais", name, "--wait=false")
        stack.wait_gone(name, 60)
        assert s.state(job_id) == "CANCELLED"


def test_a_job_that_exits_non_zero_is_failed_with_its_exit_code(stack, slurm_release, services, unique_name):
    # With no usable PATH the job's command cannot be found: bash exits 127.
    name = services(unique_name("fails"), "testing/openai-echo", env={"PATH": "/nonexistent"},
                    cluster=slurm_release.clusters["rest"])
    final = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "failed", 60,
                           what="failed")["status"]
    assert final["slurmState"] == "FAILED"
    assert "exit code 127" in final["message"] and "NonZeroExitCode" in final["message"]
    stalled = {c["type"]: c for c in final["conditions"]}["Stalled"]
    assert stalled["status"] == "True"


def test_a_submit_slurm_rejects_fails_with_slurms_words(stack, slurm_release, services, unique_name):
    name = services(unique_name("badpart"), "testing/openai-echo", partition="no-such-partition",
                    cluster=slurm_release.clusters["rest"])
    final = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "failed", 30,
                           what="failed")["status"]
    assert "Invalid partition name specified" in final["message"]
    assert "jobId" not in final


def test_unknown_recipe_fails_with_a_clear_message(stack, services, unique_name):
    name = services(unique_name("norecipe"), "inference/does-not-exist")
    final = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "failed", 30,
                           what="failed")["status"]
    assert final["message"] == "Recipe 'inference/does-not-exist' not found"


def test_the_api_server_rejects_a_manifest_without_recipe(stack, unique_name):
    manifest = stack.manifest(unique_name("invalid"), "x")
    del manifest["spec"]["recipe"]
    # --validate=false: the request reaches the API server, whose CRD schema must refuse it.
    result = stack.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert "spec.recipe" in result.stderr and "Required value" in result.stderr
    assert stack.get(manifest["metadata"]["name"]) is None


def test_deleting_a_pending_service_cancels_its_queued_job(stack, slurm_release, services, unique_name):
    s = slurm_release
    cluster = s.clusters["rest"]
    # A first service takes every CPU of the one node, so Slurm keeps the second one queued.
    services(unique_name("blocker"), "testing/openai-echo", resources={"cpu": stack.slurm_cpus()}, cluster=cluster)
    hog = services(unique_name("queued"), "testing/openai-echo", cluster=cluster)
    status = stack.wait_for(hog, lambda o: o.get("status", {}).get("jobId"), 30, what="a job id")["status"]
    assert status["phase"] == "pending"
    time.sleep(3)  # a poll or two: it must stay pending, with Slurm's reason in the message
    status = stack.get(hog)["status"]
    assert status["phase"] == "pending" and status["message"].startswith("Queued by Slurm")
    assert s.state(status["jobId"]) == "PENDING"
    stack.kubectl("delete", "ais", hog, "--wait=false")
    stack.wait_gone(hog, 60)
    assert s.state(status["jobId"]) == "CANCELLED"


@pytest.mark.slurm_cases(["transport", "strategy"], [
    pytest.param("24.11", "rest", "Rollover", id="to-slurm-24.11"),
    pytest.param("24.11", "rest", "Replace", id="to-slurm-24.11-replace")])
def test_moving_a_service_to_another_cluster_cancels_its_job_on_the_old_one(stack, slurm_release, services,
                                                                            unique_name, transport, strategy):
    # The old job is cancelled where it runs (the old spec's cluster), not under the same id on the new one: before
    # the new job on a replace, after the new job is healthy and its short drain is over on a rollover.
    name = services(unique_name("move"), "testing/openai-echo", updateStrategy=strategy,
                    rollover={"drainSeconds": 5})
    old = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "running", 120,
                         what="running on the default cluster")["status"]
    cluster = slurm_release.clusters[transport]
    stack.kubectl("patch", "ais", name, "--type=merge", "-p", json.dumps({"spec": {"cluster": cluster}}))
    new = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "running"
                         and o["status"].get("node") == slurm_release.slurm.node_name
                         and not o["status"].get("draining"), 120,
                         what="running on the other cluster, the old job no longer draining")["status"]
    assert stack.slurm_job(old["jobId"])["job_state"] in ("CANCELLED", "COMPLETING")
    assert slurm_release.state(new["jobId"]) == "RUNNING"
    replaced, current = new["attempts"][-2:]
    assert (replaced["jobId"], replaced["cluster"], replaced["reason"]) == (
        old["jobId"], "default", "RolledOver" if strategy == "Rollover" else "Replaced")
    assert (current["jobId"], current["cluster"], current["startedBy"]) == (new["jobId"], cluster, "SpecChanged")


def test_a_service_whose_cluster_is_gone_can_still_be_deleted(stack, services, unique_name):
    default = json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
    cluster = unique_name("doomed")
    stack.apply({"apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": cluster},
                 "spec": default["spec"]})
    name = services(unique_name("orphan"), "testing/openai-echo", cluster=cluster)
    job_id = stack.wait_for(name, lambda o: o.get("status", {}).get("jobId"), 120, what="a job id")["status"]["jobId"]
    try:
        stack.kubectl("delete", "slurmcluster", cluster, "--timeout=60s")
        stack.kubectl("delete", "ais", name, "--wait=false")
        stack.wait_gone(name, 30)  # not held forever by a finalizer that waits for a cluster that will not come
        events = stack.kubectl("get", "events", "-n", "default", "--field-selector",
                               f"involvedObject.name={name}", "-o", "json").stdout
        assert f"job {job_id}" in events and cluster in events  # says which job was left running, and where
    finally:
        subprocess.run(["scancel", job_id], env={**os.environ, **stack.slurm.env()}, check=False)


def test_a_readiness_timeout_says_why_in_a_bounded_message(stack, services, service_recipes, unique_name):
    # A service that never answers its health check and prints one endless line: the status message carries the
    # end of the log, not all of it.
    line = "import sys, time; sys.stdout.write('x' * 300000 + chr(10)); sys.stdout.flush(); time.sleep(600)"
    recipe = service_recipes(unique_name("mute"), category="e2e", runtime="native", command=["python3", "-c", line],
                             healthPath="/health", startupGraceSeconds=3,
                             resources={"cpu": 1, "memory": "256M", "timeLimit": 5, "nodes": 1})
    name = services(unique_name("mute-svc"), f"e2e/{recipe}")
    final = stack.wait_for(name, lambda o: o.get("status", {}).get("phase") == "failed", 120, what="failed")["status"]
    assert final["message"].startswith("Not healthy within the recipe's start-up grace of 3s")
    assert len(final["message"]) <= 2048
    tail = final["lastFailure"]["logTail"]
    assert "xxxxxxxx" in tail and len(tail) <= 4096


# ---- the submit at the creation event: a job submitted before kopf's finalizer is on the object ----------------

def _custom_objects(stack):
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    # The Python client, not kubectl: its calls follow each other within milliseconds.
    return k8s.CustomObjectsApi(k8s_config.new_client_from_config(config_file=str(stack.kube.kubeconfig)))


def _live_jobs(stack, uid: str) -> list[tuple[str, str]]:
    return [(str(j["job_id"]), j["job_state"]) for j in stack.slurm_jobs_tagged(uid)
            if j["job_state"] not in ("CANCELLED", "COMPLETED", "FAILED", "TIMEOUT")]


def _until_job_id(api, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = api.get_namespaced_custom_object("aifactory.io", "v1alpha1", "default", "aiservices", name)
        if (got.get("status") or {}).get("jobId"):
            return
    raise AssertionError(f"{name} got no job id within {timeout:.0f}s")


def test_services_deleted_as_soon_as_made_leave_no_job_behind(stack, unique_name):
    # The job is submitted at the creation event, before the finalizer is on the object: a service deleted within
    # milliseconds is gone before any handler could record its job. That job is cancelled at the deletion event.
    api = _custom_objects(stack)
    uids = []
    for i in range(14):
        name = unique_name("blink")
        made = api.create_namespaced_custom_object("aifactory.io", "v1alpha1", "default", "aiservices",
                                                   stack.manifest(name, "testing/openai-echo"))
        uids.append(made["metadata"]["uid"])
        if i < 4:
            time.sleep(0.005 * i)
        else:
            # As a script does once the status names the job: this delete races kopf's patch adding the
            # finalizer, and kube-apiserver may remove the object without marking it for deletion.
            _until_job_id(api, name)
        api.delete_namespaced_custom_object("aifactory.io", "v1alpha1", "default", "aiservices", name)
        stack.wait_gone(name, 60)
    time.sleep(3)
    assert any(stack.slurm_jobs_tagged(uid) for uid in uids), "no job was submitted: the test shows nothing"
    deadline = time.monotonic() + 30
    while (left := [job for uid in uids for job in _live_jobs(stack, uid)]) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"jobs of deleted services left in Slurm: {left}"


def test_a_spec_changed_right_after_creation_runs_one_job_of_the_new_spec(stack, unique_name):
    # The job submitted at the creation event was made for the first spec; the create handler may see the
    # second one already: it must not take that job over.
    api = _custom_objects(stack)
    name = unique_name("respec")
    made = api.create_namespaced_custom_object(
        "aifactory.io", "v1alpha1", "default", "aiservices",
        stack.manifest(name, "testing/openai-echo", resources={"timeLimit": 29}))
    try:
        api.patch_namespaced_custom_object("aifactory.io", "v1alpha1", "default", "aiservices", name,
                                           {"spec": {"resources": {"timeLimit": 31}}})
        uid = made["metadata"]["uid"]
        status = stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "running", 240,
                                what="running")["status"]
        deadline = time.monotonic() + 30  # a replaced job may take a moment to be cancelled
        while len(live := _live_jobs(stack, uid)) > 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert [job_id for job_id, _ in live] == [status["jobId"]], live
        assert stack.slurm_job(status["jobId"])["time_limit"] == 31
    finally:
        api.delete_namespaced_custom_object("aifactory.io", "v1alpha1", "default", "aiservices", name)
        stack.wait_gone(name, 60)
