"""The pure core: (spec, recipe, cluster) -> job request, and (observed job, health) -> status.

No I/O here; the operator's handlers feed these functions and write what they return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from aifactory.jobscript import BIND_VAR, UID_VAR, render_job_script
from aifactory.models import (
    AIServiceSpec,
    Condition,
    Phase,
    Recipe,
    SlurmClusterSpec,
    TenantSpec,
)
from aifactory.slurm.jobs import JobRequest, JobTags, SlurmJob, memory_mb
from aifactory.slurm.logs import JOB_STDERR, JOB_STDOUT

# Environment names the operator sets itself; a service's env may not replace them.
RESERVED_ENV = frozenset({UID_VAR, BIND_VAR, "AIFACTORY_PORT", "SLURM_JOB_ID"})


# Slurm job names start with what the job is for: `ais-<namespace>-<name>` for an AIService.
JOB_NAME_PREFIX = {"service": "ais", "training": "trn"}


class SpecError(ValueError):
    """The spec asks for something no job can be made of; the message says what."""


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    uid: str


def job_request(service: ServiceRef, spec: AIServiceSpec, recipe: Recipe, cluster: SlurmClusterSpec,
                tenant: TenantSpec | None = None, secret_env: dict[str, str] | None = None, *,
                kind: str = "service") -> JobRequest:
    """The Slurm job that runs this service.

    tenant: the Tenant of the service's namespace, whose Slurm account (and user) every job of it runs under.
    secret_env: the values of spec.secretEnv, read from the namespace's Secrets.
    kind: what the job is for, in its name and script title ("service", "training").
    """
    secret_env = secret_env or {}
    clash = RESERVED_ENV & (set(spec.env) | set(secret_env))
    if clash:
        raise SpecError(f"env may not set {', '.join(sorted(clash))}: aifactory sets it for the job")
    twice = set(spec.env) & set(spec.secret_env)
    if twice:
        raise SpecError(f"{', '.join(sorted(twice))}: set in env and in secretEnv; give each variable once")
    slurm = tenant.slurm if tenant else None
    if slurm and slurm.account and spec.account and spec.account != slurm.account:
        raise SpecError(f"account {spec.account}: this namespace's tenant runs its jobs under account "
                        f"{slurm.account}")
    resources = spec.resources.over(recipe.resources)
    environment = {
        **cluster.job_environment,
        **recipe.environment,
        **spec.env,
        **secret_env,
        UID_VAR: service.uid,
        BIND_VAR: cluster.bind_address,
    }
    environment.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    workdir = cluster.working_directory.rstrip("/") or "/"
    title = f"aifactory {kind} {service.namespace}/{service.name} (recipe {recipe.path})"
    try:
        memory = memory_mb(resources.memory)
    except ValueError as exc:
        raise SpecError(str(exc)) from exc
    return JobRequest(
        name=f"{JOB_NAME_PREFIX.get(kind, kind)}-{service.namespace}-{service.name}"[:128],
        script=render_job_script(recipe, title, env_names=[*recipe.environment, *spec.env, *secret_env],
                                 gpus=resources.gpu or 0, container_command=cluster.container_command.value),
        environment=environment,
        working_directory=workdir,
        standard_output=f"{workdir}/{JOB_STDOUT}",
        standard_error=f"{workdir}/{JOB_STDERR}",
        comment=JobTags(uid=service.uid, stage="submitted").render(),
        partition=spec.partition or (slurm and slurm.partition) or cluster.partition,
        account=(slurm and slurm.account) or spec.account or cluster.account,
        qos=spec.qos or (slurm and slurm.qos) or cluster.qos,
        cpus_per_task=resources.cpu,
        memory_per_node_mb=memory,
        gpus_per_node=resources.gpu or None,
        time_limit_minutes=resources.time_limit,
        nodes=resources.nodes,
        nodelist=spec.nodelist,
        user=(slurm and slurm.user) or None,
    )


@dataclass(frozen=True)
class Observed:
    """What the status should say, as far as the job and the health probe tell."""

    phase: Phase
    slurm_state: str
    message: str
    node: str | None = None
    port: int | None = None
    reason: str = ""
    pending_reason: str | None = None  # Slurm's reason while the job is queued
    expected_start: int | None = None  # Slurm's estimate of the start while queued (epoch seconds)


FAILURE_WORDS = {
    "TIMEOUT": "the job reached its time limit",
    "NODE_FAIL": "the node failed",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "BOOT_FAIL": "the node failed to boot",
    "DEADLINE": "the job missed its deadline",
    "PREEMPTED": "the job was preempted",
    "SPECIAL_EXIT": "the job ended in a special exit state",
}


def observe(job: SlurmJob, healthy: bool) -> Observed:
    """The phase a service is in, given its job and whether its health path answered."""
    state = job.state
    # A finished job's COMPLETING flag passes (24.11 on show it right after a cancel); its status stays final.
    flags = [f for f in job.flags if not (job.finished and f == "COMPLETING")]
    shown_state = state if not flags else f"{state},{','.join(flags)}"
    tags = job.tags
    node = job.batch_host or job.nodes or None
    if job.vanished and not job.finished:
        return Observed(Phase.failed, shown_state, "Slurm no longer knows the job; its end state is unknown",
                        node, tags.port, "JobLost")
    if job.queued or state == "SUSPENDED" or (state == "CONFIGURING" and not tags.port):
        reason = slurm_reason(job)
        why = reason or "waiting to be scheduled"
        expected = f"; expected start {rfc3339(job.expected_start)}" if job.expected_start else ""
        return Observed(Phase.pending, shown_state, f"Queued by Slurm: {why}{expected}", None, None, "Queued",
                        pending_reason=reason if job.queued else None, expected_start=job.expected_start)
    if state in ("RUNNING", "CONFIGURING", "COMPLETING") and not job.finished:
        if tags.stage == "building":
            return Observed(Phase.building, shown_state, "Pulling or building the container image", node, None,
                            "Building")
        if tags.port is None:
            return Observed(Phase.starting, shown_state, "Job started; waiting for the service to report its port",
                            node, None, "Starting")
        if healthy:
            return Observed(Phase.running, shown_state, "Service is answering its health check", node, tags.port,
                            "Running")
        return Observed(Phase.starting, shown_state, "Service started; waiting for its health check to pass",
                        node, tags.port, "Starting")
    if state == "COMPLETED":
        return Observed(Phase.completed, shown_state, "The job ended successfully", node, None, "Completed")
    if state == "CANCELLED":
        why = f" ({job.reason})" if job.reason and job.reason != "None" else ""
        return Observed(Phase.cancelled, shown_state, f"The job was cancelled{why}", node, None, "Cancelled")
    if state == "FAILED":
        how = f"exit code {job.exit_code}" if not job.signal else f"signal {job.signal}"
        why = f", Slurm reason: {job.reason}" if job.reason and job.reason != "None" else ""
        return Observed(Phase.failed, shown_state, f"The job failed with {how}{why}", node, None, "JobFailed")
    if state in FAILURE_WORDS:
        why = f" (Slurm reason: {job.reason})" if job.reason and job.reason != "None" else ""
        return Observed(Phase.failed, shown_state, f"{FAILURE_WORDS[state].capitalize()}{why}", node, None,
                        state.title().replace("_", ""))
    return Observed(Phase.pending, shown_state, f"Slurm reports state {shown_state}", node, None, "Unknown")


def slurm_reason(job: SlurmJob) -> str | None:
    """Slurm's state reason, None when it has none ("None": not yet looked at by the scheduler)."""
    return job.reason if job.reason and job.reason != "None" else None


