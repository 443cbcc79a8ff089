"""The Argo CD health check for AIService, run by a real Lua 5.1 (Argo CD's gopher-lua speaks 5.1) on status
samples like the ones the operator writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (the test extra) runs the Lua script")

CHART = Path(__file__).resolve().parents[2] / "helm" / "aifactory"
SCRIPT = CHART / "argocd" / "aiservice-health.lua"


def health(obj: dict) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT.read_text())
    return hs["status"], hs["message"]


def service(status: dict | None = None, generation: int = 1) -> dict:
    obj = {"apiVersion": "aifactory.io/v1alpha1", "kind": "AIService",
           "metadata": {"name": "demo", "namespace": "default", "generation": generation},
           "spec": {"recipe": "embeddings/minilm"}}
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: str, reason: str, generation: int = 1) -> dict:
    return {"type": "Ready", "status": status, "reason": reason, "message": "", "observedGeneration": generation}


def test_no_status_yet_is_progressing():
    assert health(service())[0] == "Progressing"
    assert health(service({"conditions": []}))[0] == "Progressing"


def test_running_is_healthy_and_says_where():
    status = {"phase": "running", "jobId": "42", "node": "n1", "endpoint": "http://10.0.0.5:40123",
              "observedGeneration": 1, "conditions": [ready("True", "Running")]}
    assert health(service(status)) == ("Healthy", "Running at http://10.0.0.5:40123")


def test_completed_is_healthy():
    status = {"phase": "completed", "message": "The job ended (exit code 0)", "observedGeneration": 1}
    assert health(service(status)) == ("Healthy", "The job ended (exit code 0)")


@pytest.mark.parametrize("phase", ["pending", "building", "starting"])
def test_on_the_way_is_progressing_with_the_operators_message(phase):
    status = {"phase": phase, "message": "Queued by Slurm: Resources", "observedGeneration": 1,
              "conditions": [ready("False", phase.title()), {"type": "Reconciling", "status": "True",
                                                              "reason": phase.title()}]}
    assert health(service(status)) == ("Progressing", "Queued by Slurm: Resources")


def test_a_spec_change_the_operator_has_not_seen_is_progressing_even_if_running():
    status = {"phase": "running", "endpoint": "http://n1:1", "observedGeneration": 1,
              "conditions": [ready("True", "Running")]}
    state, message = health(service(status, generation=2))
    assert state == "Progressing" and "generation 2" in message


def test_failed_is_degraded_with_slurms_words():
    status = {"phase": "failed", "message": "Slurm rejected the job: Invalid partition name specified",
              "observedGeneration": 1, "conditions": [ready("False", "SubmitRejected")]}
    assert health(service(status)) == ("Degraded", "Slurm rejected the job: Invalid partition name specified")


def test_cancelled_is_degraded_because_nothing_restarts_it():
    state, message = health(service({"phase": "cancelled", "observedGeneration": 1}))
    assert (state, message) == ("Degraded", "Service cancelled")


def test_stalled_condition_is_degraded_whatever_the_phase():
    status = {"phase": "starting", "message": "Not healthy within the recipe's start-up grace",
              "observedGeneration": 1,
              "conditions": [{"type": "Stalled", "status": "True", "reason": "StartupTimeout"}]}
    assert health(service(status))[0] == "Degraded"


def test_an_unknown_phase_is_unknown():
    assert health(service({"phase": "hibernating", "observedGeneration": 1}))[0] == "Unknown"


def test_the_argocd_configmap_example_carries_the_same_script():
    cm = yaml.safe_load((CHART / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["data"]["resource.customizations.health.aifactory.io_AIService"] == SCRIPT.read_text()
