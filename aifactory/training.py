"""The pure core of training runs: (spec, recipe, cluster, tenant) -> job request; (job, metrics) -> status;
which queued runs a tenant's limit admits; session ids; the metrics and log lines the trainer writes.

No I/O here (a sibling of aifactory.lifecycle); the operator's handlers and the API's verbs feed these functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

from aifactory.lifecycle import FAILURE_WORDS, ServiceRef, SpecError, stamped
from aifactory.lifecycle import job_request as service_job_request
from aifactory.models import (
    AIServiceSpec, Condition, EpochMetrics, Recipe, SlurmClusterSpec, TenantSpec, TrainingRunSpec, TrainingState,
)
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.storage import datasets_dir, model_path, tenant_area
from aifactory.trainer import BUILTIN_ARCHITECTURES, BUILTIN_DATASETS, CONFIG_VAR, METRICS_FILE

# torchvision's classification models (torchvision.models.list_models(torchvision.models)): accepted by name;
# the job says so when its Python has no torchvision.
TORCHVISION_ARCHITECTURES = frozenset({
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet161",
    "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf",
    "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t",
    "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
})
ARCHITECTURES = frozenset(BUILTIN_ARCHITECTURES) | TORCHVISION_ARCHITECTURES
SESSION_PREFIX = "sess_"
# When the API was asked for a run (Unix seconds with microseconds): the queue's order within one second.
REQUESTED_AT = "aifactory.io/requested-at"
RUN_NAME_PREFIX = "sess-"


# ---- session ids ----------------------------------------------------------------------------------------------

def session_id(run_name: str) -> str:
    """Seed 002's id of the TrainingRun named so: `sess-3f9c...` is `sess_3f9c...`. Kubernetes names have no `_`,
    so every `-` becomes `_`, one to one."""
    return run_name.replace("-", "_")


def run_name(session: str) -> str | None:
    """The TrainingRun name of a session id, or None when no name maps to it."""
    name = session.replace("_", "-")
    if "-" in session or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 253:
        return None
    return name


def default_model_name(spec: TrainingRunSpec, name: str) -> str:
    return spec.model_name or f"{spec.architecture}_{spec.dataset}_{session_id(name)}"


def known_architecture(name: str) -> bool:
    return name in ARCHITECTURES


def builtin_dataset(name: str) -> bool:
    return name in BUILTIN_DATASETS


# ---- the job --------------------------------------------------------------------------------------------------

def job_request(run: ServiceRef, spec: TrainingRunSpec, recipe: Recipe, cluster: SlurmClusterSpec,
                tenant: TenantSpec | None = None) -> JobRequest:
    """The Slurm job that trains this run: the recipe's command with the run's settings as JSON in its
    environment, the tenant's registry area bound into the container."""
    if not known_architecture(spec.architecture):
        raise SpecError(f"Architecture '{spec.architecture}' not found: use mlp, cnn or a torchvision model name")
    if cluster.storage is None:
        raise SpecError(f"SlurmCluster {spec.cluster} has no storage: training runs keep their models in the "
                        "registry on the cluster's shared storage (spec.storage.path)")
    area = tenant_area(cluster.storage, run.namespace)
    settings = {
        "sessionId": session_id(run.name),
        "architecture": spec.architecture,
        "dataset": spec.dataset,
        "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
        "modelName": default_model_name(spec, run.name),
        "modelPath": model_path(cluster.storage, run.namespace, default_model_name(spec, run.name)),
        "datasetDir": datasets_dir(cluster.storage, run.namespace),
    }
    as_service = AIServiceSpec(recipe=recipe.path, env={CONFIG_VAR: json.dumps(settings, separators=(",", ":"))},
                               resources=spec.resources, cluster=spec.cluster, partition=spec.partition,
                               account=spec.account, qos=spec.qos)
    with_area = recipe.model_copy(update={"binds": [*recipe.binds, area]})
    return service_job_request(run, as_service, with_area, cluster, tenant, kind="training")


def metrics_path(working_directory: str, job_id: str) -> str:
    """Where the trainer of this job appends its metrics (it runs in the cluster's working directory)."""
    return str(PurePosixPath(working_directory) / METRICS_FILE.format(job=job_id))


def parse_metrics(text: str | None) -> list[EpochMetrics]:
    """The epochs in a metrics file, in order; a line being written (not yet whole) is left out."""
    out = []
    for line in (text or "").splitlines():
        try:
            out.append(EpochMetrics.model_validate(json.loads(line)))
        except ValueError:
            continue
    return out


# ---- the state ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Observed:
    state: TrainingState
    reason: str
    message: str
    slurm_state: str = ""
    node: str | None = None
    start_time: str | None = None
    end_time: str | None = None


