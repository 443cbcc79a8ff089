"""The training verbs, once, below every face: start and stop a training run, cancel a queued one, read its
metrics history and its log. Each verb takes the caller and applies tenancy here (another tenant's run is 404).

A run is a TrainingRun resource; the operator admits it within its tenant's limit, runs it as a Slurm job and
writes its state. Metrics and logs are read from the job's files through the Slurm bridge.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from aifactory.api.errors import Conflict, NotFound
from aifactory.api.identity.principal import Principal
from aifactory.models import API_VERSION, EpochMetrics, Hyperparameters, TrainingRunSpec, TrainingState
from aifactory.slurm.errors import SlurmError
from aifactory.slurm.jobs import SlurmJob
from aifactory.training import (
    REQUESTED_AT, RUN_NAME_PREFIX, LogEntry, known_architecture, log_entries, metrics_path, parse_metrics,
    run_name, session_id,
)

MANAGED_BY = "aifactory-api"
NAME_ATTEMPTS = 3
MAX_LOG_ENTRIES = 10_000


def state_of(obj: dict) -> TrainingState:
    """The run's state; a run the operator has not looked at yet is queued."""
    try:
        return TrainingState((obj.get("status") or {}).get("state") or "queued")
    except ValueError:
        return TrainingState.queued


def is_queued(obj: dict) -> bool:
    return state_of(obj) is TrainingState.queued and not (obj.get("spec") or {}).get("stop")


@dataclass(frozen=True)
class SystemLoad:
    """What the training cluster's nodes carry now (Slurm's view) and the room left on its storage."""

    nodes: int
    cpus: int
    cpus_allocated: int
    cpu_load: float | None  # the sum of the nodes' load averages; None when Slurm reports none
    memory_mb: int
    memory_free_mb: int | None  # what the nodes' OS reports free; None when Slurm reports none
    memory_allocated_mb: int
    gpus: int
    gpus_used: int
    gpu_memory_mb: int | None  # from the SlurmCluster's gpuTypes; None when a GPU's memory is not known
    gpu_memory_used_mb: int | None
    disk_total: int | None
    disk_free: int | None
    read_at: float | None


