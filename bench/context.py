"""What every benchmark gets: the stack's parts, this run's id and sizes, and the repository's paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.stack import BareSlurm, Kube, ServiceWatch, StackAccess

REPO = Path(__file__).resolve().parent.parent
ECHO_RECIPE = "testing/openai-echo"


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; `quick()` is for trying the suite on a shared stack."""

    # B1/B2 services, one after the other; with 10, B1's p50 moved by +-0.4x from run to run on this machine.
    reps: int = 30
    fleet: tuple[int, ...] = (10, 50, 200)  # B3 live services
    window_intervals: int = 5  # B3/B4 counting window, in poll intervals
    scale: int = 1000  # B4 objects
    list_requests: int = 100  # B4 GET /api/v1/services
    settle_timeout: float = 180.0  # B4
    latency_seconds: float = 8.0  # B5, one connection
    throughput_seconds: float = 10.0  # B5, many connections
    connections: int = 16  # B5
    warmup_seconds: float = 3.0  # B5, before each target's runs

    @classmethod
    def quick(cls) -> Sizes:
        return cls(reps=3, fleet=(2, 5), window_intervals=3, scale=20, list_requests=20, settle_timeout=60.0,
                   latency_seconds=2.0, throughput_seconds=3.0, connections=8, warmup_seconds=1.0)


@dataclass
class Context:
    access: StackAccess
    kube: Kube
    slurm: BareSlurm
    watch: ServiceWatch
    run_id: str
    namespace: str
    sizes: Sizes

    def name(self, suffix: str) -> str:
        return f"bench-{self.run_id}-{suffix}"
