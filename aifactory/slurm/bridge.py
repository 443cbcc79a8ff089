"""The one interface to "a Slurm cluster" that the operator and the REST API use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from aifactory.slurm.files import ClusterFiles
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.nodes import SlurmNode
from aifactory.slurm.partitions import SlurmPartition


@dataclass(frozen=True)
class JobsAnswer:
    """One poll of the cluster's jobs. `jobs` is None when Slurm said nothing changed since `since`."""

    jobs: list[SlurmJob] | None
    last_update: int | None


class SlurmBridge(Protocol):
    api_version: str
    requests_sent: int  # counted at the transport, for the cost of polling
    files: ClusterFiles  # the cluster's shared storage (registries, training metrics), read like the logs

    async def submit(self, request: JobRequest) -> str: ...

    async def job(self, job_id: str) -> SlurmJob | None: ...

    # tagged_only: aifactory's jobs only (the comment carries its tag); the others are never turned into objects.
    async def jobs(self, since: int | None = None, *, tagged_only: bool = False) -> JobsAnswer: ...

    async def cancel(self, job_id: str) -> None: ...

    async def node_address(self, node: str) -> str: ...

    async def nodes(self) -> list[SlurmNode]: ...  # every node, in one request (read through a NodeCache)

    async def partition(self, name: str | None) -> SlurmPartition: ...  # None: the default partition

    # `sbatch --test-only` where the transport can run Slurm's commands (SSH); None where it cannot.
    async def test_submit(self, request: JobRequest) -> str | None: ...

    async def log_tail(self, job: SlurmJob, lines: int) -> str | None: ...

    # The data plane: how the operator's health probe and the API's prompt proxy reach a service at node:port.
    # Through the SSH connection when the cluster is reached over SSH (compute nodes are rarely routable).
    def http_transport(self) -> httpx.AsyncBaseTransport: ...

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]: ...

    async def close(self) -> None: ...