class TrainingVerbs:
    def __init__(self, state) -> None:
        self.state = state

    @property
    def store(self):
        return self.state.store

    # ---- read -----------------------------------------------------------------------------------------------

    def visible(self, caller: Principal) -> list[dict]:
        """The caller's tenant's runs (an admin's: every tenant's), oldest first."""
        return self.store.list_trainings(None if caller.is_admin else caller.tenant)

    def queue(self, caller: Principal) -> list[dict]:
        """The runs waiting for a job to start: held back by the tenant's limit, or in Slurm's queue."""
        return [obj for obj in self.visible(caller) if is_queued(obj)]

    def get(self, caller: Principal, session: str) -> dict:
        name = run_name(session)
        found = [o for o in self.visible(caller) if name and o["metadata"]["name"] == name]
        # An admin's own tenant first when the name is in several.
        found.sort(key=lambda o: o["metadata"].get("namespace") != caller.tenant)
        if not found:
            raise NotFound(f"Session '{session}' not found")
        return found[0]

    # ---- write ----------------------------------------------------------------------------------------------

    async def start(self, caller: Principal, architecture: str, dataset: str,
                    hyperparameters: Hyperparameters) -> dict:
        """A new TrainingRun in the caller's tenant, named sess-<12 hex> (session id sess_<12 hex>)."""
        if not known_architecture(architecture):
            raise NotFound(f"Architecture '{architecture}' not found")
        if not await self.state.registries.dataset_known(caller, caller.tenant, dataset):
            raise NotFound(f"Dataset '{dataset}' not found")
        spec = TrainingRunSpec(architecture=architecture, dataset=dataset, hyperparameters=hyperparameters,
                               cluster=self.state.settings.training_cluster)
        for attempt in range(NAME_ATTEMPTS):
            manifest = {"apiVersion": API_VERSION, "kind": "TrainingRun",
                        "metadata": {"name": f"{RUN_NAME_PREFIX}{secrets.token_hex(6)}", "namespace": caller.tenant,
                                     "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
                                     "annotations": {REQUESTED_AT: f"{time.time():.6f}"}},
                        "spec": spec.wire()}
            try:
                return await self.store.create("trainingruns", manifest)
            except ApiException as exc:
                if exc.status != 409 or attempt + 1 == NAME_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def stop(self, caller: Principal, obj: dict) -> dict:
        """Stop a queued or running run: the operator cancels its job; it then reads stopped."""
        self._check_visible(caller, obj)
        state = state_of(obj)
        if state.finished:
            raise Conflict(f"Session '{session_id(obj['metadata']['name'])}' is not active: it is {state.value}")
        return await self._request_stop(obj)

    async def cancel_queued(self, caller: Principal, obj: dict) -> dict:
        """Take a run out of the queue; only while it is queued (a running one is stopped with `stop`)."""
        self._check_visible(caller, obj)
        session = session_id(obj["metadata"]["name"])
        if not is_queued(obj):
            state = state_of(obj)
            why = ("it is being stopped" if (obj.get("spec") or {}).get("stop") and not state.finished
                   else f"it is {state.value}")
            hint = (f"; stop it with POST /api/v1/training/{session}/stop" if state is TrainingState.running
                    else "")
            raise Conflict(f"Session '{session}' is not queued: {why}{hint}")
        return await self._request_stop(obj)

    async def _request_stop(self, obj: dict) -> dict:
        try:
            return await self.store.patch("trainingruns", obj, {"spec": {"stop": True}})
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"Session '{session_id(obj['metadata']['name'])}' not found") from None
            raise

    def _check_visible(self, caller: Principal, obj: dict) -> None:
        if not caller.sees(obj["metadata"].get("namespace", "")):
            raise NotFound(f"Session '{session_id(obj['metadata']['name'])}' not found")

    async def system(self, caller: Principal) -> SystemLoad:
        """The training cluster's nodes (one cached read for all callers) and its storage area's disk."""
        views = await self.state.nodes.of_cluster(self.state.settings.training_cluster)
        nodes = [v.node for v in views]
        devices = [d for v in views for d in v.devices]
        loads = [n.cpu_load for n in nodes if n.cpu_load is not None]
        free = [n.memory_free_mb for n in nodes if n.memory_free_mb is not None]
        known_memory = devices and all(d.memory_mb is not None for d in devices)
        try:
            disk = await self.state.registries.disk(caller)
        except Exception:  # noqa: BLE001  (no storage configured or reachable: the nodes still answer)
            disk = None
        return SystemLoad(
            nodes=len(nodes), cpus=sum(n.cpus for n in nodes), cpus_allocated=sum(n.cpus_allocated for n in nodes),
            cpu_load=sum(loads) if loads else None, memory_mb=sum(n.memory_mb for n in nodes),
            memory_free_mb=sum(free) if len(free) == len(nodes) and nodes else None,
            memory_allocated_mb=sum(n.memory_allocated_mb for n in nodes),
            gpus=len(devices), gpus_used=sum(d.in_use for d in devices),
            gpu_memory_mb=sum(d.memory_mb for d in devices) if known_memory else None,
            gpu_memory_used_mb=sum(d.memory_mb for d in devices if d.in_use) if known_memory else None,
            disk_total=disk.total if disk else None, disk_free=disk.free if disk else None,
            read_at=views[0].read_at if views else None)

    # ---- the job's files ------------------------------------------------------------------------------------

    async def history(self, caller: Principal, obj: dict) -> list[EpochMetrics]:
        """Every finished epoch's metrics, from the job's metrics file (read through the Slurm bridge)."""
        self._check_visible(caller, obj)
        job_id = (obj.get("status") or {}).get("jobId")
        if not job_id:
            return []
        cluster = await self.state.cluster((obj.get("spec") or {}).get("cluster") or "default")
        text = await cluster.bridge.files.read_text(metrics_path(cluster.spec.working_directory, job_id))
        return parse_metrics(text)

    async def logs(self, caller: Principal, obj: dict, limit: int) -> list[LogEntry]:
        """The last `limit` entries of the job's output (stdout and stderr), read through the Slurm bridge."""
        self._check_visible(caller, obj)
        limit = max(1, min(int(limit), MAX_LOG_ENTRIES))
        status = obj.get("status") or {}
        job_id = status.get("jobId")
        created = obj["metadata"].get("creationTimestamp")
        if not job_id:
            why = status.get("message") or "waiting to be admitted"
            return [LogEntry(created, "INFO", f"Queued: no Slurm job yet ({why})")]
        cluster = await self.state.cluster((obj.get("spec") or {}).get("cluster") or "default")
        try:
            job = await cluster.bridge.job(job_id)
        except SlurmError:
            job = None
        job = job or SlurmJob(job_id=job_id, working_directory=cluster.spec.working_directory)
        text = await cluster.bridge.log_tail(job, limit)
        return log_entries(split_output(text), status.get("startTime") or created)[-limit:]


def split_output(text: str | None) -> list[tuple[str, str]]:
    """The (label, text) parts of a log tail: `==> stdout <==` headers when both files had output."""
    if not text:
        return []
    if not text.startswith("==> "):
        return [("stdout", text)]
    parts = []
    for block in text.split("==> ")[1:]:
        header, _, body = block.partition(" <==\n")
        parts.append((header.strip(), body))
    return parts
