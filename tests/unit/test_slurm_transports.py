"""Pure parts of the SSH transports: what the CLI transport sends, how it reads Slurm's answers, token renewal."""

from __future__ import annotations

import base64
import shlex
import subprocess

import pytest

from aifactory.slurm import cli
from aifactory.slurm.cli import dialect_of_answer, parse_sbatch, sbatch_argv, submit_line
from aifactory.slurm.errors import SlurmAuthError, SlurmError, SlurmUnreachable
from aifactory.slurm.jobs import JobRequest, SlurmJob
from aifactory.slurm.logs import combine, output_paths
from aifactory.slurm.ssh import CommandResult, SshConnection, SshTarget
from aifactory.slurm.tokens import MintedToken, StaticToken, parse_scontrol_token

TRICKY = "a b 'c' \"d\" $(touch /tmp/x) `id` ; | & \\ *\nline2"


def request(**over) -> JobRequest:
    fields = dict(name="ais-ns-svc; rm -rf /", script="#!/bin/bash\necho hi\n",
                  environment={"PATH": "/usr/bin", "TRICKY": TRICKY}, working_directory="/scratch/a b",
                  standard_output="/scratch/a b/aifactory-%j.out", standard_error="/scratch/a b/aifactory-%j.err",
                  comment="aifactory uid=u1 stage=submitted", partition="gpu", cpus_per_task=2,
                  memory_per_node_mb=512, gpus_per_node=1, time_limit_minutes=30, nodes=1)
    fields.update(over)
    return JobRequest(**fields)


def test_sbatch_options_from_a_request():
    argv = sbatch_argv(request())
    assert argv[:3] == ["sbatch", "--parsable", "--export=NONE"]
    assert "--job-name=ais-ns-svc; rm -rf /" in argv and "--chdir=/scratch/a b" in argv
    assert {"--partition=gpu", "--cpus-per-task=2", "--mem=512M", "--gres=gpu:1", "--time=30", "--nodes=1",
            "--comment=aifactory uid=u1 stage=submitted"} <= set(argv)
    assert not any(a.startswith(("--account", "--qos")) for a in argv)


SECRET = "s3cr3t-value-that-must-not-show"


def test_the_submit_command_line_carries_no_environment_value():
    # A command line is visible to every user of a shared login node (ps); the environment may hold secrets.
    req = request(environment={"PATH": "/usr/bin", "API_KEY": SECRET, "TRICKY": TRICKY})
    line = submit_line(req)
    for value in (SECRET, TRICKY):
        assert value not in line
        for encoded in (base64.b64encode(value.encode()).decode(), base64.b64encode(f"API_KEY={value}".encode())):
            assert str(encoded)[:12] not in line
    # Nothing became shell syntax, and no --export-file (removed in 23.11, ignored by 26.05).
    assert shlex.split(line) == sbatch_argv(req)
    assert "--export=NONE" in sbatch_argv(req) and not any("export-file" in a for a in sbatch_argv(req))


def test_the_environment_reaches_the_job_byte_for_byte_through_the_script():
    env = {"PATH": "/usr/bin:/bin", "TRICKY": TRICKY, "EMPTY": "", "NEWLINES": "a\n\n", "SECRET": SECRET}
    script = cli.script_with_environment("#!/bin/bash\n# a comment\nprintf '%s|' \"$TRICKY\" \"$EMPTY\" "
                                         "\"$NEWLINES\" \"$SECRET\" \"$SLURM_EXPORT_ENV\"\n", env)
    assert script.startswith("#!/bin/bash\n# a comment\n# The job's environment")
    ran = subprocess.run(["bash", "-c", script], env={}, capture_output=True, text=True, check=True)
    assert ran.stdout == f"{TRICKY}||a\n\n|{SECRET}|ALL|"
    with pytest.raises(SlurmError):
        cli.script_with_environment("#!/bin/bash\n", {"A": "x\0y"})
    with pytest.raises(SlurmError):
        cli.script_with_environment("#!/bin/bash\n", {"A B": "x"})


def test_sbatch_answers():
    assert parse_sbatch(CommandResult(0, "4242\n", "")) == "4242"
    assert parse_sbatch(CommandResult(0, "4243;hpc\n", "")) == "4243"
    with pytest.raises(SlurmError) as rejected:
        parse_sbatch(CommandResult(1, "", "sbatch: error: Batch job submission failed: Invalid partition name "
                                          "specified\n"))
    assert str(rejected.value) == "Batch job submission failed: Invalid partition name specified"
    assert not isinstance(rejected.value, SlurmUnreachable)
    with pytest.raises(SlurmUnreachable):
        parse_sbatch(CommandResult(1, "", "sbatch: error: Batch job submission failed: Unable to contact slurm "
                                          "controller (connect failure)\n"))


