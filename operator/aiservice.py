"""AIService handlers: submit (or adopt) the job, follow it to a healthy endpoint, cancel it on delete.

The decisions are made by aifactory.lifecycle; these handlers only read, call and write.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import kopf
from aifactory import preflight
from aifactory.operator import rollover, statuswrites
from aifactory.operator.clusters import (
    Cluster, ClusterNotReady, cancel_job, cancel_left_behind, registry, went_without_finalizer,
)
from aifactory.operator.config import config
from aifactory.recipes import Catalog, RecipeNotFound
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from aifactory.attempts import (
    JOB_LOST,
    LOG_LINES,
    STARTUP_TIMEOUT,
    Failure,
    failure_info,
    failure_of,
    observed,
    parse_attempts,
    restart_after,
    started,
)
from aifactory.clusters import SecretMissing, read_secret_key
from aifactory.lifecycle import (
    ACTION_ANNOTATION,
    ServiceRef,
    SpecError,
    Step,
    conditions_for,
    endpoint_url,
    idle_step,
    job_request,
    next_step,
    now_rfc3339,
    observe,
    rfc3339,
    scheduled_condition,
    starts_at_creation,
    startup_overdue,
)
from aifactory.models import (
    GROUP,
    VERSION,
    AIServiceSpec,
    Attempt,
    Condition,
    Phase,
    Recipe,
    RestartSpec,
    TenantSpec,
)
from aifactory.slurm.errors import SlurmError, SlurmUnreachable, SubmitUncertain
from aifactory.slurm.jobs import JobRequest, SlurmJob

log = logging.getLogger(__name__)

catalog = Catalog()

RESOURCE = (GROUP, VERSION, "aiservices")


def _phase(status: Any) -> Phase:
    return Phase(status.get("phase") or "pending")


def _reachable_condition(cluster: Cluster | None) -> list[Condition]:
    if cluster is None or cluster.poller.last_success is None and cluster.poller.last_error is None:
        return []
    if cluster.poller.reachable:
        return [Condition(type="SlurmReachable", status="True", reason="Polled", message="slurmrestd answers")]
    return [Condition(type="SlurmReachable", status="False", reason="SlurmUnreachable",
                      message=cluster.poller.last_error or "")]


def _status(phase: Phase, reason: str, message: str, meta: Any, status: dict, cluster: Cluster | None = None,
            extra: list[Condition] = (), **fields: Any) -> dict[str, Any]:
    out = {"phase": phase.value, "message": message or None, "observedGeneration": meta.get("generation"), **fields}
    if phase is not Phase.pending:
        out.update(pendingReason=None, expectedStart=None)
    out["conditions"] = conditions_for(phase, reason, message, meta.get("generation"), status.get("conditions"),
                                       [*_reachable_condition(cluster), *extra])
    return out


def _kept(status: Any, *types: str) -> list[Condition]:
    """Conditions of these types as the status has them (when there is nothing new to say about them)."""
    return [Condition.model_validate(c) for c in status.get("conditions") or () if c.get("type") in types]


def _fail(body: Any, patch: kopf.Patch, meta: Any, status: dict, reason: str, message: str) -> None:
    patch.status.update(_status(Phase.failed, reason, message, meta, status))
    kopf.warn(body, reason=reason, message=message)


# AIService UIDs whose last submit may or may not have reached Slurm (SubmitUncertain): before submitting again,
# look for their job in a list fresh from Slurm, not in the poller's cache (which may predate that submit).
_uncertain_submits: set[str] = set()


async def _find_live_job(cluster: Cluster, uid: str, exclude: frozenset[str] = frozenset()) -> SlurmJob | None:
    """A live job tagged with this UID, from the poller's cache, or from Slurm itself after a submit whose answer
    was lost; never one of `exclude` (the jobs the status names: the one a successor takes over from, a draining
    one, one aifactory just cancelled that the cache still shows alive).

    The cache is complete otherwise: its first poll lists every job the cluster has (so jobs submitted before a
    crash are found after the restart) and every submit of this process enters it at once. Should a service
    have more than one live job besides those (a submit repeated by an older version), the newest is kept, the
    others cancelled.
    """
    if uid in _uncertain_submits:
        listed = await cluster.bridge.jobs(tagged_only=True)  # a full list, asked after that submit
        live = [j for j in listed.jobs or [] if j.tags.uid == uid and not j.finished]
        for job in live:
            cluster.poller.remember(job)
        _uncertain_submits.discard(uid)
    else:
        try:
            await cluster.poller.listed(timeout=30)
        except TimeoutError:
            raise SlurmUnreachable(cluster.poller.last_error or "no list of the cluster's jobs yet") from None
        live = [j for j in cluster.poller.jobs_for_service(uid) if not j.finished and not j.vanished]
    live = [j for j in live if j.job_id not in exclude]
    if not live:
        return None
    live.sort(key=lambda j: int(j.job_id))
    for extra in live[:-1]:
        log.warning("%s has more than one live job: cancelling job %s, keeping %s", uid, extra.job_id,
                    live[-1].job_id)
        await cluster.bridge.cancel(extra.job_id)
    return live[-1]


async def submit_or_adopt(cluster: Cluster, uid: str, request: JobRequest,
                          exclude: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(job id, "Adopted") for a live job of this resource found in the poller's cache (submitted before a
    restart), else (job id, "Submitted") for a new one, which enters the cache at once. Never one of `exclude`:
    the jobs the resource already knows."""
    job = await _find_live_job(cluster, uid, exclude)
    if job is not None:
        return job.job_id, "Adopted"
    try:
        job_id = await cluster.bridge.submit(request)
    except SubmitUncertain:
        _uncertain_submits.add(uid)  # the next try looks in a list fresh from Slurm first
        raise
    cluster.poller.remember(SlurmJob(job_id=job_id, name=request.name, state="PENDING", comment=request.comment))
    return job_id, "Submitted"


