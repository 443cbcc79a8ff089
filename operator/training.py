"""TrainingRun handlers: admit a run within its tenant's limit, submit (or adopt) its job, follow the job from the
cluster's poller cache and its metrics file through the bridge, stop it, cancel it on delete.

One timer per unfinished run does all of it, so a run is never submitted twice; the decisions are
aifactory.training's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from aifactory.lifecycle import ServiceRef, SpecError
from aifactory.models import GROUP, VERSION, TrainingRunSpec, TrainingState
from aifactory.operator.aiservice import (
    _cancel_and_confirm, _reachable_condition, _tenant, catalog, submit_or_adopt,
)
from aifactory.operator.clusters import Cluster, ClusterNotReady, cancel_left_behind, registry, went_without_finalizer
from aifactory.operator.config import config
from aifactory.recipes import RecipeNotFound
from aifactory.slurm.errors import SlurmError, SlurmUnreachable
from aifactory.slurm.files import FilesUnavailable
from aifactory.slurm.jobs import SlurmJob
from aifactory.training import (
    REQUESTED_AT, Slot, admitted, conditions, default_model_name, job_request, last_error, metrics_path, observe,
    parse_metrics,
)

log = logging.getLogger(__name__)

RESOURCE = (GROUP, VERSION, "trainingruns")
CLAIM_SECONDS = 120.0  # a submit is counted against the tenant's limit until the index shows its job id
CANCEL_RETRY_SECONDS = 10.0

# Runs of this process that are submitting or just submitted, before the index shows their job: (ns, name) -> when.
_claims: dict[tuple[str, str], float] = {}
_cancelled: dict[str, float] = {}  # job id -> when a cancel was sent
_metrics_read: dict[str, float] = {}  # run uid -> when its metrics file was last read


@kopf.index(*RESOURCE)
def training_by_namespace(namespace: str, name: str, meta: Any, spec: Any, status: Any, **_) -> dict[str, dict]:
    # creationTimestamp counts whole seconds: the API's finer request time orders runs made within one.
    created = f"{meta.get('creationTimestamp') or ''} {(meta.get('annotations') or {}).get(REQUESTED_AT, '')}"
    return {namespace: {"name": name, "created": created, "jobId": status.get("jobId"),
                        "state": status.get("state"), "stop": bool(spec.get("stop"))}}


def _finished(state: str | None) -> bool:
    return bool(state) and TrainingState(state).finished


def _slots(index: Any, namespace: str) -> list[Slot]:
    now = time.monotonic()
    slots = []
    for entry in (index.get(namespace) if index is not None else None) or ():
        key = (namespace, entry["name"])
        done = _finished(entry.get("state"))
        if entry.get("jobId") or done or now - _claims.get(key, now) > CLAIM_SECONDS:
            _claims.pop(key, None)  # the index knows now
        holding = (bool(entry.get("jobId")) or key in _claims) and not done
        slots.append(Slot(entry["name"], entry.get("created") or "", holding,
                          waiting=not holding and not done and not entry.get("stop")))
    return slots


def _unfinished(status: Any, **_: Any) -> bool:
    return not _finished(status.get("state"))


def _write(patch: kopf.Patch, body: Any, meta: Any, status: dict, state: TrainingState, reason: str, message: str,
           cluster: Cluster | None = None, **fields: Any) -> None:
    wanted = {"state": state.value, "message": message or None, "observedGeneration": meta.get("generation"),
              **fields}
    wanted["conditions"] = conditions(state, reason, message, meta.get("generation"), status.get("conditions"),
                                      _reachable_condition(cluster))
    changed = {k: v for k, v in wanted.items() if status.get(k) != v}
    if changed:
        patch.status.update(changed)
    if status.get("state") != state.value:
        (kopf.warn if state is TrainingState.failed else kopf.info)(body, reason=reason, message=message)


@kopf.timer(*RESOURCE, interval=config.observe_interval, initial_delay=0.1, sharp=True, when=_unfinished)
async def trainingrun_observe(body: Any, spec: Any, meta: Any, status: Any, uid: str, namespace: str, name: str,
                              patch: kopf.Patch, tenant_by_namespace: kopf.Index,
                              training_by_namespace: kopf.Index, **_) -> None:
    status = dict(status)
    try:
        parsed = TrainingRunSpec.model_validate(dict(spec))
    except ValidationError as exc:
        message = f"invalid spec: {exc}"
        return _write(patch, body, meta, status, TrainingState.failed, "InvalidSpec", message, errorMessage=message)
    if status.get("jobId"):
        return await _follow(body, parsed, meta, status, uid, patch)
    if parsed.stop:
        return _write(patch, body, meta, status, TrainingState.stopped, "Stopped", "Stopped before it started",
                      endTime=_now())
    await _submit(body, parsed, meta, status, uid, namespace, name, patch, tenant_by_namespace,
                  training_by_namespace)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def _submit(body: Any, spec: TrainingRunSpec, meta: Any, status: dict, uid: str, namespace: str, name: str,
                  patch: kopf.Patch, tenants: Any, runs: Any) -> None:
    total = spec.hyperparameters.epochs
    common = {"totalEpochs": total, "model": default_model_name(spec, name)}
    try:
        tenant = _tenant(tenants, namespace)
    except ValidationError as exc:
        message = f"the namespace's Tenant is invalid: {exc}"
        return _write(patch, body, meta, status, TrainingState.failed, "InvalidTenant", message, errorMessage=message)
    try:
        cluster = registry.get(spec.cluster)
    except ClusterNotReady as exc:
        return _write(patch, body, meta, status, TrainingState.queued, "ClusterNotReady", str(exc), **common)
    try:
        recipe = catalog.get(spec.recipe)
        request = job_request(ServiceRef(namespace, name, uid), spec, recipe, cluster.spec, tenant)
    except (RecipeNotFound, SpecError) as exc:
        reason = "RecipeNotFound" if isinstance(exc, RecipeNotFound) else "InvalidSpec"
        return _write(patch, body, meta, status, TrainingState.failed, reason, str(exc), errorMessage=str(exc),
                      endTime=_now(), **common)
    limit = tenant.quotas.max_training_sessions if tenant else None
    ok, why = admitted(name, _slots(runs, namespace), limit)
    if not ok:
        return _write(patch, body, meta, status, TrainingState.queued, "TenantLimit", why, cluster, **common)
    key = (namespace, name)
    _claims[key] = time.monotonic()  # before the first await: no other run of the tenant can take this slot
    try:
        job_id, verb = await submit_or_adopt(cluster, uid, request)
    except SlurmUnreachable as exc:
        _claims.pop(key, None)
        return _write(patch, body, meta, status, TrainingState.queued, "SlurmUnreachable", str(exc), **common)
    except SlurmError as exc:
        _claims.pop(key, None)
        message = f"Slurm rejected the job: {exc}"
        return _write(patch, body, meta, status, TrainingState.failed, "SubmitRejected", message,
                      errorMessage=message, endTime=_now(), **common)
    cluster.poller.wake()
    _write(patch, body, meta, status, TrainingState.queued, verb, f"{verb} Slurm job {job_id} on cluster "
           f"{spec.cluster}", cluster, jobId=job_id, slurmState="PENDING", **common)


async def _follow(body: Any, spec: TrainingRunSpec, meta: Any, status: dict, uid: str, patch: kopf.Patch) -> None:
    job_id = status["jobId"]
    try:
        cluster = registry.get(spec.cluster)
    except ClusterNotReady:
        return
    job = cluster.poller.job(job_id)
    if job is None and cluster.poller.reachable:
        # Not in the cluster's job list (forgotten while the operator was down): ask once for this job.
        try:
            job = await cluster.bridge.job(job_id)
        except SlurmError:
            return
        if job is None:
            message = f"Slurm no longer knows job {job_id}; its end state is unknown"
            return _write(patch, body, meta, status, TrainingState.failed, "JobLost", message, cluster,
                          errorMessage=message, endTime=_now())
        cluster.poller.remember(job)
    if job is None:
        return
    if spec.stop and not job.finished:
        await _cancel(cluster, job_id)
    fields: dict[str, Any] = {"jobId": job_id, "totalEpochs": spec.hyperparameters.epochs}
    if job.state == "RUNNING" or job.finished:
        latest = await _latest_metrics(cluster, job, uid, force=job.finished)
        if latest is not None:
            fields["latest"] = latest.wire()
            fields["currentEpoch"] = latest.epoch
    error = None
    if job.state == "FAILED":
        tail = await _log_tail(cluster, job)
        error = last_error([("output", tail)]) if tail else None
    seen = observe(job, error)
    message = seen.message
    if seen.state is TrainingState.stopped and spec.stop:
        epoch = fields.get("currentEpoch", status.get("currentEpoch")) or 0
        message = f"Stopped at the user's request after {epoch} of {spec.hyperparameters.epochs} epochs"
    elif spec.stop and not seen.state.finished:
        message = f"Stopping: cancelling Slurm job {job_id}"
    if seen.state is TrainingState.running and "currentEpoch" not in fields and status.get("currentEpoch") is None:
        fields["currentEpoch"] = 0
    fields.update(slurmState=seen.slurm_state, node=seen.node, startTime=seen.start_time,
                  endTime=seen.end_time or (_now() if seen.state.finished else None))
    if seen.state is TrainingState.failed:
        fields["errorMessage"] = message
    if seen.state.finished:
        _metrics_read.pop(uid, None)
        _cancelled.pop(job_id, None)
    _write(patch, body, meta, status, seen.state, seen.reason, message, cluster,
           **{k: v for k, v in fields.items() if v is not None or status.get(k) is not None})


async def _cancel(cluster: Cluster, job_id: str) -> None:
    if time.monotonic() - _cancelled.get(job_id, -CANCEL_RETRY_SECONDS) < CANCEL_RETRY_SECONDS:
        return  # sent already; the poller will show the job ending
    _cancelled[job_id] = time.monotonic()
    try:
        await cluster.bridge.cancel(job_id)
    except SlurmError as exc:
        log.warning("could not cancel job %s of a stopped training run: %s", job_id, exc)
    cluster.poller.wake()


async def _latest_metrics(cluster: Cluster, job: SlurmJob, uid: str, force: bool):
    """The last epoch of the job's metrics file, read at most once per poll interval (and once at the end)."""
    now = time.monotonic()
    if not force and now - _metrics_read.get(uid, -1e9) < cluster.spec.poll_interval_seconds:
        return None
    _metrics_read[uid] = now
    path = metrics_path(job.working_directory or cluster.spec.working_directory, job.job_id)
    try:
        history = parse_metrics(await cluster.bridge.files.read_text(path))
    except (SlurmError, FilesUnavailable, OSError) as exc:
        log.info("metrics of job %s not readable: %s", job.job_id, exc)
        return None
    return history[-1] if history else None


async def _log_tail(cluster: Cluster, job: SlurmJob) -> str | None:
    try:
        return await cluster.bridge.log_tail(job, 20)
    except (SlurmError, OSError):
        return None


@kopf.on.delete(*RESOURCE)
async def trainingrun_delete(spec: Any, status: Any, uid: str, retry: int, **_) -> None:
    """The finalizer: the resource goes only once Slurm confirms the job ended (a finished run's has)."""
    if _finished(status.get("state")):
        return  # nothing to cancel: no need to reach its cluster, which may be gone already
    await _cancel_and_confirm(spec, status, uid, retry)


@kopf.on.event(*RESOURCE, when=went_without_finalizer)
async def trainingrun_gone_without_finalizer(meta: Any, spec: Any, uid: str, **_) -> None:
    """A run removed without its finalizer's turn: cancel the job it may have left running."""
    await cancel_left_behind([spec.get("cluster", "default")], uid, f"TrainingRun {meta['namespace']}/{meta['name']}")
