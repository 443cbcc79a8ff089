"""What is particular to the SSH transports, against real parts: Debian's sshd on a loopback port (own host key
and authorized key) in front of the local stack's real slurmrestd and real Slurm commands.

Submitting, following and cancelling jobs through the tunnel and with the commands, on every Slurm release,
is in test_bridge.py; here: tokens minted with `scontrol token` over SSH (on each release's login node), the data
plane and log tails through the one connection, a wrong host key refused, a broken connection reopened, a unix
socket on the login node.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from aifactory.devstack.sshd import LocalSshd
from aifactory.models import SecretKeyRef, SlurmClusterSpec
from aifactory.slurm.connect import bridge_for
from aifactory.slurm.errors import SlurmUnreachable
from aifactory.slurm.jobs import JobRequest, JobTags
from aifactory.slurm.ssh import SshConnection, SshTarget


def secrets_of(sshd: LocalSshd, token: str = "") -> dict[str, str]:
    return {"ssh-key": sshd.private_key(), "jwt": token}


def reader(secrets: dict[str, str]):
    async def read(ref: SecretKeyRef) -> str:
        return secrets[ref.name]
    return read


def cluster_spec(stack, sshd: LocalSshd, transport: str, ssh_extra: dict | None = None, slurm=None,
                 **extra) -> SlurmClusterSpec:
    slurm = slurm or stack.slurm
    return SlurmClusterSpec.model_validate({
        "transport": transport,
        "url": slurm.url,  # as seen from the login node
        "user": "root",
        "ssh": {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                "keySecretRef": {"name": "ssh-key"}, "knownHosts": sshd.known_hosts(), **(ssh_extra or {})},
        "cli": {"environment": slurm.env()},
        "partition": slurm.partition,
        "workingDirectory": str(slurm.jobs_dir),
        **extra,
    })


def trivial_job(stack, tag: str, script: str = "echo started-$SLURM_JOB_ID\nsleep 120\n",
                environment: dict | None = None) -> JobRequest:
    workdir = str(stack.slurm.jobs_dir)
    return JobRequest(
        name=f"e2e-ssh-{tag}", script="#!/bin/bash\n" + script,
        environment=environment or {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        working_directory=workdir, standard_output=f"{workdir}/aifactory-%j.out",
        standard_error=f"{workdir}/aifactory-%j.err", comment=JobTags(uid=tag, stage="submitted").render(),
        cpus_per_task=1, memory_per_node_mb=100, time_limit_minutes=5,
    )


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def test_data_plane_reaches_node_ports_through_the_same_connection(stack, login_node):
    # A real listener on the "compute node" side (this machine's loopback), reached only through SSH channels.
    hits: list[str] = []

    async def serve(reader, writer):  # keep-alive, like a real service's HTTP server
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                hits.append(request.split(b"\r\n", 1)[0].decode())
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = cluster_spec(stack, login_node, "ssh-tunnel", tokenSecretRef={"name": "jwt"})
    bridge = await bridge_for(spec, reader(secrets_of(login_node, stack.token)))
    try:
        async with httpx.AsyncClient(transport=bridge.http_transport(), timeout=10) as client:
            for _ in range(3):
                answer = await client.get(f"http://127.0.0.1:{port}/health")
                assert answer.status_code == 200 and answer.text == "ok"
        reader_, writer = await bridge.open_connection("127.0.0.1", port)
        writer.write(b"GET /raw HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader_.readexactly(17)) == b"HTTP/1.1 200 OK\r\n"
        writer.close()
        assert hits == ["GET /health HTTP/1.1"] * 3 + ["GET /raw HTTP/1.1"]
        assert bridge.ssh.connects == 1
    finally:
        await bridge.close()
        server.close()


async def test_a_wrong_host_key_is_refused_with_a_clear_error(stack, login_node, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = f"[127.0.0.1]:{login_node.port} {Path(str(other) + '.pub').read_text().strip()}\n"
    spec = cluster_spec(stack, login_node, "ssh-tunnel", tokenSecretRef={"name": "jwt"})
    spec.ssh.known_hosts = wrong
    bridge = await bridge_for(spec, reader(secrets_of(login_node, stack.token)))
    try:
        with pytest.raises(SlurmUnreachable) as refused:
            await bridge.jobs()
        assert "host key" in str(refused.value) and "known_hosts" in str(refused.value)
        assert f"127.0.0.1:{login_node.port}" in str(refused.value)
    finally:
        await bridge.close()
    # And without any known_hosts there is no way to connect at all.
    with pytest.raises(ValueError, match="known_hosts"):
        SshConnection(SshTarget(host="127.0.0.1", port=login_node.port, user="root",
                                private_key=login_node.private_key(), known_hosts=""))


async def test_minted_tokens_over_ssh_drive_the_tunnel_and_never_reach_the_logs(stack, slurm_release, caplog):
    caplog.set_level(logging.DEBUG)
    s = slurm_release
    spec = cluster_spec(stack, s.login, "ssh-tunnel", token={"mint": {"lifespanSeconds": 120, "renewBeforeSeconds": 30}},
                        slurm=s.slurm)
    bridge = await bridge_for(spec, reader(secrets_of(s.login)))
    try:
        answer = await bridge.jobs()
        assert answer.jobs is not None  # slurmrestd accepted the minted token
        token = await bridge.tokens.token()
        assert token.count(".") == 2  # a JWT
        renewed = await bridge.tokens.renew()
        assert renewed != token or bridge.tokens.minted == 2
        assert (await bridge.jobs()).jobs is not None
        for shown in (repr(bridge), repr(bridge.tokens), str(spec)):
            assert token not in shown and renewed not in shown
        assert token not in caplog.text and renewed not in caplog.text
        assert bridge.ssh.connects == 1
    finally:
        await bridge.close()


async def test_a_broken_connection_is_reopened(stack, login_node):
    spec = cluster_spec(stack, login_node, "ssh-cli")
    bridge = await bridge_for(spec, reader(secrets_of(login_node)))
    try:
        await bridge.jobs()
        (await bridge.ssh.connection()).abort()  # the connection dies under the bridge
        await asyncio.sleep(0.2)
        assert (await bridge.jobs()).jobs is not None
        assert bridge.ssh.connects == 2
    finally:
        await bridge.close()


def test_sshd_refuses_password_and_unknown_keys(login_node, tmp_path):
    # The login node stand-in is a real sshd with key auth only.
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(login_node.known_hosts())
    argv = ["ssh", "-F", "/dev/null", "-p", str(login_node.port), "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
    denied = subprocess.run([*argv, "-i", str(stranger), f"{login_node.user}@127.0.0.1", "true"],
                            capture_output=True, text=True, timeout=20)
    assert denied.returncode == 255 and "Permission denied" in denied.stderr
    allowed = subprocess.run([*argv, "-i", str(login_node.client_key), f"{login_node.user}@127.0.0.1",
                              shlex.join(["echo", "in"])], capture_output=True, text=True, timeout=20)
    assert allowed.returncode == 0 and allowed.stdout.strip() == "in"


async def test_unix_socket_on_the_login_node_through_the_tunnel(stack, login_node, tmp_path):
    # slurmrestd often listens on a unix socket on the login node; a real HTTP listener on one stands in here.
    socket_path = str(tmp_path / "slurmrestd.socket")
    seen: list[bytes] = []

    async def serve(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0])
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n'
                     b'connection: close\r\n\r\n{"jobs":[]}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, socket_path)
    spec = cluster_spec(stack, login_node, "ssh-tunnel", ssh_extra={"slurmrestdSocket": socket_path}, url=None,
                        apiVersion="v0.0.38", tokenSecretRef={"name": "jwt"})
    bridge = await bridge_for(spec, reader(secrets_of(login_node, stack.token)))
    try:
        answer = await bridge.jobs()
        assert answer.jobs == [] and seen == [b"GET /slurm/v0.0.38/jobs HTTP/1.1"]
    finally:
        await bridge.close()
        server.close()