def rfc3339(epoch: int | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def observe(job: SlurmJob, error_line: str | None = None) -> Observed:
    """The state of a run whose job Slurm reports so. `error_line`: the trainer's last ERROR log line, if any."""
    state = job.state
    shown = state if not job.flags else f"{state},{','.join(job.flags)}"
    node = job.batch_host or job.nodes or None
    why = job.reason if job.reason and job.reason != "None" else ""
    if job.vanished and not job.finished:
        return Observed(TrainingState.failed, "JobLost", "Slurm no longer knows the job; its end state is unknown",
                        shown, node)
    if state in ("PENDING", "REQUEUED", "SUSPENDED"):
        return Observed(TrainingState.queued, "Queued", f"Queued by Slurm: {why or 'waiting to be scheduled'}",
                        shown)
    started = rfc3339(job.start_time)
    if not job.finished and state in ("RUNNING", "CONFIGURING", "COMPLETING"):
        return Observed(TrainingState.running, "Training", f"Training on {node or 'its node'}", shown, node, started)
    ended = rfc3339(job.end_time)
    if state == "COMPLETED":
        return Observed(TrainingState.completed, "Completed", "Training completed; the model is in the registry",
                        shown, node, started, ended)
    if state == "CANCELLED":
        return Observed(TrainingState.stopped, "Stopped",
                        f"Stopped: the Slurm job was cancelled{f' ({why})' if why else ''}", shown, node, started,
                        ended)
    if state == "FAILED":
        how = f"exit code {job.exit_code}" if not job.signal else f"signal {job.signal}"
        message = error_line or f"The job failed with {how}{f', Slurm reason: {why}' if why else ''}"
        return Observed(TrainingState.failed, "JobFailed", message, shown, node, started, ended)
    if state in FAILURE_WORDS:
        message = FAILURE_WORDS[state].capitalize() + (f" (Slurm reason: {why})" if why else "")
        return Observed(TrainingState.failed, state.title().replace("_", ""), message, shown, node, started, ended)
    return Observed(TrainingState.queued, "Unknown", f"Slurm reports state {shown}", shown, node)


def conditions(state: TrainingState, reason: str, message: str, generation: int | None,
               previous: list[dict] | None, extra: list[Condition] = ()) -> list[dict]:
    """Like an AIService's: Ready (the model is trained), and the kstatus pair Reconciling and Stalled."""
    wanted = [
        Condition(type="Ready", status="True" if state is TrainingState.completed else "False", reason=reason,
                  message=message),
        Condition(type="Reconciling", status="False" if state.finished else "True", reason=reason,
                  message="" if state.finished else message),
        Condition(type="Stalled", status="True" if state is TrainingState.failed else "False", reason=reason,
                  message=message if state is TrainingState.failed else ""),
        *extra,
    ]
    return stamped(wanted, generation, previous)


# ---- the tenant's limit ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """One run of a tenant, as far as its limit cares."""

    name: str
    created: str  # creationTimestamp: the queue's order
    holding: bool  # has a Slurm job that has not ended (or is being submitted)
    waiting: bool  # wants a job and has none


def admitted(name: str, slots: list[Slot], limit: int | None) -> tuple[bool, str]:
    """Whether the run `name` may submit its job now, and why not: the oldest waiting runs go first, as long as
    fewer than `limit` runs of the tenant hold a job."""
    if limit is None:
        return True, ""
    holding = sum(1 for s in slots if s.holding and s.name != name)
    queue = sorted((s for s in slots if s.waiting or s.name == name), key=lambda s: (s.created, s.name))
    ahead = next((i for i, s in enumerate(queue) if s.name == name), len(queue))
    if holding + ahead < limit:
        return True, ""
    return False, (f"Waiting for a free training slot: {holding} of the tenant's {limit} run(s) at once hold a "
                   f"Slurm job, {ahead} queued ahead")


# ---- the trainer's log ----------------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")


@dataclass(frozen=True)
class LogEntry:
    timestamp: str | None
    level: str
    message: str


def log_entries(parts: list[tuple[str, str]], default_time: str | None) -> list[LogEntry]:
    """Entries from the job's output files ((label, text) of stdout and stderr). The trainer's lines carry their
    time and level; any other line (Python's warnings, a traceback, the job script's) takes the time before it,
    and the level ERROR on stderr, INFO on stdout."""
    entries: list[LogEntry] = []
    for label, text in parts:
        when = default_time
        for line in (text or "").splitlines():
            if not line.strip():
                continue
            found = _LOG_LINE.match(line)
            if found:
                when = found.group(1)
                entries.append(LogEntry(when, found.group(2), found.group(3)))
            else:
                entries.append(LogEntry(when, "ERROR" if label == "stderr" else "INFO", line))
    return sorted(entries, key=lambda e: e.timestamp or "")  # stable: each file's order is kept


def last_error(parts: list[tuple[str, str]]) -> str | None:
    """The trainer's last ERROR line: the words a failed run reports."""
    found = None
    for _, text in parts:
        for line in (text or "").splitlines():
            match = _LOG_LINE.match(line)
            if match and match.group(2) == "ERROR":
                found = match.group(3)
    return found