def _condition_word(text: str) -> str:
    """A condition reason (one CamelCase word) from Slurm's reason, which may carry a node list after a comma."""
    word = re.split(r"[^A-Za-z0-9_]", text, maxsplit=1)[0]
    return word if word[:1].isalpha() else "Queued"


def scheduled_condition(job: SlurmJob) -> Condition:
    """Scheduled: False with Slurm's pending reason and expected start while the job waits, True once it runs."""
    if job.queued:
        reason = slurm_reason(job)
        expected = (f"; Slurm expects it to start at {rfc3339(job.expected_start)}" if job.expected_start
                    else "; Slurm gives no expected start yet")
        return Condition(type="Scheduled", status="False", reason=_condition_word(reason or "Queued"),
                         message=f"Job {job.job_id} is queued: {reason or 'waiting to be scheduled'}{expected}")
    if job.state == "SUSPENDED":
        return Condition(type="Scheduled", status="False", reason="Suspended",
                         message=f"Job {job.job_id} is suspended by Slurm")
    if job.start_time is None and job.finished:
        return Condition(type="Scheduled", status="False", reason="NeverStarted",
                         message=f"Job {job.job_id} ended ({job.state}) before it started")
    node = job.batch_host or job.nodes
    since = f" at {rfc3339(job.start_time)}" if job.start_time else ""
    return Condition(type="Scheduled", status="True", reason="Started",
                     message=f"Job {job.job_id} started{f' on {node}' if node else ''}{since}")