def _tenant(tenants: Any, namespace: str) -> TenantSpec | None:
    """The Tenant of this namespace from the operator's index (None: a namespace without one)."""
    found = tenants.get(namespace) if tenants is not None else None
    for spec in found or ():
        return TenantSpec.model_validate(spec)
    return None


async def _secret_env(spec: AIServiceSpec, namespace: str) -> dict[str, str]:
    """spec.secretEnv's values, read from the service's own namespace (never another tenant's)."""
    if not spec.secret_env:
        return {}  # no API client to make (it copies the client configuration)
    core = k8s.CoreV1Api()
    return {name: await read_secret_key(core, ref.name, namespace, ref.key) for name, ref in spec.secret_env.items()}


def _attempts_wire(attempts: list[Attempt]) -> list[dict]:
    return [a.wire() for a in attempts]


def _known_jobs(status: Any) -> frozenset[str]:
    """The jobs the status names (attempts, successor, draining): never adopted as a new one, since aifactory
    itself may have just cancelled them and the poller not seen it yet."""
    ids = {a.get("jobId") for a in status.get("attempts") or ()}
    ids |= {d.get("jobId") for d in status.get("draining") or ()}
    ids |= {(status.get("successor") or {}).get("jobId"), status.get("jobId")}
    return frozenset(i for i in ids if i)


class NotSubmitted(Exception):
    """Why no job was submitted: the service fails (delay None) or waits and retries after `delay` seconds."""

    def __init__(self, reason: str, message: str, delay: float | None = None):
        super().__init__(message)
        self.reason, self.message, self.delay = reason, message, delay


@dataclass(frozen=True)
class Submitted:
    job_id: str
    verb: str  # Submitted or Adopted
    cluster: Cluster
    cluster_name: str


async def _submit(spec: Any, meta: Any, uid: str, tenants: Any = None,
                  exclude: frozenset[str] = frozenset(), wake_poller: bool = True) -> Submitted:
    """Submit a job for the service's spec, or adopt the live job a submit before a restart left (never one of
    `exclude`: the jobs the service already knows, such as the one a successor takes over from). The cluster's
    poller then polls at once, unless `wake_poller` is false (the caller wakes it once its status is written)."""
    try:
        parsed = AIServiceSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise NotSubmitted("InvalidSpec", f"invalid spec: {exc}") from exc
    try:
        recipe = catalog.get(parsed.recipe)
    except RecipeNotFound as exc:
        raise NotSubmitted("RecipeNotFound", str(exc)) from exc
    try:
        cluster = registry.get(parsed.cluster)
    except ClusterNotReady as exc:
        raise NotSubmitted("ClusterNotReady", str(exc), delay=5) from exc
    ref = ServiceRef(meta["namespace"], meta["name"], uid)
    try:
        tenant = _tenant(tenants, meta["namespace"])
    except ValidationError as exc:
        raise NotSubmitted("InvalidTenant", f"the namespace's Tenant is invalid: {exc}") from exc
    try:
        secret_env = await _secret_env(parsed, meta["namespace"])
    except SecretMissing as exc:
        # The Secret may come after the service (GitOps applies in any order): wait for it.
        raise NotSubmitted("SecretMissing", str(exc), delay=10) from exc
    try:
        request = job_request(ref, parsed, recipe, cluster.spec, tenant, secret_env)
    except SpecError as exc:
        raise NotSubmitted("InvalidSpec", str(exc)) from exc
    try:
        job_id, verb = await submit_or_adopt(cluster, uid, request, exclude)
    except SlurmUnreachable as exc:
        raise NotSubmitted("SlurmUnreachable", str(exc), delay=10) from exc
    except SlurmError as exc:
        raise NotSubmitted("SubmitRejected", f"Slurm rejected the job: {exc}") from exc
    if wake_poller:
        cluster.poller.wake()
    return Submitted(job_id, verb, cluster, parsed.cluster)


