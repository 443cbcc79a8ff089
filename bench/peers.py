"""The outside programs B5 drives: Debian's wrk (the load generator) and LiteLLM's proxy (the peer).

LiteLLM lives in its own virtual environment (build/litellm-venv, made by `make bench`): its pins would
downgrade packages the project's environment relies on. It runs offline: local model cost map, no telemetry,
no database, one worker, a master key made for this run.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.context import REPO
from bench.stack import stop_process
from bench.stats import parse_wrk_result

LITELLM_VENV = REPO / "build" / "litellm-venv"
WRK_SCRIPT = Path(__file__).resolve().parent / "post.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wrk(url: str, body: dict, *, connections: int, seconds: float, auth: str | None = None) -> dict:
    """One wrk run (one thread): its BENCH_RESULT plus the share of a core wrk itself used."""
    env = {**os.environ, "BENCH_BODY": json.dumps(body), "BENCH_AUTH": auth or ""}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                          "-s", str(WRK_SCRIPT), url], env=env, capture_output=True, text=True,
                         timeout=seconds + 60, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_wrk_result(out.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.update({"connections": connections, "wrk_cpu_share": cpu / wall,
                   "throughput_rps": result["requests"] / (result["duration_us"] / 1e6)})
    return result


class LiteLLMProxy:
    """LiteLLM's proxy on a loopback port, in front of one OpenAI-compatible upstream."""

    def __init__(self, upstream_v1: str, model: str):
        self.upstream_v1, self.model = upstream_v1, model
        self.port = free_port()
        self.key = "sk-" + secrets.token_hex(16)  # only this run's proxy knows it; never printed
        self.dir = Path(tempfile.mkdtemp(prefix="aifactory-bench-litellm-"))
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str | None:
        if not (LITELLM_VENV / "bin" / "litellm").exists():
            return (f"LiteLLM is not installed in {LITELLM_VENV.relative_to(REPO)} "
                    "(`make bench` makes it with pip install 'litellm[proxy]')")
        return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def version(self) -> str:
        out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60, check=False)
        return out.stdout.strip() or "unknown"

    def start(self, timeout: float = 120.0) -> None:
        config = self.dir / "config.yaml"
        # JSON is YAML: no YAML writer needed for the config.
        config.write_text(json.dumps({
            "model_list": [{"model_name": self.model, "litellm_params": {
                "model": f"openai/{self.model}", "api_base": self.upstream_v1, "api_key": "none"}}],
            "litellm_settings": {"telemetry": False, "success_callback": [], "failure_callback": [],
                                 "callbacks": []},
        }, indent=1))
        env = {"PATH": f"{LITELLM_VENV / 'bin'}:/usr/bin:/bin", "HOME": str(self.dir),
               "LITELLM_MASTER_KEY": self.key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_OFFLINE_MODE": "true", "LITELLM_TELEMETRY": "False", "NO_PROXY": "*",
               "PYTHONUNBUFFERED": "1"}
        log = (self.dir / "litellm.log").open("wb")
        self.proc = subprocess.Popen(
            [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
             "--port", str(self.port), "--num_workers", "1"],
            env=env, cwd=self.dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LiteLLM's proxy exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"LiteLLM's proxy did not answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        path = self.dir / "litellm.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]).replace(self.key, "***")

    def _children(self) -> list[int]:
        assert self.proc is not None
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return out

    def stop(self) -> None:
        """Stop exactly the proxy's pid and the worker processes it started itself."""
        if self.proc is not None and self.proc.poll() is None:
            children = self._children()
            stop_process(self.proc.pid)
            self.proc.wait(10)
            for pid in children:
                stop_process(pid, timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)
