"""Seed 002's request and response bodies, and the one table from the core's words to the face's."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from aifactory.api.registries import MIB, Entry
from aifactory.api.trainings import state_of
from aifactory.models import EpochMetrics, Hyperparameters, TrainingRunSpec
from aifactory.training import LogEntry, session_id


def _python_named(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of an aifactory model under their Python names (seed 002 says learning_rate, not learningRate),
    with the same types, ranges and descriptions."""
    out = {}
    for name, info in model.model_fields.items():
        field = info.__class__.merge_field_infos(info, alias=None, validation_alias=None, serialization_alias=None)
        field.alias_priority = None
        out[name] = (info.annotation, field)
    return out


class ErrorDetail(BaseModel):
    detail: Any = Field(..., description="What went wrong")


TrainingConfig = create_model(
    "TrainingConfig",
    __config__=ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "model_architecture": "mlp", "dataset_name": "digits", "learning_rate": 0.001, "batch_size": 32,
        "epochs": 5, "optimizer": "adam", "loss_function": "cross_entropy"}]}),
    model_architecture=(str, Field(..., min_length=1, description=TrainingRunSpec.model_fields["architecture"].description)),
    dataset_name=(str, Field(..., min_length=1, description=TrainingRunSpec.model_fields["dataset"].description)),
    **_python_named(Hyperparameters),
)


class StartResponse(BaseModel):
    session_id: str
    status: str
    message: str


class MessageResponse(BaseModel):
    message: str


class SessionStatus(BaseModel):
    session_id: str
    state: str = Field(..., description="queued, running, completed, failed or stopped")
    current_epoch: int | None = None
    total_epochs: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    error_message: str | None = None

    @classmethod
    def of(cls, obj: dict) -> "SessionStatus":
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        state = state_of(obj)
        current = status.get("currentEpoch")
        return cls(session_id=session_id(obj["metadata"]["name"]), state=state.value,
                   current_epoch=current if current is not None or state.value == "queued" else 0,
                   total_epochs=((spec.get("hyperparameters") or {}).get("epochs")),
                   start_time=status.get("startTime"), end_time=status.get("endTime"),
                   error_message=status.get("errorMessage"))


class TrainingMetrics(BaseModel):
    session_id: str
    epoch: int
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    timestamp: str | None = None

    @classmethod
    def of(cls, session: str, metrics: EpochMetrics) -> "TrainingMetrics":
        return cls(session_id=session, **metrics.model_dump())


class LogLine(BaseModel):
    session_id: str
    timestamp: str | None
    level: str
    message: str

    @classmethod
    def of(cls, session: str, entry: LogEntry) -> "LogLine":
        return cls(session_id=session, timestamp=entry.timestamp, level=entry.level, message=entry.message)


class SessionConfig(BaseModel):
    model_architecture: str
    dataset_name: str
    learning_rate: float
    batch_size: int
    epochs: int
    optimizer: str | None = None
    loss_function: str | None = None


class SessionInfo(BaseModel):
    session_id: str
    config: SessionConfig
    status: SessionStatus
    created_at: str | None

    @classmethod
    def of(cls, obj: dict) -> "SessionInfo":
        spec = obj.get("spec") or {}
        hp = spec.get("hyperparameters") or {}
        config = SessionConfig(model_architecture=spec.get("architecture", ""), dataset_name=spec.get("dataset", ""),
                               learning_rate=hp.get("learningRate", 0), batch_size=hp.get("batchSize", 0),
                               epochs=hp.get("epochs", 0), optimizer=hp.get("optimizer"),
                               loss_function=hp.get("lossFunction"))
        return cls(session_id=session_id(obj["metadata"]["name"]), config=config, status=SessionStatus.of(obj),
                   created_at=obj["metadata"].get("creationTimestamp"))


def utc(when: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) if when else None


def size_mb(size: int) -> float:
    return round(size / MIB, 3)


class ModelInfo(BaseModel):
    name: str
    size_mb: float
    created_at: str | None
    file_path: str

    @classmethod
    def of(cls, entry: Entry) -> "ModelInfo":
        return cls(name=entry.name, size_mb=size_mb(entry.size), created_at=utc(entry.modified),
                   file_path=entry.file_path)


class DatasetInfo(BaseModel):
    name: str
    size_mb: float
    sample_count: int | None
    format: str | None
    dimensions: str | None
    created_at: str | None
    file_path: str

    @classmethod
    def of(cls, entry: Entry) -> "DatasetInfo":
        return cls(name=entry.name, size_mb=size_mb(entry.size), sample_count=entry.sample_count,
                   format=entry.format, dimensions=entry.dimensions, created_at=utc(entry.modified),
                   file_path=entry.file_path)


class UploadResponse(BaseModel):
    message: str
    name: str
    size_mb: float


class SystemInfo(BaseModel):
    """Seed 002's system info, from Slurm: the training cluster's nodes together (CPU load and memory as
    `scontrol show node` reports them, GPUs from GRES) and the disk of the tenant's storage area."""

    cpu_usage_percent: float | None = Field(..., description="The nodes' load average over their CPUs, in %")
    memory_used_mb: int | None = Field(..., description="Memory in use on the nodes (RealMemory - FreeMem)")
    memory_total_mb: int
    memory_percent: float | None
    disk_free_gb: float | None
    disk_total_gb: float | None
    gpu_available: bool
    gpu_usage_percent: float | None = Field(None, description="GPUs held by jobs, in % of the nodes' GPUs")
    gpu_memory_used_mb: int | None = None
    gpu_memory_total_mb: int | None = None
    timestamp: str | None
    nodes: int = Field(..., description="Nodes of the training cluster")
    cpu_count: int = Field(..., description="Their CPUs")
    cpus_allocated: int = Field(..., description="CPUs held by jobs")
    memory_allocated_mb: int = Field(..., description="Memory held by jobs")

    @classmethod
    def of(cls, load) -> SystemInfo:
        used = load.memory_mb - load.memory_free_mb if load.memory_free_mb is not None else None
        gb = 1 << 30
        return cls(
            cpu_usage_percent=round(min(100.0, 100 * load.cpu_load / load.cpus), 1)
            if load.cpu_load is not None and load.cpus else None,
            memory_used_mb=used, memory_total_mb=load.memory_mb,
            memory_percent=round(100 * used / load.memory_mb, 1) if used is not None and load.memory_mb else None,
            disk_free_gb=round(load.disk_free / gb, 1) if load.disk_free is not None else None,
            disk_total_gb=round(load.disk_total / gb, 1) if load.disk_total is not None else None,
            gpu_available=load.gpus > 0,
            gpu_usage_percent=round(100 * load.gpus_used / load.gpus, 1) if load.gpus else None,
            gpu_memory_used_mb=load.gpu_memory_used_mb, gpu_memory_total_mb=load.gpu_memory_mb,
            timestamp=utc(load.read_at), nodes=load.nodes, cpu_count=load.cpus, cpus_allocated=load.cpus_allocated,
            memory_allocated_mb=load.memory_allocated_mb)