def startup_overdue(phase: Phase, job: SlurmJob, grace_seconds: int | None, now: float) -> bool:
    """Still building or starting longer after the job started than the recipe's start-up grace allows."""
    return (phase in (Phase.building, Phase.starting) and bool(grace_seconds) and job.start_time is not None
            and now - job.start_time > grace_seconds)


def rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), UTC).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def conditions_for(phase: Phase, reason: str, message: str, generation: int | None,
                   previous: list[dict] | None, extra: list[Condition] = ()) -> list[dict]:
    """Ready plus the kstatus pair (Reconciling, Stalled); transition times kept while a status holds."""
    in_progress = phase in (Phase.pending, Phase.building, Phase.starting)
    wanted = [
        Condition(type="Ready", status="True" if phase is Phase.running else "False", reason=reason or phase.value.title(),
                  message=message),
        Condition(type="Reconciling", status="True" if in_progress else "False", reason=reason or phase.value.title(),
                  message=message if in_progress else ""),
        Condition(type="Stalled", status="True" if phase is Phase.failed else "False",
                  reason=reason or phase.value.title(), message=message if phase is Phase.failed else ""),
        *extra,
    ]
    return stamped(wanted, generation, previous)


def stamped(wanted: list[Condition], generation: int | None, previous: list[dict] | None) -> list[dict]:
    """The conditions as status stores them, each keeping its transition time while its status holds."""
    before = {c.get("type"): c for c in previous or []}
    out = []
    stamp = now_rfc3339()
    for cond in wanted:
        old = before.get(cond.type)
        keep_time = old is not None and old.get("status") == cond.status and old.get("lastTransitionTime")
        cond = cond.model_copy(update={
            "last_transition_time": old["lastTransitionTime"] if keep_time else stamp,
            "observed_generation": generation,
        })
        # Empty strings are left out: the local 1.20 apiserver reads "" in a custom resource as null.
        out.append({k: v for k, v in cond.wire().items() if v != ""})
    return out


def endpoint_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


# ---- stop, start, restart, on demand and idle -------------------------------------------------------------------

# What the API (or a person with kubectl) asks of a service without changing its spec: "<verb>@<when>", e.g.
# "restart@2026-11-23T14:14:00.123456Z". Only the newest request counts; the operator records the one it acted on
# in status.observedAction, so each is acted on once (also across restarts), and no clocks are compared.
ACTION_ANNOTATION = "lifecycle.aifactory.io/action"  # not aifactory.io/: kopf keeps its own state there and ignores it
ACTION_VERBS = ("start", "restart", "evict")

# Spec fields that say when the service runs, not what runs: changing them starts no new job.
SCHEDULING_FIELDS = frozenset({"stopped", "on_demand", "idle_timeout_minutes", "start_timeout_seconds", "restart",
                               "rollover", "update_strategy"})


def action_value(verb: str, when: datetime | None = None) -> str:
    if verb not in ACTION_VERBS:
        raise ValueError(f"unknown action {verb!r}")
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{verb}@{stamp}"


def action_verb(value: str | None) -> str | None:
    verb = (value or "").partition("@")[0]
    return verb if verb in ACTION_VERBS else None


