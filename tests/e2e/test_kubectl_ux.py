"""What a kubectl user sees, on the real local kube-apiserver with the generated CRDs and the running operator."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_kubectl_explain_documents_the_fields_from_the_models(stack):
    out = stack.kubectl("explain", "aiservice.spec.resources").stdout
    assert "Overrides of the recipe's resources." in out
    assert "CPUs per task (Slurm cpus_per_task)." in out
    assert 'Memory per node, e.g. "32G" or "512M" (Slurm --mem).' in out
    status = stack.kubectl("explain", "aiservice.status.phase").stdout
    assert "pending, building, starting, running, completed, failed or cancelled." in status


def test_get_wide_shows_the_extra_columns_and_describe_shows_the_operators_events(stack, services, unique_name):
    name = services(unique_name("ux"), "testing/openai-echo")
    stack.kubectl("wait", "--for=condition=Ready", f"ais/{name}", "--timeout=120s", timeout=150)
    status = stack.get(name)["status"]

    table = stack.kubectl("get", "ais", name, "-o", "wide").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "RECIPE", "JOB", "NODE", "ENDPOINT", "AGE", "CLUSTER", "SLURM",
                                "PENDING-REASON", "EXPECTED-START", "MESSAGE"]
    row = table[1].split()  # a running service has no pending reason or expected start: blank cells
    assert row[:6] == [name, "running", "testing/openai-echo", status["jobId"], status["node"], status["endpoint"]]
    assert row[7:9] == ["default", "RUNNING"]

    described = stack.kubectl("describe", "ais", name).stdout
    events = described[described.index("Events:"):]
    assert "Submitted" in events and f"Submitted Slurm job {status['jobId']}" in events
    assert "Running" in events


def test_every_example_is_accepted_by_the_real_apiserver(stack):
    files = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
    args = [arg for path in files for arg in ("-f", str(path))]
    out = stack.kubectl("apply", "--dry-run=server", "-n", "default", *args).stdout
    assert out.count("(server dry run)") == len(files), out