def _submitted_status(done: Submitted, meta: Any, status: dict, why: str,
                      step: Step | None = None) -> tuple[str, dict[str, Any]]:
    """The event message and the status of a service whose job was just submitted or adopted, as a new attempt."""
    message = f"{done.verb} Slurm job {done.job_id} on cluster {done.cluster_name}"
    if step is not None and step.message:
        message = f"{step.message}: {message}"
    attempts = started(parse_attempts(status.get("attempts")), done.job_id, done.cluster_name, why)
    return message, _status(Phase.pending, done.verb, message, meta, status, done.cluster, jobId=done.job_id,
                            slurmState="PENDING", node=None, endpoint=None, pendingReason=None,
                            expectedStart=None, nextAttemptTime=None, attempts=_attempts_wire(attempts))


async def _start(body: Any, spec: Any, meta: Any, status: dict, uid: str, patch: kopf.Patch,
                 tenants: Any = None, why: str = "Created", step: Step | None = None) -> None:
    """Submit the service's job (or adopt the live one a submit before a restart left), as a new attempt."""
    try:
        done = await _submit(spec, meta, uid, tenants, _known_jobs(status))
    except NotSubmitted as exc:
        if exc.reason == "SlurmUnreachable":
            patch.status.update({"conditions": conditions_for(
                _phase(status), exc.reason, exc.message, meta.get("generation"), status.get("conditions"),
                [Condition(type="SlurmReachable", status="False", reason=exc.reason, message=exc.message)])})
            raise kopf.TemporaryError(f"Slurm unreachable, will retry: {exc.message}", delay=exc.delay) from exc
        if exc.delay is not None:
            patch.status.update(_status(Phase.pending, exc.reason, exc.message, meta, status))
            raise kopf.TemporaryError(exc.message, delay=exc.delay) from exc
        return _fail(body, patch, meta, status, exc.reason, exc.message)
    message, fields = _submitted_status(done, meta, status, why, step)
    patch.status.update(fields)
    kopf.info(body, reason=step.reason if step is not None and step.message else done.verb, message=message)


# ---- the submit at a new service's creation event ---------------------------------------------------------------
# kopf's first round trip on a new object only adds its finalizer; its create handler runs on the event that
# brings it back, and writes the status after a patch of its own annotations. A plain new service
# (lifecycle.starts_at_creation) need wait for neither: its job is submitted at the creation event and its job id
# written into the status at once (kopf adds the finalizer on the next event). The create handler then takes that
# job over (_take_early), or cancels it if the spec changed meanwhile; a service deleted before any handler ran
# has it cancelled at its deletion event.

# By UID, until a handler takes it over: the job submitted at the creation event, the spec it was made for and
# the status written with it.
_early: dict[str, tuple[Submitted, dict, dict]] = {}


def _created_or_deleted(type: str, meta: Any, status: Any, **_: Any) -> bool:
    if type == "DELETED":
        return True
    return type == "ADDED" and not status and not meta.get("finalizers") and not meta.get("deletionTimestamp")


@kopf.on.event(*RESOURCE, when=_created_or_deleted)
async def aiservice_arrived_or_gone(type: str, body: Any, spec: Any, meta: Any, uid: str,
                                    tenant_by_namespace: kopf.Index, **_) -> None:
    """A new service: submit its job now. A service gone: cancel a job submitted for it that no handler took, and
    any job it left running when it went without its finalizer's turn."""
    if type == "DELETED":
        what = f"AIService {meta['namespace']}/{meta['name']}"
        await _drop_early(uid, f"{what} was deleted before its job was recorded")
        if went_without_finalizer(type, meta):
            status = body.get("status") or {}
            clusters = [spec.get("cluster", "default"), *(a.get("cluster") for a in status.get("attempts") or ())]
            await cancel_left_behind(clusters, uid, what)
        return
    # A copy: kopf's spec is a view of the object's body, which the object's later events replace.
    made_for = copy.deepcopy(dict(spec))
    try:
        if uid in _early or not starts_at_creation(AIServiceSpec.model_validate(made_for), meta.get("annotations")):
            return
        done = await _submit(made_for, meta, uid, tenant_by_namespace, wake_poller=False)
    except (ValidationError, NotSubmitted):
        return  # the create handler tries again, and says why in the status
    message, fields = _submitted_status(done, meta, {}, "Created")
    _early[uid] = (done, made_for, fields)
    namespace, name = meta["namespace"], meta["name"]
    try:
        await statuswrites.patch_status("aiservices", namespace, name, _job_first(fields))
    except statuswrites.StatusNotWritten as exc:  # the create handler writes the same status a moment later
        log.info("could not write job %s into the status of %s/%s yet: %s", done.job_id, namespace, name, exc)
    # Only now: a poll during the status write competed with it for the CPU (B1 went from 4.6x to 3.5x the bare
    # submit when the poll came after it).
    done.cluster.poller.wake()
    kopf.info(body, reason=done.verb, message=message)


