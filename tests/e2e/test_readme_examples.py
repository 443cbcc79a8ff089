"""The README's examples run as printed against the local stack."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from aifactory.devstack.stack import API_URL

README = Path(__file__).resolve().parents[2] / "README.md"


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```bash\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no example {name}"
    return match.group(1)


@pytest.mark.skipif(shutil.which("jq") is None, reason="the seed's Bash example uses jq")
def test_seed_bash_example_runs_against_the_stack(stack):
    env = {**os.environ, "AIFACTORY_API_URL": API_URL, "KUBECONFIG": str(stack.kube.kubeconfig),
           "AIFACTORY_API_KEY": stack.api_key}
    before = set(stack.kubectl("get", "ais", "-o", "name").stdout.split())
    try:
        result = subprocess.run(["bash", "-c", example("seed-bash")], env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        # Whatever the example created and did not delete (a timeout, a failure) goes now.
        for name in set(stack.kubectl("get", "ais", "-o", "name").stdout.split()) - before:
            if name.split("/")[-1].startswith("openai-echo-"):
                stack.kubectl("delete", name, "--wait=false", check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    service_id = re.search(r"Created service: (\S+)", out).group(1)
    assert service_id.startswith("openai-echo-")
    assert "Status: running" in out
    assert '"response":"echo: Hello!"' in out
    job_id = re.search(r'"job_id":"(\d+)"', out).group(1)
    assert '"message":"Service stopped successfully"' in out
    stack.wait_gone(service_id, 60)
    assert stack.slurm_job(job_id)["job_state"] == "CANCELLED"


def test_llamactl_lifecycle_example_runs_against_the_stack(stack):
    env = {**os.environ, "AIFACTORY_API_URL": API_URL, "AIFACTORY_API_KEY": stack.api_key}
    try:
        result = subprocess.run(["bash", "-c", example("llamactl-bash")], env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        stack.kubectl("delete", "ais", "my-model", "--wait=false", "--ignore-not-found", check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"name":"my-model","status":"starting"' in out
    assert '"content":"echo: Hello!"' in out and '"model":"my-echo-model"' in out
    assert '"status":"stopping"' in out
    stack.wait_gone("my-model", 60)
