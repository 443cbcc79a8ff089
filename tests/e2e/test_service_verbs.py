"""Stop without delete, start again, restart: the operator's verbs, driven the way GitOps and kubectl drive them
(spec.stopped, the lifecycle.aifactory.io/action annotation), on the real stack."""

from __future__ import annotations

import subprocess

from aifactory.lifecycle import ACTION_ANNOTATION, action_value


def phase_is(*phases):
    return lambda o: (o.get("status") or {}).get("phase") in phases


def ready(status: dict) -> dict:
    return {c["type"]: c for c in status.get("conditions", [])}["Ready"]


def test_stop_keeps_the_resource_and_cancels_the_job_then_start_and_restart_make_new_jobs(stack, services,
                                                                                          unique_name):
    name = services(unique_name("verbs"), "testing/openai-echo")
    first = stack.wait_for(name, phase_is("running"), 120, what="running")["status"]

    # Stop: a spec field GitOps can set. The job is cancelled, the resource stays, the phase says why.
    stack.kubectl("patch", "ais", name, "--type=merge", "-p", '{"spec": {"stopped": true}}')
    stopped = stack.wait_for(name, phase_is("stopped"), 60, what="stopped")["status"]
    assert ready(stopped)["reason"] == "Stopped" and "spec.stopped" in stopped["message"]
    assert "endpoint" not in stopped
    assert stack.slurm_job(first["jobId"])["job_state"] == "CANCELLED"
    table = stack.kubectl("get", "ais", name).stdout.splitlines()
    assert table[1].split()[1] == "stopped"

    # Start again: a new job.
    stack.kubectl("patch", "ais", name, "--type=merge", "-p", '{"spec": {"stopped": false}}')
    again = stack.wait_for(name, lambda o: phase_is("running")(o) and o["status"]["jobId"] != first["jobId"],
                           120, what="running with a new job")["status"]

    # Restart: a new job for the same service, asked through the annotation (what the API's verbs write).
    stack.kubectl("annotate", "--overwrite", "ais", name, f"{ACTION_ANNOTATION}={action_value('restart')}")
    third = stack.wait_for(name, lambda o: phase_is("running")(o) and o["status"]["jobId"] != again["jobId"],
                           120, what="running with a third job")["status"]
    assert stack.slurm_job(again["jobId"])["job_state"] == "CANCELLED"
    assert stack.slurm_job(third["jobId"])["job_state"] == "RUNNING"
    events = stack.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o",
                           "jsonpath={.items[*].reason}").stdout.split()
    assert {"Stopped", "Restarted"} <= set(events), events

    # Changing only when it runs (idle timeout, on demand) starts no new job.
    stack.kubectl("patch", "ais", name, "--type=merge", "-p",
                  '{"spec": {"onDemand": true, "idleTimeoutMinutes": 30}}')
    subprocess.run(["sleep", "3"], check=True)
    assert stack.get(name)["status"]["jobId"] == third["jobId"]


def test_a_service_created_stopped_has_no_job(stack, services, unique_name):
    name = services(unique_name("resting"), "testing/openai-echo", stopped=True, onDemand=True)
    status = stack.wait_for(name, phase_is("stopped"), 30, what="stopped")["status"]
    assert "jobId" not in status

