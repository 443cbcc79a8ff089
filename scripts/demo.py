"""`make demo` after `aifactory dev up`: deploy the example embeddings service, wait for it visibly, show how to use it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aifactory.devstack import stack as devstack
from aifactory.devstack.kube import KubeControlPlane
from aifactory.models import Phase

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embeddings-minilm.yaml"
NAME = "demo-embeddings"
TIMEOUT = 600


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], check=check, capture_output=True,
                          text=True)


def ended_before(service: dict | None) -> str | None:
    """Why the demo service left by an earlier run must go before this one (its job ended, for instance
    cancelled when the stack went down: applying the same manifest would change nothing), or None."""
    status = (service or {}).get("status") or {}
    try:
        finished = Phase(status.get("phase")).finished
    except ValueError:
        return None
    return f"{status['phase']}: {status.get('message') or 'no message'}" if finished else None


def clear_ended(kubeconfig: Path) -> None:
    found = kubectl(kubeconfig, "get", "aiservice", NAME, "-o", "json", check=False)
    why = ended_before(json.loads(found.stdout) if found.returncode == 0 else None)
    if why is not None:
        print(f"[demo] {NAME} from an earlier run has ended ({why}); deleting it to start a new one")
        kubectl(kubeconfig, "delete", "aiservice", NAME, "--timeout=120s")


def main() -> int:
    kubeconfig = KubeControlPlane().kubeconfig
    clear_ended(kubeconfig)
    print(f"[demo] kubectl apply -f {EXAMPLE.relative_to(Path.cwd()) if EXAMPLE.is_relative_to(Path.cwd()) else EXAMPLE}")
    print(kubectl(kubeconfig, "apply", "-f", str(EXAMPLE)).stdout.strip())
    started, last = time.monotonic(), None
    status: dict = {}
    while time.monotonic() - started < TIMEOUT:
        status = json.loads(kubectl(kubeconfig, "get", "aiservice", NAME, "-o", "json").stdout).get("status") or {}
        line = (status.get("phase"), status.get("jobId"), status.get("message"))
        if line != last:
            print(f"[demo] {time.monotonic() - started:5.1f}s  phase={status.get('phase', '-')}"
                  f"  job={status.get('jobId', '-')}  {status.get('message', '')}", flush=True)
            last = line
        if status.get("phase") == "running":
            break
        if status.get("phase") in ("failed", "cancelled", "completed"):
            print(f"[demo] the service ended: {status.get('message')}", file=sys.stderr)
            return 1
        time.sleep(1)
    else:
        print(f"[demo] not running after {TIMEOUT}s; see `kubectl describe ais {NAME}`", file=sys.stderr)
        return 1

    # The demo's model through the one OpenAI endpoint: by its name, with the key, as any OpenAI client calls it.
    call = {"model": NAME, "input": "Hello from aifactory"}
    print("[demo] through the OpenAI endpoint, by model name:")
    print(f"  curl -s $AIFACTORY_API_URL/v1/embeddings -H \"Authorization: Bearer $AIFACTORY_API_KEY\" "
          f"-H 'Content-Type: application/json' -d '{json.dumps(call)}'")
    response = httpx.post(f"{devstack.API_URL}/v1/embeddings", json=call, timeout=120, trust_env=False,
                          headers={"Authorization": f"Bearer {devstack.admin_key()}"})
    if response.status_code != 200:
        print(f"[demo] the OpenAI endpoint answered {response.status_code}: {response.text[:500]}", file=sys.stderr)
        return 1
    answer = response.json()
    dims = len(answer["data"][0]["embedding"])
    print(f"[demo] the model answered: a {dims}-dimensional embedding ({answer['usage']['prompt_tokens']} prompt "
          f"tokens)\n")
    print("Your embeddings service is running. Try it:\n")
    print('  eval "$(python3 -m aifactory dev env)"   # KUBECONFIG, AIFACTORY_API_URL and an admin AIFACTORY_API_KEY')
    print("  kubectl get ais")
    print('  curl -s "$AIFACTORY_API_URL/v1/models" -H "Authorization: Bearer $AIFACTORY_API_KEY"')
    print(f"  curl -s \"$AIFACTORY_API_URL/v1/embeddings\" -H \"Authorization: Bearer $AIFACTORY_API_KEY\" "
          f"-H 'Content-Type: application/json' -d '{json.dumps(call)}'")
    print('  curl -s "$AIFACTORY_API_URL/api/v1/services" -H "Authorization: Bearer $AIFACTORY_API_KEY"')
    print(f"\nThe web console: open {devstack.API_URL}/ui and sign in with the API key that")
    print("  python3 -m aifactory dev env | grep AIFACTORY_API_KEY")
    print("prints (the part after `=`): services with their Slurm state and logs, nodes, API keys.")
    print(f"\n  kubectl delete ais {NAME}     # cancels the Slurm job")
    print("  python3 -m aifactory dev down  # stops the whole local stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
