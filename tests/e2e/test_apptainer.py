"""A recipe with runtime apptainer on the real local Slurm, driven through the apptainer TEST DOUBLE.

The double (tests/doubles/apptainer) is put on the job's PATH through the service's env; it checks that the
flags are ones Apptainer documents, records them, "pulls" slowly into the SIF cache and runs the command natively.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"


def job_path(stack) -> str:
    cluster = json.loads(stack.kubectl("get", "slurmcluster", "default", "-o", "json").stdout)
    return cluster["spec"].get("jobEnvironment", {}).get("PATH", "/usr/local/bin:/usr/bin:/bin")


def test_apptainer_recipe_goes_pending_building_starting_running(stack, services, service_recipes, unique_name,
                                                                  tmp_path):
    tmp_path.chmod(0o755)
    name = unique_name("appt")
    image = f"docker://example.invalid/aifactory-e2e/openai-echo:{name}"  # a fake reference: only the double pulls it
    service_recipes(name, category="e2e", runtime="apptainer", image=image,
                    command=["python3", "-m", "aifactory.servers.openai_test_server", "--host", "{host}",
                             "--port", "{port}"],
                    healthPath="/health", startupGraceSeconds=120, openaiApi=True,
                    resources={"cpu": 1, "memory": "256M", "timeLimit": 10, "nodes": 1})
    assert stack.recipe_status(name) == {"accepted": True, "path": f"e2e/{name}",
                                     "message": f"Recipe e2e/{name} is in the catalog"}
    record = tmp_path / "apptainer.calls"
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker}) `touch {marker}` '; touch {marker} #"
    env = {
        # The service's PATH replaces the cluster's for the job: the double comes first.
        "PATH": f"{DOUBLES}:{job_path(stack)}",
        "AIFACTORY_TEST_APPTAINER_RECORD": str(record),
        "AIFACTORY_TEST_APPTAINER_PULL_SECONDS": "6",
        "AIFACTORY_SIF_CACHE": str(tmp_path / "sif"),
        "AIFACTORY_MODEL_CACHE": str(tmp_path / "models"),
        "AIFACTORY_WORKSPACE": str(tmp_path / "workspace"),
        "OPENAI_TEST_STARTUP_DELAY": "4",
        "OPENAI_TEST_MODEL": hostile,
    }
    service = services(name, f"e2e/{name}", env=env)
    seen = stack.phases_until(service, "running", timeout=120)
    # A busy machine may show the job running before its script says "building": starting comes first then.
    assert [p for i, p in enumerate(seen) if not (p == "starting" and i < seen.index("building"))] == [
        "pending", "building", "starting", "running"], seen

    status = stack.get(service)["status"]
    models = httpx.get(f"{status['endpoint']}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [hostile]  # reached the process byte for byte
    assert not marker.exists(), "a value was run by a shell"

    pull, run = [json.loads(line) for line in record.read_text().splitlines()]
    assert pull["subcommand"] == "pull" and pull["positionals"][1] == image
    assert pull["positionals"][0].startswith(str(tmp_path / "sif"))
    assert run["subcommand"] == "exec" and run["positionals"][0] == pull["positionals"][0].split(".partial.")[0]
    flags = [flag for flag, _ in run["flags"]]
    assert flags == ["--cleanenv", "--no-eval", "--bind", "--bind"], flags  # no --nv: no GPU asked for
    assert run["positionals"][1:4] == ["python3", "-m", "aifactory.servers.openai_test_server"]
    assert "APPTAINERENV_OPENAI_TEST_MODEL" in run["injected"] and "APPTAINERENV_PATH" not in run["injected"]


def test_an_image_that_cannot_be_pulled_reads_image_pull_failed(stack, services, service_recipes, unique_name,
                                                               tmp_path):
    tmp_path.chmod(0o755)
    name = unique_name("appt-nopull")
    service_recipes(name, category="e2e", runtime="apptainer", image=f"docker://example.invalid/nope:{name}",
                    command=["true"], startupGraceSeconds=120, resources={"cpu": 1, "memory": "256M", "timeLimit": 10})
    assert stack.recipe_status(name)["accepted"]
    registry_words = "manifest unknown: manifest unknown"
    service = services(name, f"e2e/{name}", env={
        "PATH": f"{DOUBLES}:{job_path(stack)}", "AIFACTORY_SIF_CACHE": str(tmp_path / "sif"),
        "AIFACTORY_TEST_APPTAINER_PULL_FAILS": registry_words})
    status = stack.wait_for(service, lambda o: o.get("status", {}).get("phase") == "failed", 90,
                            what="failed")["status"]
    failure = status["lastFailure"]
    assert failure["reason"] == "ImagePullFailed", failure
    assert failure["message"].startswith("aifactory: could not pull the image")
    assert registry_words in failure["logTail"]  # the registry's own words, as the pull printed them