def _job_first(fields: dict) -> dict:
    """The first status write of a new service: its job, without the conditions (the create handler adds them)
    and the nulls (nothing to remove yet). With them a write took 6.6 to 9.2 ms on kube-apiserver 1.20, without
    the conditions 5.2 ms (B1)."""
    return {key: value for key, value in fields.items() if value is not None and key != "conditions"}


async def _take_early(uid: str, spec: Any, status: Any, patch: kopf.Patch) -> dict:
    """The status a new service is reconciled from: with the job submitted at its creation event when that was
    made for this spec (its conditions added unless the timer wrote newer ones, or all of it written should the
    early write have failed), else without it, that job cancelled (the spec changed meanwhile: a new job, or none
    if it is stopped now)."""
    status = dict(status)
    done, early_spec, fields = _early.pop(uid, (None, None, None))
    if done is None:
        return status
    if early_spec == dict(spec):
        if status.get("jobId") != done.job_id:
            rest = fields
        else:
            rest = {} if status.get("conditions") else {"conditions": fields["conditions"]}
        patch.status.update(rest)
        status.update(rest)
        return status
    await cancel_job(done.cluster, done.job_id, "its spec changed before the job was recorded")
    patch.status.update(jobId=None, slurmState=None)
    return {}


async def _drop_early(uid: str, why: str) -> None:
    """Cancel the job submitted at the creation event of a service that went before any handler took it over."""
    done, _spec, _fields = _early.pop(uid, (None, None, None))
    if done is not None:
        await cancel_job(done.cluster, done.job_id, why)


def _known_phase(status: Any) -> Phase | None:
    """The phase, or None for a service that never got a job (just created, or waiting to submit one). A service
    waiting to be restarted after a failure (nextAttemptTime) counts as pending."""
    phase = _phase(status)
    if not status.get("jobId") and not phase.finished and not status.get("nextAttemptTime"):
        return None
    return phase


# Why a job was submitted, in the words of status.attempts[].startedBy.
_STARTED_BY = {"Submitted": "Created", "Restarted": "Restart", "Started": "Started", "SpecChanged": "SpecChanged"}

# The actions acted on by this process, by UID: kopf may run the resume and the update handler in one cycle,
# before either's status patch is written.
_acted: dict[str, str] = {}
# kopf runs a service's timer beside its event handlers, not after them: a lock per service keeps them apart, and a
# fence (the phase and job a start or stop wrote) makes the timer skip ticks whose status snapshot predates it.
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
_fences: dict[str, tuple[tuple[str | None, str | None, str | None], float]] = {}
# A fence whose status never shows (a lost patch) must not freeze the service for good.
FENCE_SECONDS = 60.0


def _successor_id(status: Any) -> str | None:
    return (status.get("successor") or {}).get("jobId")


def _fence(uid: str, status: dict, patch: kopf.Patch) -> None:
    written = patch.status or {}
    successor = written["successor"] if "successor" in written else status.get("successor")
    _fences[uid] = ((written.get("phase", status.get("phase")), written.get("jobId", status.get("jobId")),
                     (successor or {}).get("jobId")), time.monotonic() + FENCE_SECONDS)


def _fenced(uid: str, status: Any) -> bool:
    """Whether the timer's snapshot of the status is older than the last start, stop or successor."""
    fence = _fences.get(uid)
    if fence is None:
        return False
    written, until = fence
    if (status.get("phase"), status.get("jobId"), _successor_id(status)) != written and time.monotonic() < until:
        return True
    del _fences[uid]
    return False