@dataclass(frozen=True)
class Step:
    """What the operator does next about a service: start a job (cancelling a live one first), stop, or nothing."""

    kind: str  # "start", "stop" or "none"
    reason: str = ""
    message: str = ""

    @property
    def starts(self) -> bool:
        return self.kind == "start"


NOTHING = Step("none")


def job_changed(old: AIServiceSpec, new: AIServiceSpec) -> bool:
    """Whether the job would differ: any spec change but those of when it runs."""
    return old.model_dump(exclude=SCHEDULING_FIELDS) != new.model_dump(exclude=SCHEDULING_FIELDS)


def next_step(spec: AIServiceSpec, phase: Phase | None, *, action: str | None = None,
              observed_action: str | None = None, old_spec: AIServiceSpec | None = None) -> Step:
    """The one decision about starting and stopping, from the spec, the phase, the newest action not yet acted
    on, and (on a spec change) the spec before it. phase None: the service never had a status (just created)."""
    live = phase is not None and not phase.finished
    verb = action_verb(action) if action and action != observed_action else None
    if verb == "restart":
        if spec.stopped and not spec.on_demand:
            return Step("none")
        return Step("start", "Restarted", "Restarted on request: a new job")
    if verb == "evict" and live:
        return Step("stop", "Evicted", "Stopped to make room for another service (least recently used)")
    if verb == "start" and not live and (not spec.stopped or spec.on_demand):
        return Step("start", "Started", "Started on request: a new job")
    stop = Step("stop", "Stopped", "Stopped by its spec (spec.stopped)")
    if spec.stopped and old_spec is None:
        # Created stopped, or found live at a restart: an on-demand service may have been woken by a request.
        return stop if phase is None or (live and not spec.on_demand) else NOTHING
    if spec.stopped and not old_spec.stopped and (live or phase is not Phase.stopped):
        return stop
    if phase is None:
        return Step("start", "Submitted", "")
    if old_spec is not None:
        if old_spec.stopped and not spec.stopped and not live:
            return Step("start", "Started", "Started again (spec.stopped is false): a new job")
        if live and job_changed(old_spec, spec):
            return Step("start", "SpecChanged", "The spec changed: a new job")
    return NOTHING


def starts_at_creation(spec: AIServiceSpec, annotations: dict[str, str] | None) -> bool:
    """Whether a service that was just created, and that no handler has seen yet, is submitted at once (at its
    creation event, before kopf's first round trip). Only a plain new service is: one carrying any aifactory
    annotation (an action, a dry run, or kopf's own state copied from another object) is left to the create
    handler, which reads them all."""
    if any("aifactory.io/" in key for key in annotations or {}):
        return False
    return next_step(spec, None).starts


def last_use_resolution(idle_timeout_minutes: int | None) -> float:
    """How late the recorded last use of a service may be: the gateway writes it at most once a minute per
    service, or every quarter of the idle timeout when that is shorter (but not more often than every 5 s)."""
    if not idle_timeout_minutes:
        return 60.0
    return max(5.0, min(60.0, idle_timeout_minutes * 60 / 4))


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def ready_since(conditions: list[dict] | None) -> float | None:
    """When the Ready condition last became True."""
    for cond in conditions or ():
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return parse_rfc3339(cond.get("lastTransitionTime"))
    return None


def idle_for(status: dict, now: float) -> float | None:
    """Seconds since the service's last request (or since it became ready, when that is later)."""
    since = [t for t in (parse_rfc3339(status.get("lastRequest")), ready_since(status.get("conditions")))
             if t is not None]
    return now - max(since) if since else None


def idle_step(spec: AIServiceSpec, phase: Phase, status: dict, now: float) -> Step:
    """Stop a running service that had no request for its idle timeout. The recorded last use may be late by
    last_use_resolution(), so that much more is waited before calling it idle."""
    if phase is not Phase.running or not spec.idle_timeout_minutes:
        return NOTHING
    idle = idle_for(status, now)
    if idle is None or idle < spec.idle_timeout_minutes * 60 + last_use_resolution(spec.idle_timeout_minutes):
        return NOTHING
    return Step("stop", "Idle", f"Stopped after {spec.idle_timeout_minutes} min without a request "
                                f"(idle timeout){'; a request starts it again' if spec.on_demand else ''}")
