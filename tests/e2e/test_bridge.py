"""The Slurm bridge against every real Slurm release of the stack (22.05, 24.11, 26.05) and each transport:
slurmrestd directly (in every API version the release serves), through an SSH tunnel to the login node, and the
Slurm commands over SSH. The bridges are built by `bridge_for` from the release's real SlurmCluster specs and
real Secrets, as the operator builds them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import replace

import pytest

from aifactory.devstack.slurm import RELEASES
from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.slurm.cli import CliBridge
from aifactory.slurm.connect import bridge_for
from aifactory.slurm.errors import SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest, JobTags
from aifactory.slurm.rest import RestBridge
from aifactory.slurm.tokens import StaticToken
from test_ssh_transports import until

# Values that would be shell syntax if they were ever spliced into a command line.
TRICKY = "a b 'c' \"d\" $(touch /tmp/aifactory-pwned) `id` ; | & \\ *\nsecond line\n"


def read_secrets(stack):
    """Secrets read from the real Kubernetes API, as the operator reads them."""
    async def read(ref: SecretKeyRef) -> str:
        secret = json.loads(stack.kubectl("get", "secret", ref.name, "-n", ref.namespace or "aifactory-system",
                                          "-o", "json").stdout)
        return base64.b64decode(secret["data"][ref.key]).decode().strip()
    return read


def cluster_spec(stack, name: str, **over) -> SlurmClusterSpec:
    spec = json.loads(stack.kubectl("get", "slurmcluster", name, "-o", "json").stdout)["spec"]
    return SlurmClusterSpec.model_validate({**spec, **over})


def job_request(s, tag: str, script: str, **over) -> JobRequest:
    workdir = str(s.slurm.jobs_dir)
    return JobRequest(
        name=f"e2e-bridge-{tag[:8]}", script="#!/bin/bash\n" + script,
        environment={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TRICKY": TRICKY},
        working_directory=workdir, standard_output=f"{workdir}/aifactory-%j.out",
        standard_error=f"{workdir}/aifactory-%j.err", comment=JobTags(uid=tag, stage="submitted").render(),
        cpus_per_task=1, memory_per_node_mb=100, time_limit_minutes=5, **over)


def transports():
    """(transport, pinned API version): slurmrestd directly in each version a release serves, once through the
    tunnel (version detected) and once with the commands."""
    cases = []
    for release, facts in RELEASES.items():
        for version in facts.api_versions:
            if version >= "v0.0.38":
                cases.append(pytest.param(release, "rest", version, id=f"slurm-{release}-rest-{version}"))
        cases.append(pytest.param(release, "ssh-tunnel", None, id=f"slurm-{release}-ssh-tunnel"))
        cases.append(pytest.param(release, "ssh-cli", None, id=f"slurm-{release}-ssh-cli"))
    return cases


@pytest.mark.slurm_cases(["transport", "pinned"], transports())
async def test_submit_follow_list_read_logs_and_cancel(stack, slurm_release, transport, pinned):
    s = slurm_release
    spec = cluster_spec(stack, s.clusters[transport], **({"apiVersion": pinned} if pinned else {}))
    bridge = await bridge_for(spec, read_secrets(stack))
    assert isinstance(bridge, CliBridge if transport == "ssh-cli" else RestBridge)
    tag = uuid.uuid4().hex
    script = ('printf "%s" "$TRICKY" > "env-$SLURM_JOB_ID.txt"\n'
              "echo started-$SLURM_JOB_ID\nsleep 120\n")
    ids: list[str] = []
    try:
        job_id = await bridge.submit(job_request(s, tag, script))
        ids.append(job_id)
        failing = await bridge.submit(job_request(s, tag + "f", "echo failing\nexit 3\n"))
        ids.append(failing)
        assert job_id.isdigit() and failing.isdigit()
        if transport == "ssh-cli":
            assert bridge.api_version.startswith("cli")
        else:
            assert bridge.api_version == (pinned or s.api_version)  # pinned, or detected from /openapi/v3

        async def running():
            job = await bridge.job(job_id)
            return job if job and job.state == "RUNNING" else None
        job = await until(running, 120, f"job {job_id} running")
        assert job.tags.uid == tag and job.batch_host == s.slurm.node_name and job.name.startswith("e2e-bridge-")

        # The environment reached the job byte for byte, whatever the transport.
        env_file = s.slurm.jobs_dir / f"env-{job_id}.txt"
        await until(lambda: asyncio.sleep(0, env_file.exists()), 30, "the job's env file")
        assert env_file.read_text() == TRICKY
        env_file.unlink()
        assert f"started-{job_id}" in await until(lambda: bridge.log_tail(job, 5), 30, "the job's output")
        assert await bridge.node_address(s.slurm.node_name) == "127.0.0.1"

        # A job that ended is still found, with its exit code (the CLI's squeue filters finished jobs by default).
        async def ended():
            j = await bridge.job(failing)
            return j if j and j.finished else None
        done = await until(ended, 60, f"job {failing} to end")
        assert (done.state, done.exit_code) == ("FAILED", 3)

        listed = await bridge.jobs()
        assert {job_id, failing} <= {j.job_id for j in listed.jobs}
        if transport != "ssh-cli":
            # Nothing changes while the job sleeps: "unchanged" (304 on 22.05, 200 with no jobs from 24.11 on).
            for _ in range(5):
                await asyncio.sleep(1.1)
                since = int(time.time())
                await asyncio.sleep(1.1)
                unchanged = await bridge.jobs(since=since)
                if unchanged.jobs is None:
                    break
            assert unchanged.jobs is None, f"an unchanged cluster answered {len(unchanged.jobs)} jobs"

        await bridge.cancel(job_id)

        async def cancelled():
            j = await bridge.job(job_id)
            return j if j and j.finished else None
        assert (await until(cancelled, 60, "cancelled")).state == "CANCELLED"
        assert s.state(job_id) == "CANCELLED"  # slurmrestd itself agrees
        await bridge.cancel(job_id)  # cancelling an ended job is fine
        assert await bridge.job("99999999") is None

        with pytest.raises(SlurmError) as rejected:
            await bridge.submit(replace(job_request(s, tag + "r", "true\n"), partition="no-such-partition"))
        assert "Invalid partition name specified" in str(rejected.value)
        assert not isinstance(rejected.value, SlurmUnreachable)
    finally:
        for each in ids:
            await bridge.cancel(each)
        await bridge.close()


@pytest.mark.parametrize("transport_", ["rest", "ssh-tunnel"])
async def test_a_refused_token_is_renewed_once_and_then_works(stack, slurm_release, transport_):
    # slurmrestd refuses a bad or expired token with 401 (22.05) or 511 (24.11 on); either way the bridge
    # reads the Secret again once and retries.
    s = slurm_release
    spec = cluster_spec(stack, s.clusters[transport_])
    bridge = await bridge_for(spec, read_secrets(stack))
    reads = []

    async def reload() -> str:
        reads.append(1)
        return s.token

    bridge.tokens = StaticToken("eyJhbGciOiJIUzI1NiJ9.expired.token", reload)
    try:
        answer = await bridge.jobs()
        assert answer.jobs is not None and reads == [1]
    finally:
        await bridge.close()