async def _reconcile(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch, tenants: Any,
                     old_spec: Any = None) -> None:
    """Start, stop or leave the service, as aifactory.lifecycle.next_step decides."""
    status = dict(status)
    try:
        parsed = AIServiceSpec.model_validate(dict(spec))
        before = AIServiceSpec.model_validate(dict(old_spec)) if old_spec is not None else None
    except ValidationError as exc:
        return _fail(body, patch, meta, status, "InvalidSpec", f"invalid spec: {exc}")
    action = (meta.get("annotations") or {}).get(ACTION_ANNOTATION)
    observed_action = _acted.get(uid) or status.get("observedAction")
    phase = _known_phase(status)
    if phase is None and (meta.get("annotations") or {}).get(DRY_RUN_ANNOTATION) == "true":
        return await _dry_run(body, parsed, meta, status, patch, tenants)
    step = next_step(parsed, phase, action=action, observed_action=observed_action, old_spec=before)
    async with _locks[uid]:
        if step.kind == "start" and step.reason == "SpecChanged" and await rollover.start_on_change(
                body, spec, meta, status, uid, patch, tenants):
            pass  # the new spec's job starts beside the old one, which serves until it is healthy
        elif step.kind == "start":
            if phase is not None:
                # Never adopt the job being replaced: it must have ended before the new one is submitted. It runs
                # on the old spec's cluster, whatever the new spec names.
                await rollover.cancel_others(old_spec or spec, status)
                replaced = await _cancel_and_confirm(old_spec or spec, status, uid, body=body)
                attempts = parse_attempts(status.get("attempts"))
                if replaced is not None:
                    attempts = observed(attempts, replaced, "Replaced")
                patch.status.update({"jobId": None, "node": None, "endpoint": None, "slurmState": None,
                                     "restartCount": None, "nextAttemptTime": None, "successor": None,
                                     "draining": None})
                status = {"conditions": status.get("conditions"), "attempts": _attempts_wire(attempts)}
            await _start(body, spec, meta, status, uid, patch, tenants, why=_STARTED_BY.get(step.reason, step.reason),
                         step=step)
        elif step.kind == "stop":
            await _stop(body, spec, meta, status, uid, patch, step)
        if step.kind != "none":
            _fence(uid, status, patch)
    if action and action != observed_action:
        _acted[uid] = action
        patch.status["observedAction"] = action


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
async def aiservice_create(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch,
                           tenant_by_namespace: kopf.Index, **_) -> None:
    # A service that has its job (or has ended, or waits to be restarted) is followed by the timer; a new one
    # is started, unless created stopped.
    status = await _take_early(uid, spec, status, patch)
    await _reconcile(body, spec, meta, status, uid, patch, tenant_by_namespace)


@kopf.on.update(*RESOURCE)
async def aiservice_update(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch, old: Any,
                           tenant_by_namespace: kopf.Index, **_) -> None:
    """A changed spec means a new job (the old one is cancelled first), unless only when it runs changed
    (stopped, onDemand, idle and start timeouts, restart policy); the lifecycle.aifactory.io/action annotation
    starts, restarts or evicts it."""
    await _reconcile(body, spec, meta, status, uid, patch, tenant_by_namespace,
                     old_spec=(old or {}).get("spec") or spec)


# Not under aifactory.io/: kopf keeps its own state there and ignores changes to those annotations.
DRY_RUN_ANNOTATION = "lifecycle.aifactory.io/dry-run"


async def _dry_run(body: Any, spec: AIServiceSpec, meta: Any, status: dict, patch: kopf.Patch, tenants: Any) -> None:
    """The dry-run annotation on a service without a job: check it against its cluster and answer in
    status.preflight; nothing is submitted until the annotation goes."""
    try:
        recipe = catalog.get(spec.recipe)
        cluster = registry.get(spec.cluster)
        request = preflight.request_for(meta["namespace"], meta["name"], spec, recipe, cluster.spec,
                                        _tenant(tenants, meta["namespace"]))
    except ClusterNotReady as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    except (RecipeNotFound, SpecError, ValidationError) as exc:
        result = preflight.refused(str(exc))
    else:
        try:
            result = await preflight.check(cluster, request)
        except SlurmUnreachable as exc:
            raise kopf.TemporaryError(f"Slurm unreachable, will retry the dry run: {exc}", delay=10) from exc
    verdict = ("the job would run" + (f"; Slurm: {result.slurm_estimate}" if result.slurm_estimate else "")
               if result.ok else "the job would not run: " + "; ".join(result.problems))
    message = f"Dry run ({DRY_RUN_ANNOTATION}): nothing submitted; {verdict}"
    check = Condition(type="Preflight", status="True" if result.ok else "False",
                      reason="WouldRun" if result.ok else "WouldNotRun", message=verdict)
    patch.status.update(_status(Phase.pending, "DryRun", message, meta, status, None, [check],
                                preflight=result.wire()))
    kopf.info(body, reason="DryRun", message=message)


