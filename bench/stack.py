"""The benchmarks' view of the running local stack: Kubernetes (AIServices), slurmrestd (bare), the operator.

Everything the benchmarks create carries the label `aifactory.io/bench=<run id>`, so cleaning up touches only it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.rest import ApiException

from aifactory.models import GROUP, VERSION
from bench.report import Benchmark
from bench.stats import cpu_ticks, start_ticks, steal_share, steal_ticks, vm_rss_kib

LABEL = "aifactory.io/bench"
SLURM_API = "v0.0.38"  # the local stack's slurmrestd (22.05); the bare client speaks it as any client would
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(line: str) -> None:
    print(f"[bench] {line}", flush=True)


@dataclass
class StackAccess:
    """What `aifactory dev env` prints: where the parts listen and a slurmrestd token."""

    kubeconfig: str
    slurm_url: str
    api_url: str
    token: str = field(repr=False)  # a slurmrestd JWT: never printed
    slurm_env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)  # the stack's admin key: never printed

    @classmethod
    def from_dev_env(cls) -> StackAccess:
        out = subprocess.run([sys.executable, "-m", "aifactory", "dev", "env"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        values = {}
        for line in out.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                values[key] = value
        known = {"KUBECONFIG", "SLURMRESTD_URL", "AIFACTORY_API_URL", "SLURM_JWT", "AIFACTORY_API_KEY"}
        return cls(kubeconfig=values["KUBECONFIG"], slurm_url=values["SLURMRESTD_URL"],
                   api_url=values.get("AIFACTORY_API_URL", "http://127.0.0.1:8001"), token=values["SLURM_JWT"],
                   slurm_env={k: v for k, v in values.items() if k not in known},
                   api_key=values.get("AIFACTORY_API_KEY"))


class BareSlurm:
    """slurmrestd used directly, as a bare client would: the baseline of B1 and the source of job comments."""

    def __init__(self, access: StackAccess, url: str | None = None):
        self.access = access
        self.http = httpx.Client(base_url=url or access.slurm_url, timeout=30, trust_env=False,
                                 headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": access.token})

    def submit(self, job: dict, script: str) -> str:
        answer = self.http.post(f"/slurm/{SLURM_API}/job/submit", json={"job": job, "script": script})
        body = answer.json()
        if answer.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"slurmrestd refused the job ({answer.status_code}): {body.get('errors')}")
        return str(body["job_id"])

    def job(self, job_id: str) -> dict | None:
        answer = self.http.get(f"/slurm/{SLURM_API}/job/{job_id}")
        jobs = answer.json().get("jobs") or [] if answer.status_code == 200 else []
        return jobs[0] if jobs else None

    def cancel(self, job_id: str) -> None:
        self.http.delete(f"/slurm/{SLURM_API}/job/{job_id}")

    def node_address(self, node: str) -> str:
        nodes = self.http.get(f"/slurm/{SLURM_API}/node/{node}").json().get("nodes") or []
        return (nodes[0].get("address") or node) if nodes else node

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False,
                              env={**os.environ, **self.access.slurm_env})

    def close(self) -> None:
        self.http.close()


class Kube:
    """AIServices and SlurmClusters through the Kubernetes API (the Python client, like kubectl)."""

    def __init__(self, access: StackAccess, run_id: str):
        self.run_id = run_id
        self.api_client = k8s_config.new_client_from_config(config_file=access.kubeconfig)
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self.selector = f"{LABEL}={run_id}"

    def create_service(self, namespace: str, name: str, spec: dict) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AIService",
                "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: self.run_id}}, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "aiservices", body)

    def delete_service(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "aiservices", name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_all_services(self, namespace: str) -> None:
        self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, "aiservices",
                                                               label_selector=self.selector)

    def services(self, namespace: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "aiservices",
                                                         label_selector=self.selector)["items"]

    def cluster(self, name: str) -> dict | None:
        try:
            return self.custom.get_cluster_custom_object(GROUP, VERSION, "slurmclusters", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_cluster(self, name: str, spec: dict) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SlurmCluster",
                "metadata": {"name": name, "labels": {LABEL: self.run_id}}, "spec": spec}
        self.custom.create_cluster_custom_object(GROUP, VERSION, "slurmclusters", body)

    def delete_cluster(self, name: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "slurmclusters", name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def close(self) -> None:
        self.api_client.close()


@dataclass
class Seen:
    """What the watch saw of one AIService, with the monotonic times of the first sightings."""

    status: dict = field(default_factory=dict)
    job_id_at: float | None = None
    phase_at: dict[str, float] = field(default_factory=dict)
    deleted_at: float | None = None


class ServiceWatch:
    """A watch on this run's AIServices in one namespace, in a thread; records when each status field appeared."""

    def __init__(self, kube: Kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self.seen: dict[str, Seen] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiservice-watch", daemon=True)
        self._synced = threading.Event()
        self.error: str | None = None

    def _apply(self, kind: str, obj: dict, now: float) -> None:
        name = obj["metadata"]["name"]
        with self._changed:
            entry = self.seen.setdefault(name, Seen())
            if kind == "DELETED":
                entry.deleted_at = now
            else:
                entry.deleted_at = None
                status = obj.get("status") or {}
                entry.status = status
                if status.get("jobId") and entry.job_id_at is None:
                    entry.job_id_at = now
                phase = status.get("phase")
                if phase and phase not in entry.phase_at:
                    entry.phase_at[phase] = now
            self._changed.notify_all()

    def _run(self) -> None:
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = self.kube.custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, "aiservices", label_selector=self.kube.selector)
                    now = time.monotonic()
                    for obj in listing["items"]:
                        self._apply("ADDED", obj, now)
                    version = listing["metadata"]["resourceVersion"]
                    self._synced.set()
                stream = k8s_watch.Watch().stream(
                    self.kube.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, "aiservices",
                    label_selector=self.kube.selector, resource_version=version, timeout_seconds=5,
                    allow_watch_bookmarks=True)
                for event in stream:
                    now = time.monotonic()
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(event["type"], obj, now)
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # too old: list again
                else:
                    self.error = f"watch failed: {exc.status} {exc.reason}"
                    time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001  (the watch restarts; waiters time out with the reason)
                self.error = f"watch failed: {type(exc).__name__}: {exc}"
                time.sleep(0.5)

    def start(self) -> ServiceWatch:
        self._thread.start()
        if not self._synced.wait(30):
            raise RuntimeError(f"the AIService watch did not start: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait(self, check: Callable[[dict[str, Seen]], bool], timeout: float, what: str) -> bool:
        """Wait until check(seen) holds; False on timeout (the caller reports it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    say(f"timed out after {timeout:.0f}s waiting for {what}")
                    return False
                self._changed.wait(min(left, 1.0))
        return True

    def get(self, name: str) -> Seen | None:
        with self._changed:
            return self.seen.get(name)


class Process:
    """A process read from /proc: resident memory, CPU time, start time."""

    def __init__(self, pid: int):
        self.pid = pid

    def _read(self, name: str) -> str:
        return Path(f"/proc/{self.pid}/{name}").read_text()

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def rss_mb(self, field_name: str = "VmRSS") -> float | None:
        kib = vm_rss_kib(self._read("status"), field_name)
        return kib / 1024 if kib is not None else None

    def cpu_seconds(self) -> float:
        return cpu_ticks(self._read("stat")) / CLOCK_TICKS

    def started_monotonic(self) -> float:
        """When the process started, on time.monotonic()'s clock."""
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - start_ticks(self._read("stat")) / CLOCK_TICKS
        return time.monotonic() - age

    def cpu_share(self, seconds: float) -> float:
        """Share of one core the process used over the next `seconds`."""
        before, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / (time.monotonic() - t0)


class HostSteal:
    """How much of the CPU time the host took (steal) from this machine since it was made: the benchmarks' noise."""

    def __init__(self, read: Callable[[], str] = lambda: Path("/proc/stat").read_text()):
        self._read = read
        self._before = steal_ticks(read())

    def share(self) -> float | None:
        return steal_share(self._before, steal_ticks(self._read()))

    def tell(self, *benchmarks: Benchmark) -> None:
        """A note on each benchmark with the share of CPU time stolen since this was made."""
        share = self.share()
        if share is None:
            return
        for benchmark in benchmarks:
            benchmark.raw["host_steal_share"] = round(share, 4)
            benchmark.notes.append(f"The host took {share * 100:.1f}% of this machine's CPU time (steal, from "
                                   "/proc/stat) while this was measured; the figures move with it.")


def operator_process() -> Process | None:
    from aifactory.devstack.stack import OPERATOR  # the stack's record of the operator's pid

    pid = OPERATOR.pid()
    return Process(pid) if pid and OPERATOR.running() else None


def stop_process(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM exactly this pid and wait for it to go."""
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        try:  # reap it when it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def api_answers(api_url: str) -> str | None:
    """None when the REST API answers its /health, else why not."""
    try:
        answer = httpx.get(f"{api_url}/health", timeout=3, trust_env=False)
    except httpx.HTTPError as exc:
        return f"the REST API at {api_url} does not answer ({type(exc).__name__})"
    if answer.status_code != 200:
        return f"the REST API at {api_url}/health answered {answer.status_code}"
    return None


def manifest_spec(recipe: str, **extra: Any) -> dict:
    return {"recipe": recipe, **{k: v for k, v in extra.items() if v is not None}}
