"""Shared by the contract tests: the standard job request the constructed submit bodies are written for."""

from __future__ import annotations

import pytest

from aifactory.slurm.jobs import JobRequest

UID = "0f6b7a52-1111-4c1e-9f00-5e2a6f7e0c11"


def make_request(**over) -> JobRequest:
    fields = dict(
        name="ais-default-echo",
        script="#!/bin/bash\nexec python3 -m aifactory.servers.openai_test_server\n",
        environment={"PATH": "/usr/bin:/bin", "GREETING": "a b=c 'q' $HOME"},
        working_directory="/scratch/aifactory",
        standard_output="/scratch/aifactory/aifactory-%j.out",
        standard_error="/scratch/aifactory/aifactory-%j.err",
        comment=f"aifactory uid={UID} stage=submitted",
        partition="gpu", account="proj42", qos="normal", cpus_per_task=4, memory_per_node_mb=16384,
        gpus_per_node=2, time_limit_minutes=60, nodes=1,
    )
    fields.update(over)
    return JobRequest(**fields)



@pytest.fixture
def standard_request() -> JobRequest:
    return make_request()