async def _stop(body: Any, spec: Any, meta: Any, status: dict, uid: str, patch: kopf.Patch, step: Step) -> None:
    """Cancel the service's job (if it has one) and keep the resource, in phase stopped with the reason."""
    cluster, message, fields = None, step.message, {}
    await rollover.cancel_others(spec, status)
    if status.get("successor") or status.get("draining"):
        fields.update(successor=None, draining=None)
    if status.get("jobId") and not _phase(status).finished:
        job = await _cancel_and_confirm(spec, status, uid)
        cluster = registry.get(_job_cluster(spec, status))
        message += f"; Slurm job {status['jobId']} cancelled"
        if job is not None:
            fields["attempts"] = _attempts_wire(observed(parse_attempts(status.get("attempts")), job, "Stopped"))
    patch.status.update(_status(Phase.stopped, step.reason, message, meta, status, cluster, endpoint=None,
                                nextAttemptTime=None, **fields))
    kopf.info(body, reason=step.reason, message=message)


START_WATCH_SECONDS = 0.8  # within each 1 s tick of a starting service


def _about_to_start(job: SlurmJob) -> bool:
    """Just submitted and not yet looked at by Slurm's scheduler (reason None): it usually starts within seconds.
    A job queued for a reason (Priority, Resources, ...) is not hurried: it may wait for hours."""
    young = job.submit_time is None or time.time() - job.submit_time < 60
    return job.state == "PENDING" and job.reason in ("", "None") and young


async def _reach(cluster: Cluster, job: SlurmJob, health_path: str, probe: bool) -> tuple[str | None, bool]:
    """The job's endpoint once it published its port, and whether the health path answers there."""
    port = job.tags.port
    if not port or not job.batch_host or job.finished:
        return None, False
    try:
        endpoint = endpoint_url(await cluster.bridge.node_address(job.batch_host), port)
    except SlurmError:
        endpoint = endpoint_url(job.batch_host, port)
    # Through the cluster's data plane: the same SSH connection where compute nodes are not routable.
    return endpoint, probe and await _probe_ok(cluster.http, endpoint + health_path)


async def _served_models(cluster: Cluster, endpoint: str) -> list[str]:
    """The model ids an OpenAI-speaking service serves (asked once, when it becomes ready): the gateway routes
    them to it."""
    try:
        answer = await cluster.http.get(f"{endpoint}/v1/models")
        data = answer.json().get("data") if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
    return [str(m["id"]) for m in data or () if isinstance(m, dict) and m.get("id")][:50]


