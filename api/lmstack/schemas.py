"""LMStack's bodies (seed 004), field for field; a few further fields where Slurm says more (they only add)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aifactory.models import DNS_LABEL_PATTERN


class Detail(BaseModel):
    detail: str


class Deployment(BaseModel):
    id: str = Field(..., description="The AIService's UID: stable for the deployment's whole life.")
    name: str
    backend: str = Field(..., description="The recipe's name (vllm, sglang, tgi, llama-cpp, minilm, ...).")
    model: str | None = Field(None, description="The value of the recipe's model setting.")
    status: str = Field(..., description="pending, downloading, starting, running, stopping, stopped or error.")
    worker_id: str | None = Field(None, description="The node the Slurm job runs on, or is pinned to.")
    container_id: str | None = Field(None, description="The Slurm job id.")
    port: int | None = Field(None, description="The port the service listens on, on its node.")
    created_at: str | None = None
    updated_at: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="The settings given when it was made.")
    # Further words of Slurm's, for people who want to know where a deployment is.
    slurm_state: str | None = None
    message: str | None = Field(None, description="Why the deployment is in this status (Slurm's words).")


class DeploymentList(BaseModel):
    items: list[Deployment]
    total: int


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "minilm-demo", "backend": "minilm", "model": "sentence-transformers/all-MiniLM-L6-v2",
         "config": {}},
        {"name": "llama2-7b", "backend": "vllm", "model": "meta-llama/Llama-2-7b-chat-hf", "worker_id": "gpu-a01",
         "config": {"gpu_memory_utilization": 0.9, "max_model_len": 4096}}]})

    name: str = Field(..., max_length=63, pattern=DNS_LABEL_PATTERN,
                      description="The deployment's name (a DNS label: lower case letters, digits and '-').")
    backend: str = Field(..., min_length=1, description="The recipe that runs it: vllm, sglang, tgi, llama-cpp, "
                                                        "ollama, tei, minilm, openai-echo, ...")
    model: str | None = Field(None, min_length=1, description="Goes to the recipe's model setting.")
    worker_id: str | None = Field(None, min_length=1, description="Run on this node only (GET /api/workers).")
    config: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="The recipe's settings by name (for vLLM gpu_memory_utilization, "
                                          "max_model_len, ...), and cpu, memory, gpu, time_limit for the Slurm job.")


class DeploymentCreated(BaseModel):
    id: str
    name: str
    status: str = "pending"


class Logs(BaseModel):
    logs: str


class GpuDevice(BaseModel):
    name: str
    memory: int | None = Field(None, description="MiB, from the SlurmCluster's gpuTypes; null when not given.")
    in_use: bool = False


class GpuInfo(BaseModel):
    count: int = 0
    devices: list[GpuDevice] = Field(default_factory=list)


class Worker(BaseModel):
    id: str = Field(..., description="The node's name (`<cluster>:<node>` on clusters other than default).")
    name: str
    status: str = Field(..., description="online (the node can take jobs) or offline.")
    gpu_info: GpuInfo
    last_heartbeat: str | None = Field(None, description="The last read in which slurmctld heard from the node.")
    # Slurm's own words about the node.
    cluster: str
    state: str = Field(..., description="Slurm's node state, e.g. IDLE, MIXED, DOWN+NOT_RESPONDING.")
    reason: str | None = Field(None, description="Why the node is down or drained (Slurm's words).")


class WorkerList(BaseModel):
    items: list[Worker]


class SystemInfo(BaseModel):
    cpu_count: int
    memory_total: int = Field(..., description="Bytes.")
    cpu_allocated: int = 0
    memory_free: int | None = Field(None, description="Bytes, as the node's OS reports it.")
    memory_allocated: int = Field(0, description="Bytes held by jobs.")
    boot_time: str | None = None


class WorkerDetail(Worker):
    system_info: SystemInfo
    deployments: list[Deployment] = Field(default_factory=list)


class Container(BaseModel):
    id: str = Field(..., description="The Slurm job id.")
    name: str
    status: str = Field(..., description="created (queued), running or exited.")
    image: str


class ContainerList(BaseModel):
    containers: list[Container]