def test_squeue_json_shape_is_read_from_its_meta():
    assert dialect_of_answer({"meta": {"plugin": {"type": "openapi/v0.0.38"}}}).version == "v0.0.38"
    assert dialect_of_answer({"meta": {"plugin": {"type": "openapi/slurmctld",
                                                  "data_parser": "data_parser/v0.0.41"}}}).version == "v0.0.41"
    assert dialect_of_answer({"meta": {}, "jobs": [{"job_state": ["RUNNING"]}]}).version == "v0.0.40"
    assert dialect_of_answer({"meta": {}}, pinned="v0.0.39").version == "v0.0.39"


def test_log_paths_and_tails():
    job = SlurmJob(job_id="7", name="n", standard_output="out-%j.txt", standard_error="out-%j.txt",
                   working_directory="/w")
    assert output_paths(job) == [("stdout", "/w/out-7.txt")]
    both = SlurmJob(job_id="7", working_directory="/w")
    assert [p for _, p in output_paths(both)] == ["/w/aifactory-7.out", "/w/aifactory-7.err"]
    assert combine([("stdout", "a\n"), ("stderr", "")]) == "a\n"
    assert combine([("stdout", "a\n"), ("stderr", "b\n")]) == "==> stdout <==\na\n==> stderr <==\nb\n"
    assert combine([("stdout", "")]) is None