async def _probe_ok(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(url)
        return response.status_code == 200
    except httpx.HTTPError:
        return False


def _unfinished(status: Any, **_: Any) -> bool:
    return not _phase(status).finished


# Only unfinished services tick: kopf stops a timer once its filter no longer matches, so a thousand
# completed or cancelled services cost nothing.
@kopf.timer(*RESOURCE, interval=config.observe_interval, initial_delay=0.5, sharp=True, when=_unfinished)
async def aiservice_observe(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch,
                            tenant_by_namespace: kopf.Index, **_) -> None:
    """Follow the job from the cluster's poller cache (no Slurm request here) and probe the service."""
    async with _locks[uid]:
        if not _fenced(uid, status):
            await _observe(body, spec, meta, status, uid, patch, tenant_by_namespace)
            if (patch.status or {}).get("phase", status.get("phase")) != status.get("phase"):
                # A new phase (an ended job above all): the next ticks may still be handed the old status.
                _fence(uid, dict(status), patch)


def _job_cluster(spec: Any, status: Any) -> str:
    """The SlurmCluster the status's job runs on: its attempt's cluster (a spec update may already name another
    before the job is replaced), else the spec's."""
    job_id = status.get("jobId")
    for attempt in reversed(status.get("attempts") or []):
        if job_id and attempt.get("jobId") == job_id and attempt.get("cluster"):
            return attempt["cluster"]
    return spec.get("cluster") or "default"


async def _observe(body: Any, spec: Any, meta: Any, status: Any, uid: str, patch: kopf.Patch,
                   tenant_by_namespace: kopf.Index) -> None:
    job_id = status.get("jobId")
    if _phase(status).finished:
        return
    if not job_id:
        due = _parse_time(status.get("nextAttemptTime"))
        if due is not None and time.time() >= due:
            why = "Requeue" if status.get("lastFailure", {}).get("reason") in ("NodeFail", "Preempted") else "Restart"
            await _start(body, spec, meta, dict(status), uid, patch, tenant_by_namespace, why=why)
        return
    try:
        cluster = registry.get(_job_cluster(spec, status))
    except ClusterNotReady:
        return
    job = cluster.poller.job(job_id)
    if job is None and cluster.poller.reachable:
        # Not in the cluster's job list (e.g. forgotten while the operator was down): ask once for this job.
        try:
            job = await cluster.bridge.job(job_id)
        except SlurmError:
            job = None
        else:
            if job is None:
                lost = SlurmJob(job_id=job_id, state="UNKNOWN", vanished=True,
                                working_directory=cluster.spec.working_directory)
                failure = Failure(JOB_LOST, f"Slurm no longer knows job {job_id}; its end state is unknown")
                await _ended(body, spec, meta, status, patch, cluster, lost, failure)
                return
            cluster.poller.remember(job)
    if job is None:
        conditions = conditions_for(_phase(status), "", status.get("message") or "",
                                    meta.get("generation"), status.get("conditions"),
                                    [*_reachable_condition(cluster), *_kept(status, "Scheduled")])
        if conditions != status.get("conditions"):
            patch.status["conditions"] = conditions
        return
    try:
        recipe: Recipe | None = catalog.get(spec.get("recipe", ""))
    except RecipeNotFound:
        recipe = None
    health_path = recipe.health_path if recipe else "/health"
    rolled = await rollover.tick(body, spec, meta, status, uid, patch, tenant_by_namespace, cluster, job, recipe,
                                 time.time())
    if rolled.done:
        return

    was_running = status.get("phase") == Phase.running.value
    endpoint, healthy = await _reach(cluster, job, health_path, probe=not was_running)
    healthy = healthy or was_running  # once running, the phase follows the job; no flapping on a slow probe
    # Start-up is where readiness lag comes from: within this tick, look again every 0.2 s, and have the
    # cluster's poller hurry while the job has not yet said which port it serves on.
    deadline = time.monotonic() + START_WATCH_SECONDS
    while not healthy and (job.state == "RUNNING" or _about_to_start(job)) and time.monotonic() < deadline:
        if _about_to_start(job) or (job.tags.port is None and job.tags.stage in ("", "submitted")):
            cluster.poller.hurry()
        await asyncio.sleep(0.2)
        job = cluster.poller.job(job_id) or job
        endpoint, healthy = await _reach(cluster, job, health_path, probe=True)

    seen = observe(job, healthy)
    grace = recipe.startup_grace_seconds if recipe else None
    if startup_overdue(seen.phase, job, grace, time.time()):
        try:
            await cluster.bridge.cancel(job.job_id)
        except SlurmError as exc:
            log.warning("could not cancel job %s after its start-up timeout: %s", job.job_id, exc)
        failure = Failure(STARTUP_TIMEOUT, f"Not healthy within the recipe's start-up grace of {grace}s")
        return await _ended(body, spec, meta, status, patch, cluster, job, failure, rolled)
    if seen.phase.finished:
        return await _ended(body, spec, meta, status, patch, cluster, job, rolled=rolled)

    if seen.phase is Phase.running and spec.get("idleTimeoutMinutes"):
        idle = idle_step(AIServiceSpec.model_validate(dict(spec)), seen.phase, dict(status), time.time())
        if idle.kind == "stop":
            await _stop(body, spec, meta, dict(status), uid, patch, idle)
            return _fence(uid, dict(status), patch)
    served = {}
    if seen.phase is Phase.running and not was_running and endpoint and recipe is not None and recipe.openai_api:
        served = {"models": await _served_models(cluster, endpoint)}
    attempts = observed(rolled.attempts or parse_attempts(status.get("attempts")), job)
    wanted = _status(seen.phase, seen.reason, seen.message, meta, dict(status), cluster,
                     [scheduled_condition(job), *rollover.settled(rolled.conditions, seen.phase)], jobId=job_id,
                     slurmState=seen.slurm_state, node=seen.node, endpoint=endpoint,
                     pendingReason=seen.pending_reason, expectedStart=rfc3339(seen.expected_start),
                     attempts=_attempts_wire(attempts), **served, **rolled.fields)
    changed = {k: v for k, v in wanted.items() if status.get(k) != v}
    if changed:
        patch.status.update(changed)
    if status.get("phase") != seen.phase.value:
        kopf.info(body, reason=seen.phase.value.title(), message=seen.message)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _restart_spec(spec: Any) -> RestartSpec:
    try:
        return RestartSpec.model_validate(dict(spec.get("restart") or {}))
    except ValidationError:
        return RestartSpec()


async def _ended(body: Any, spec: Any, meta: Any, status: Any, patch: kopf.Patch, cluster: Cluster,
                 job: SlurmJob, failure: Failure | None = None, rolled: rollover.Rolled | None = None) -> None:
    """The service's job ended: record the attempt, name the failure with the last log lines, and restart
    (or requeue) it when its policy says so; otherwise the service ends with the job."""
    tail = None
    if job.state != "COMPLETED":
        try:
            tail = await cluster.bridge.log_tail(job, LOG_LINES)
        except SlurmError as exc:
            log.warning("could not read the output of job %s: %s", job.job_id, exc)
    failure = failure or failure_of(job, tail)
    seen = observe(job, False)
    before = rolled.attempts if rolled is not None else None
    attempts = observed(before or parse_attempts(status.get("attempts")), job,
                        failure.reason if failure else "Completed")
    common = dict(jobId=job.job_id, slurmState=seen.slurm_state if not job.vanished else status.get("slurmState"),
                  node=seen.node or status.get("node"), endpoint=None, pendingReason=None, expectedStart=None,
                  **(rolled.fields if rolled is not None else {}), attempts=_attempts_wire(attempts))
    if failure is None:
        patch.status.update(_status(seen.phase, seen.reason, seen.message, meta, dict(status), cluster,
                                    [scheduled_condition(job)], **common))
        kopf.info(body, reason=seen.phase.value.title(), message=seen.message)
        return
    info = failure_info(failure, job, tail, now_rfc3339()).wire()
    restarts = status.get("restartCount") or 0
    decision = restart_after(failure, _restart_spec(spec), restarts, time.time())
    kopf.warn(body, reason=failure.reason, message=failure.message)
    if decision.restart:
        message = f"{failure.message}; {decision.message}"
        patch.status.update(_status(
            Phase.pending, "Requeued" if not decision.counted else "Restarting", message, meta, dict(status),
            cluster, **{**common, "jobId": None, "node": None}, lastFailure=info,
            restartCount=restarts + (1 if decision.counted else 0), nextAttemptTime=rfc3339(decision.at)))
        kopf.info(body, reason="Restarting", message=message)
        return
    phase = Phase.cancelled if failure.reason == "Cancelled" else Phase.failed
    message = f"{failure.message}; {decision.message}" if decision.message else failure.message
    patch.status.update(_status(phase, failure.reason, message, meta, dict(status), cluster,
                                [scheduled_condition(job)] if not job.vanished else [], **common,
                                lastFailure=info, nextAttemptTime=None))


async def _slurmcluster_exists(name: str) -> bool:
    """Whether the SlurmCluster resource is there (it may only not be connected yet, e.g. after a restart)."""
    def get() -> bool:
        try:
            k8s.CustomObjectsApi().get_cluster_custom_object(GROUP, VERSION, "slurmclusters", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    try:
        return await asyncio.to_thread(get)
    except Exception as exc:  # noqa: BLE001  (unsure: keep waiting, as for a cluster not yet connected)
        log.warning("could not tell whether SlurmCluster %s exists: %s", name, exc)
        return True


async def _cancel_and_confirm(spec: Any, status: Any, uid: str, retry: int = 0,
                              body: Any = None) -> SlurmJob | None:
    """Cancel the service's live job and wait (by TemporaryError) until Slurm says it ended; the ended job."""
    name = _job_cluster(spec, status)
    try:
        cluster = registry.get(name)
    except ClusterNotReady as exc:
        if status.get("jobId"):
            if not await _slurmcluster_exists(name):
                # Nothing can cancel it any more; holding the resource forever would not either.
                message = (f"SlurmCluster {name} is gone: job {status['jobId']} could not be cancelled and may "
                           "still run there")
                if body is not None:
                    kopf.warn(body, reason="ClusterGone", message=message)
                log.warning("%s: %s", uid, message)
                return None
            raise kopf.TemporaryError(f"cannot cancel job {status.get('jobId')}: {exc}", delay=5) from exc
        if retry < 12 and not _phase(status).finished:
            # A job may have been submitted just before a restart: give the cluster a minute to connect.
            raise kopf.TemporaryError(f"waiting for the cluster to look for this service's job: {exc}",
                                      delay=5) from exc
        return None
    try:
        job_id = status.get("jobId")
        if not job_id:
            # Submitted but not yet recorded (the operator stopped in between): find it by its tag.
            job = await _find_live_job(cluster, uid)
            if job is None:
                return None
            job_id = job.job_id
        job = await cluster.bridge.job(job_id)
        if job is None or job.finished:
            if job is not None:
                cluster.poller.remember(job)  # the cache may still hold it live: a new start must not adopt it
            return job
        await cluster.bridge.cancel(job_id)
        job = await cluster.bridge.job(job_id)
    except SlurmError as exc:
        raise kopf.TemporaryError(f"cannot cancel job: {exc}", delay=5) from exc
    if job is not None:
        cluster.poller.remember(job)
    cluster.poller.wake()
    if job is not None and not job.finished:
        raise kopf.TemporaryError(f"waiting for Slurm to confirm that job {job_id} ended ({job.state})", delay=1)
    return job


@kopf.on.delete(*RESOURCE)
async def aiservice_delete(body: Any, spec: Any, status: Any, uid: str, retry: int, **_) -> None:
    """The finalizer: the resource goes once Slurm confirms the job ended (or its SlurmCluster is gone), and its
    successor and draining jobs are cancelled."""
    await rollover.cancel_others(spec, status)
    await _cancel_and_confirm(spec, status, uid, retry, body=body)
    for memo in (_acted, _locks, _fences):
        memo.pop(uid, None)