class FakeLoginNode:
    """Stands in for the SSH connection's `run` only (the real one is exercised in tests/e2e/test_ssh_transports)."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.commands = []
        self.target = SshTarget(host="login", user="ai", private_key="KEY", known_hosts="x")

    async def run(self, argv, **kw):
        self.commands.append((argv, kw))
        return self.outputs.pop(0)


async def test_minted_tokens_renew_before_expiry_and_never_show():
    now = [1000.0]
    ssh = FakeLoginNode([CommandResult(0, "SLURM_JWT=tok-one\n", ""), CommandResult(0, "SLURM_JWT=tok-two\n", "")])
    tokens = MintedToken(ssh, lifespan=600, renew_before=60, username="svc", environment={"SLURM_CONF": "/c"},
                         clock=lambda: now[0])
    assert await tokens.token() == "tok-one"
    now[0] += 500
    assert await tokens.token() == "tok-one"  # 100 s left, renewal starts at 60
    now[0] += 50
    assert await tokens.token() == "tok-two"
    argv, kw = ssh.commands[0]
    assert argv == ["scontrol", "token", "username=svc", "lifespan=600"] and kw["environment"] == {"SLURM_CONF": "/c"}
    assert "tok-" not in repr(tokens) and "tok-" not in repr(StaticToken("tok-three"))


async def test_a_refused_mint_says_scontrols_words():
    ssh = FakeLoginNode([CommandResult(1, "", "scontrol: error: Token creation is disabled\n")])
    with pytest.raises(SlurmAuthError, match="Token creation is disabled"):
        await MintedToken(ssh).token()
    with pytest.raises(SlurmAuthError):
        parse_scontrol_token("nothing here")


def test_ssh_needs_known_hosts_and_hides_the_key():
    with pytest.raises(ValueError, match="known_hosts"):
        SshConnection(SshTarget(host="h", user="u", private_key="PRIVATE", known_hosts=" "))
    target = SshTarget(host="h", user="u", private_key="PRIVATE", known_hosts="h ssh-ed25519 AAAA")
    assert "PRIVATE" not in repr(target) and "PRIVATE" not in repr(SshConnection(target))


def test_slurmcluster_spec_transports():
    from pydantic import ValidationError

    from aifactory.models import SlurmClusterSpec, Transport

    old = SlurmClusterSpec.model_validate({"url": "http://x:6820", "workingDirectory": "/w",
                                           "tokenSecretRef": {"name": "slurm-jwt"}})
    assert old.transport is Transport.rest and old.token_ref.name == "slurm-jwt"
    ssh = {"host": "login", "user": "ai", "keySecretRef": {"name": "k"}, "knownHosts": "login ssh-ed25519 AAAA"}
    cli = SlurmClusterSpec.model_validate({"transport": "ssh-cli", "workingDirectory": "/w", "ssh": ssh,
                                           "cli": {"environment": {"SLURM_CONF": "/etc/slurm/slurm.conf"}}})
    assert cli.ssh.key_secret_ref.key == "ssh-privatekey" and cli.ssh.port == 22
    for bad, words in [
        ({"workingDirectory": "/w"}, "transport rest needs url"),
        ({"transport": "ssh-tunnel", "workingDirectory": "/w", "ssh": ssh}, "needs url"),
        ({"transport": "ssh-cli", "workingDirectory": "/w",
          "ssh": {k: v for k, v in ssh.items() if k != "knownHosts"}}, "knownHosts"),
        ({"url": "http://x", "workingDirectory": "/w", "token": {"mint": {}}}, "token.mint needs ssh"),
    ]:
        with pytest.raises(ValidationError, match=words):
            SlurmClusterSpec.model_validate(bad)


async def test_a_tenants_job_is_submitted_for_its_slurm_user():
    import httpx

    from aifactory.slurm.rest import RestBridge

    seen: list[str] = []

    def slurmrestd(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers["X-SLURM-USER-NAME"])
        return httpx.Response(200, json={"job_id": 42, "errors": []})

    bridge = RestBridge("http://slurm", "root", StaticToken("t"), api_version="v0.0.38",
                        transport=httpx.MockTransport(slurmrestd))
    assert await bridge.submit(request(user="alice")) == "42"
    assert await bridge.submit(request()) == "42"
    assert seen == ["alice", "root"]
    assert "--uid=alice" in sbatch_argv(request(user="alice"))
    assert not any(a.startswith("--uid") for a in sbatch_argv(request()))
    await bridge.close()


def test_asyncssh_does_not_log_command_lines():
    import logging

    import aifactory.slurm.ssh  # noqa: F401  (sets asyncssh's level when nothing else did)

    assert not logging.getLogger("asyncssh").isEnabledFor(logging.INFO)


class DroppingConnection:
    """An asyncssh connection stand-in whose command sessions die while the command runs."""

    def __init__(self):
        self.commands = []

    def is_closed(self):
        return False

    def abort(self):
        pass

    async def run(self, command, **kw):
        import asyncssh

        self.commands.append(command)
        raise asyncssh.ConnectionLost("connection lost")


async def test_sbatch_is_never_run_twice_after_a_lost_connection():
    # Re-running sbatch after the connection dropped under it could submit the job twice.
    from aifactory.slurm.cli import CliBridge
    from aifactory.slurm.errors import SubmitUncertain

    ssh = SshConnection(SshTarget(host="login", user="ai", private_key="KEY", known_hosts="login ssh-ed25519 AAAA"))
    dropping = DroppingConnection()

    async def connection():
        return dropping

    ssh.connection = connection
    with pytest.raises(SubmitUncertain):
        await CliBridge(ssh).submit(request())
    assert len(dropping.commands) == 1
    # Reading commands are run again once on a fresh connection, as before.
    with pytest.raises(SlurmUnreachable) as lost:
        await CliBridge(ssh).jobs()
    assert not isinstance(lost.value, SubmitUncertain) and len(dropping.commands) == 3


@pytest.mark.parametrize("answer,uncertain", [
    ("read-timeout", True), ("504", True), ("502", True), ("connect-error", False), ("connect-timeout", False),
])
async def test_a_rest_submit_whose_answer_is_lost_is_uncertain(answer, uncertain):
    import httpx

    from aifactory.slurm.errors import SubmitUncertain
    from aifactory.slurm.rest import RestBridge

    def respond(req):
        if answer == "read-timeout":
            raise httpx.ReadTimeout("timed out", request=req)
        if answer == "connect-error":
            raise httpx.ConnectError("refused", request=req)
        if answer == "connect-timeout":
            raise httpx.ConnectTimeout("timed out", request=req)
        return httpx.Response(int(answer), text="Gateway Timeout")

    bridge = RestBridge("http://slurmrestd.test", "root", StaticToken("t"), api_version="v0.0.42",
                        transport=httpx.MockTransport(respond))
    with pytest.raises(SlurmUnreachable) as lost:
        await bridge.submit(request())
    assert isinstance(lost.value, SubmitUncertain) == uncertain
    with pytest.raises(SlurmUnreachable) as polled:  # reading calls are never "uncertain"
        await bridge.jobs()
    assert not isinstance(polled.value, SubmitUncertain)
