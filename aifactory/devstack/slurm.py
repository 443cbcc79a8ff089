"""A local one-node Slurm cluster with slurmrestd, on loopback, for development and e2e tests.

Slurm 22.05 comes from the host's own Debian packages and is the default (the demo). Slurm 24.11 and 26.05 run
from Debian chroots (``aifactory.devstack.chroot``) next to it, each with its own munged, ports and an
unprivileged slurmrestd; their Slurm commands run inside the chroot.

Everything a cluster writes lives under ``state_dir()/slurm/`` (``slurm-<release>/`` for the chroot ones); the
config is not in /etc/slurm, so the Slurm CLI tools need ``SLURM_CONF`` (see ``LocalSlurm.env()``). The daemons
run in the foreground under ``ManagedProcess`` so their pids are known exactly and ``down()`` stops only those.

Facts found on Slurm 22.05.8 (Debian 12):
- A batch job gets SLURM_CONF=<slurmd's config path> from slurmstepd, even when the submitted environment has
  none (or another value: it is overwritten), so ``scontrol`` inside a job finds this cluster by itself.
- slurmstepd is started by slurmd in a new session and reparented to init, but keeps slurmd's environment,
  so the stack's stepds are recognised by ``SLURM_CONF=<our conf>`` in /proc/<pid>/environ.
- GET /jobs has no ``last_update`` in v0.0.38: a poller passes its own clock as update_time and gets 304 with
  an empty body when slurmctld's last job change is older than that second, else 200 with every job.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dataclasses import dataclass

from aifactory.devstack.chroot import REST_USER, ChrootMount, ensure_chroot
from aifactory.devstack.process import ManagedProcess, dev_port, pid_alive, state_dir, wait_until

PACKAGES = "slurmctld slurmd slurmrestd slurm-client munge slurm-wlm-jwt-plugin"
API_VERSION = "v0.0.38"  # the default (22.05) cluster's


@dataclass(frozen=True)
class SlurmRelease:
    """What differs between the Slurm releases the local stack runs."""

    name: str
    api_versions: tuple[str, ...]  # the job APIs its slurmrestd serves, oldest first
    port_base: int  # slurmctld; slurmd +1, a login node's sshd +2, slurmrestd +3
    in_chroot: bool = True
    rest_plugins: str | None = None  # slurmrestd -s
    switch_type: bool = False  # 26.05 has no switch/none

    @property
    def api_version(self) -> str:
        return self.api_versions[-1]

    @property
    def tag(self) -> str:
        """For names of files, processes and Kubernetes objects: "24-11"."""
        return self.name.replace(".", "-")


RELEASES = {
    # The dbv0.0.3x plugins abort 22.05's slurmrestd when there is no slurmdbd, so load only the slurmctld ones.
    "22.05": SlurmRelease("22.05", ("v0.0.36", "v0.0.37", "v0.0.38"), 16817, in_chroot=False,
                          rest_plugins="openapi/v0.0.36,openapi/v0.0.37,openapi/v0.0.38", switch_type=True),
    # Without -s, 24.11's slurmrestd loads the slurmdbd plugin too and dies ("Failure loading plugin path bindings").
    "24.11": SlurmRelease("24.11", ("v0.0.40", "v0.0.41", "v0.0.42"), 16827, rest_plugins="openapi/slurmctld",
                          switch_type=True),
    "26.05": SlurmRelease("26.05", ("v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"), 16837),
}
DEFAULT_RELEASE = "22.05"

# Binary -> the Debian package that ships it; checked before anything is started.
_BINARIES = {
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurmrestd": "slurmrestd",
    "sinfo": "slurm-client",
    "squeue": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "munged": "munge",
    "munge": "munge",
    "unmunge": "munge",
    "mungekey": "munge",
}
_JWT_PLUGIN_GLOB = "*/slurm-wlm/auth_jwt.so"

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN_DIR = Path("/run/munge")

Progress = Callable[[str], None]


def _find(binary: str) -> str | None:
    # sbin is not always on PATH for non-login shells.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(binary, path=path)


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal not found in /proc/meminfo")


def _cpu_count() -> int:
    # Like nproc: the CPUs this process may run on.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


class LocalSlurm:
    """A one-node Slurm cluster (slurmctld, slurmd, slurmrestd, and munged if none runs) on 127.0.0.1.

    `release` "22.05" is the host's own Slurm; "24.11" and "26.05" run from their chroots.
    """

    def __init__(self, release: str = DEFAULT_RELEASE, *, cluster_name: str | None = None,
                 slurmctld_port: int | None = None, slurmd_port: int | None = None, rest_host: str = "127.0.0.1",
                 rest_port: int | None = None, partition: str = "debug", node_name: str | None = None,
                 base_dir: Path | None = None, def_mem_per_cpu_mb: int = 1024) -> None:
        if release not in RELEASES:
            raise ValueError(f"Slurm {release} is not one the local stack runs ({', '.join(RELEASES)})")
        self.release = RELEASES[release]
        host = not self.release.in_chroot
        base = self.release.port_base
        self.slurmctld_port = slurmctld_port or dev_port(base)
        self.slurmd_port = slurmd_port or dev_port(base + 1)
        self.login_port = dev_port(base + 2)
        self.rest_port = rest_port or dev_port(base + 3)
        # Stacks side by side (a port offset) are separate clusters with names of their own.
        offset = self.slurmctld_port - base
        self.cluster_name = cluster_name or f"aifactory{'' if host else self.release.tag.replace('-', '')}{offset or ''}"
        self.rest_host = rest_host
        self.partition = partition
        self.def_mem_per_cpu_mb = def_mem_per_cpu_mb
        self.hostname = _short_hostname()
        # Each cluster's node has a name of its own; the chroot ones run on this same host (NodeHostname).
        self.node_name = node_name or (self.hostname if host else f"{self.hostname}-{self.release.tag}")
        self.base_dir = base_dir or state_dir() / ("slurm" if host else f"slurm-{release}")
        suffix = "" if host else f"-{release}"
        self._munged = ManagedProcess(f"munged{suffix}")
        self._ctld = ManagedProcess(f"slurmctld{suffix}")
        self._slurmd = ManagedProcess(f"slurmd{suffix}")
        self._rest = ManagedProcess(f"slurmrestd{suffix}")
        project = Path(__file__).resolve().parents[2]
        self.chroot = None if host else ChrootMount(release, state_dir() / f"chroot-{release}", [self.base_dir],
                                                     project)

    # ---- paths and environment -------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.base_dir / "slurm.conf"

    @property
    def jwt_key_path(self) -> Path:
        return self.base_dir / "jwt_hs256.key"

    @property
    def jobs_dir(self) -> Path:
        return self.base_dir / "jobs"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    @property
    def url(self) -> str:
        return f"http://{self.rest_host}:{self.rest_port}"

    def env(self) -> dict[str, str]:
        """What the Slurm CLI tools need in their environment to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf_path)}

    def job_environment(self) -> dict[str, str]:
        """A minimal, non-empty environment for a batch job submitted over REST (v0.0.38 refuses an empty one).

        SLURM_CONF is included for clarity only; slurmstepd sets it to its own config path anyway.
        """
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            **self.env(),
        }

    def _tool_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def command(self, argv: list[str], user: str | None = None) -> list[str]:
        """A Slurm (or munge) command of this cluster's release: inside its chroot for the newer ones."""
        if self.chroot is not None:
            return self.chroot.command(argv, user=user)
        return argv if user is None else ["runuser", "-u", user, "--", *argv]

    def _run(self, argv: list[str], timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.command(argv)
        proc = subprocess.run(argv, env=self._tool_env(), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    # ---- configuration ---------------------------------------------------------------------

    def _real_memory_mb(self) -> int:
        # A bit below physical memory, so slurmd never finds less than configured and drains the node.
        total = _mem_total_mb()
        return max(256, total - max(512, total // 20))

    def _memory_enforcement(self) -> list[str]:
        """Memory limits without cgroups, on the host's 22.05: slurmstepd reads /proc every 2 s and kills a step
        over its --mem; the job ends FAILED (signal 9) and its output says "exceeded memory limit". The chroot
        releases keep jobacct_gather/none: with it, their slurmctld died at start re-reading its config
        ("AuthType change requires restart of all Slurm daemons")."""
        if self.release.in_chroot:
            return ["JobAcctGatherType=jobacct_gather/none"]
        return ["JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherParams=OverMemoryKill",
                "JobAcctGatherFrequency=task=2"]

    def render_conf(self) -> str:
        b = self.base_dir
        lines = [
            "# Written by aifactory.devstack.slurm; rewritten on every `up`.",
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={self.slurmctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={b / 'state'}",
            f"SlurmdSpoolDir={b / 'spool'}",
            f"SlurmctldPidFile={b / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={b / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            # An empty plugstack next to slurm.conf, so the host's /etc/slurm/plugstack.conf is not read.
            f"PlugStackConfig={b / 'plugstack.conf'}",
            "AuthType=auth/munge",
            "AuthAltTypes=auth/jwt",
            f"AuthAltParameters=jwt_key={self.jwt_key_path}",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            # Without it a job that names no memory is given the whole node, and jobs would run one at a time.
            f"DefMemPerCPU={self.def_mem_per_cpu_mb}",
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            *self._memory_enforcement(),
            "AccountingStorageType=accounting_storage/none",
            *(["SwitchType=switch/none"] if self.release.switch_type else []),
            "ReturnToService=2",
            "MailProg=/bin/true",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={self.node_name}"
            + ("" if self.node_name == self.hostname else f" NodeHostname={self.hostname}")
            + f" NodeAddr=127.0.0.1 CPUs={_cpu_count()} RealMemory={self._real_memory_mb()} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def _write_files(self, progress: Progress = print) -> None:
        """Create the directories, JWT key and config; daemons started with another config are restarted."""
        for sub in ("state", "spool", "run", "log", "jobs"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.base_dir / "state").chmod(0o700)
        if not self.jwt_key_path.exists():
            # Written with 0600 from the start: the key signs every token of the cluster.
            fd = os.open(self.jwt_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        self.jwt_key_path.chmod(0o600)
        plugstack = self.base_dir / "plugstack.conf"
        if not plugstack.exists():
            plugstack.write_text("")
        if self.chroot is not None:
            # Else slurmd stops: "No filesystem mounted on /sys/fs/cgroup" (the chroot sees no cgroup tree).
            (self.base_dir / "cgroup.conf").write_text("CgroupPlugin=disabled\n")
        text = self.render_conf()
        old = self.conf_path.read_text() if self.conf_path.exists() else None
        if old == text:
            return
        if old is not None and any(self._owned(mp, b) for mp, b in self._slurm_parts()):
            # The config changed (a newer aifactory, another node size): Slurm reads most of it only at start.
            progress(f"slurm: {self.conf_path.name} changed since the daemons started; restarting Slurm "
                     "(its jobs end)")
            for line in self.down():
                progress(f"slurm: {line}")
        tmp = self.conf_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.conf_path)

    # ---- checks ----------------------------------------------------------------------------

    def prepare(self, progress: Progress = print) -> None:
        """Check that this release can run here: the host's packages, or the chroot (built when missing)."""
        if self.chroot is None:
            self.check_installed()
            return
        ensure_chroot(self.release.name, progress)

    @staticmethod
    def check_installed() -> None:
        missing = sorted({f"{b} ({pkg})" for b, pkg in _BINARIES.items() if _find(b) is None})
        if not glob.glob("/usr/lib/" + _JWT_PLUGIN_GLOB):
            missing.append("auth_jwt.so (slurm-wlm-jwt-plugin)")
        if missing:
            raise RuntimeError(
                "Slurm is not fully installed; missing " + ", ".join(missing)
                + f". Install the Debian packages: apt-get install -y {PACKAGES}"
                " (the project's install script does this)."
            )

    @staticmethod
    def _wait_exec(mp: ManagedProcess, binary: str, timeout: float = 5.0) -> None:
        """Right after Popen the child still shows our own cmdline; wait until it has exec'd the binary."""
        pid = mp.pid()
        deadline = time.monotonic() + timeout
        while pid and pid_alive(pid) and time.monotonic() < deadline:
            argv = _cmdline(pid)
            if argv and os.path.basename(argv[0]) == binary:
                return
            time.sleep(0.02)

    def _owned(self, mp: ManagedProcess, binary: str) -> int | None:
        """The recorded pid if it is alive and still that binary (a reused pid is not ours)."""
        pid = mp.pid()
        if pid is None or not pid_alive(pid):
            return None
        argv = _cmdline(pid)
        if not any(os.path.basename(a) == binary for a in argv):
            mp.pid_file.unlink(missing_ok=True)
            return None
        return pid

    # ---- munge -----------------------------------------------------------------------------

    def munge_answers(self) -> bool:
        """True if a munged answers on this cluster's socket (a credential round-trips): the host's default
        socket, or the one inside the chroot."""
        try:
            cred = subprocess.run(self.command(["munge", "-n"]), capture_output=True, timeout=5)
            if cred.returncode != 0:
                return False
            back = subprocess.run(self.command(["unmunge"]), input=cred.stdout, capture_output=True, timeout=5)
            return back.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _ensure_chroot_munge(self, progress: Progress) -> None:
        """The chroot's own munged, with a key of this stack's own (made in the overlay on the first start)."""
        assert self.chroot is not None
        if self._owned(self._munged, "munged") and self.munge_answers():
            progress("munged: ours, running")
            return
        key = self.chroot.base / "upper" / "etc" / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(self.command(["mungekey", "-c", "-f", "-k", "/etc/munge/munge.key"]), check=True,
                           capture_output=True)
            subprocess.run(self.command(["chown", "munge:munge", "/etc/munge/munge.key"]), check=True)
        subprocess.run(self.command(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"]),
                       check=True)
        progress("munged: starting (inside the chroot)")
        self._munged.start(self.command(["/usr/sbin/munged", "-F"], user="munge"))
        self._wait_exec(self._munged, "munged")
        try:
            wait_until(self.munge_answers, 15, "munged to answer")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- munged log ---\n{self._munged.log_tail()}") from exc

    def _ensure_munge(self, progress: Progress) -> None:
        if self.chroot is not None:
            return self._ensure_chroot_munge(progress)
        if self.munge_answers():
            owner = "ours" if self._owned(self._munged, "munged") else "already running, reused"
            progress(f"munged: {owner}")
            return
        if not MUNGE_KEY.exists():
            progress("munged: creating the munge key with mungekey -c")
            subprocess.run(["mungekey", "-c", "-k", str(MUNGE_KEY)], check=True, capture_output=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o600)
        MUNGE_RUN_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
        MUNGE_RUN_DIR.chmod(0o755)
        progress("munged: starting")
        # Foreground, and setpriv execs (runuser would fork and stay the parent), so the recorded pid is munged.
        self._munged.start(["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                            _find("munged") or "munged", "-F"])
        self._wait_exec(self._munged, "munged")
        try:
            wait_until(self.munge_answers, 15, "munged to answer")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n--- munged log ---\n{self._munged.log_tail()}") from exc

    # ---- daemons ---------------------------------------------------------------------------

    def _log_tail(self, mp: ManagedProcess, slurm_log: str | None = None, lines: int = 25) -> str:
        parts = [f"--- {mp.log_file.name} ---", mp.log_tail(lines)]
        if slurm_log:
            path = self.log_dir / slurm_log
            try:
                text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                text = ""
            parts += [f"--- {slurm_log} ---", text]
        return "\n".join(parts)

    def _start_daemon(self, mp: ManagedProcess, binary: str, args: list[str], progress: Progress,
                      env: dict[str, str] | None = None, user: str | None = None) -> None:
        pid = self._owned(mp, binary)
        if pid:
            progress(f"{binary}: running (pid {pid}), reused")
            return
        mp.pid_file.unlink(missing_ok=True)
        argv = [_find(binary) or binary, *args] if self.chroot is None else self.command([f"/usr/sbin/{binary}", *args],
                                                                                     user=user)
        pid = mp.start(argv, env={**self.env(), **(env or {})}, cwd=self.base_dir)
        self._wait_exec(mp, binary)
        progress(f"{binary}: started (pid {pid})")

    def _node_state(self) -> str:
        """"idle", "mixed+drain", "idle+not_responding", ... as `scontrol show node` says (sinfo's %T shows no
        NOT_RESPONDING on 24.11, where a restarted slurmd takes a few seconds to count as responding)."""
        out = self._run(["scontrol", "show", "node", self.node_name, "--oneliner"], timeout=10).stdout
        found = re.search(r"\bState=(\S+)", out)
        return found.group(1).lower() if found else ""

    def _wait_node(self, progress: Progress, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        resumed = False
        state = last = ""
        while time.monotonic() < deadline:
            for mp, binary, log in ((self._ctld, "slurmctld", "slurmctld.log"), (self._slurmd, "slurmd", "slurmd.log")):
                if not self._owned(mp, binary):
                    raise RuntimeError(f"{binary} exited during start\n{self._log_tail(mp, log)}")
            try:
                state = self._node_state()
            except (RuntimeError, subprocess.TimeoutExpired):
                state = "(slurmctld not answering yet)"
            if state != last:
                progress(f"node {self.node_name}: {state}")
                last = state
            base, *flags = state.split("+")
            if base in ("idle", "mixed", "allocated", "completing") and not any(
                    f.startswith(("not_responding", "drain", "down", "fail", "maint")) for f in flags):
                return
            if not resumed and any(s in state for s in ("down", "drain", "fail")) and "not_responding" not in flags:
                # Left DOWN/DRAIN by an earlier run (e.g. killed jobs); slurmd is up, so bring it back.
                progress(f"node {self.node_name}: {state}, resuming")
                self._run(["scontrol", "update", f"nodename={self.node_name}", "state=resume"], check=False)
                resumed = True
            time.sleep(0.5)
        raise RuntimeError(
            f"node {self.node_name} not idle after {timeout:.0f}s (state: {state})\n"
            f"{self._log_tail(self._ctld, 'slurmctld.log')}\n{self._log_tail(self._slurmd, 'slurmd.log')}"
        )

    def _rest_ping(self) -> bool:
        token = self.mint_token(lifespan=120)
        req = urllib.request.Request(
            f"{self.url}/slurm/{self.release.api_version}/ping",
            headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read() or b"{}")
        pings = body.get("pings") or []
        if resp.status != 200 or not pings:
            return False
        # "ping": "UP" up to v0.0.39, "pinged": "UP" from v0.0.40, only "responding" in v0.0.45.
        return (pings[0].get("ping") or pings[0].get("pinged")) == "UP" or pings[0].get("responding") is True

    def _wait_rest(self, progress: Progress, timeout: float = 30) -> None:
        progress(f"slurmrestd: waiting for {self.url}/slurm/{self.release.api_version}/ping")
        deadline = time.monotonic() + timeout
        error = ""
        while True:
            if not self._owned(self._rest, "slurmrestd"):
                raise RuntimeError(f"slurmrestd exited during start\n{self._log_tail(self._rest)}")
            try:
                if self._rest_ping():
                    break
                error = "ping did not say UP"
            except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
                error = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"slurmrestd did not answer within {timeout:.0f}s ({error})\n"
                                   f"{self._log_tail(self._rest)}")
            time.sleep(0.5)
        progress(f"slurmrestd: answering at {self.url}")

    def _forget_another_clusters_state(self, progress: Progress) -> None:
        """Set aside saved state of another cluster name (this folder used with another port offset): slurmctld
        would refuse to start with it ("CLUSTER NAME MISMATCH"), even with -c, and its jobs are not this one's."""
        state = self.base_dir / "state"
        saved = state / "clustername"
        if self._owned(self._ctld, "slurmctld") or not saved.exists():
            return
        name = saved.read_text().strip()
        if name == self.cluster_name:
            return
        progress(f"slurmctld: the saved state is cluster {name}'s, not {self.cluster_name}'s; starting afresh")
        shutil.rmtree(state)
        state.mkdir(mode=0o700)

    def _start_controller_and_node(self, progress: Progress) -> None:
        # slurmctld has been seen (once, not reproducibly) to die while recovering its saved state at start-up
        # ("fatal: read_slurm_conf ..."). Try again; then, as a last resort for a local stack, start it with a
        # clean state (-c: queued and running jobs of earlier runs are forgotten), and say so.
        for attempt, extra in ((1, []), (2, []), (3, ["-c"])):
            if extra:
                progress("slurmctld: could not recover its saved state twice; starting it with a clean state (-c)")
            self._start_daemon(self._ctld, "slurmctld", ["-D", *extra, "-f", str(self.conf_path)], progress)
            self._start_daemon(self._slurmd, "slurmd", ["-D", "-f", str(self.conf_path), "-N", self.node_name],
                               progress)
            try:
                self._wait_node(progress)
                return
            except RuntimeError as exc:
                if attempt == 3 or not str(exc).startswith("slurmctld exited during start"):
                    raise
                progress(f"slurmctld exited during start (attempt {attempt}): {str(exc).splitlines()[-1]}")
                self._slurmd.stop()
                time.sleep(2)

    def up(self, progress: Progress = print) -> None:
        """Start (or reuse) munged, slurmctld, slurmd and slurmrestd; return when the node is idle and REST answers."""
        self.prepare(progress)
        self._write_files(progress)
        if self.chroot is not None:
            self.chroot.up()
        self._ensure_munge(progress)
        self._forget_another_clusters_state(progress)
        self._start_controller_and_node(progress)
        plugins = ["-s", self.release.rest_plugins] if self.release.rest_plugins else []
        rest_args = ["-f", str(self.conf_path), "-a", "rest_auth/jwt", *plugins, f"{self.rest_host}:{self.rest_port}"]
        if self.chroot is None:
            # Root may only run slurmrestd with the user check off; SLURM_JWT=daemon makes it accept tokens.
            self._start_daemon(self._rest, "slurmrestd", rest_args, progress,
                               env={"SLURMRESTD_SECURITY": "disable_user_check", "SLURM_JWT": "daemon"})
        else:
            # An unprivileged user, as sites run it; without SLURM_JWT=daemon every token is rejected.
            self._start_daemon(self._rest, "slurmrestd", rest_args, progress, env={"SLURM_JWT": "daemon"},
                               user=REST_USER)
        self._wait_rest(progress)
        progress(f"slurm: cluster {self.cluster_name} up, partition {self.partition}, REST {self.url}")

    def _slurm_parts(self) -> list[tuple[ManagedProcess, str]]:
        return [(self._rest, "slurmrestd"), (self._slurmd, "slurmd"), (self._ctld, "slurmctld")]

    # ---- tokens ----------------------------------------------------------------------------

    def mint_token(self, lifespan: int = 86400, user: str = "root") -> str:
        """A JWT for slurmrestd (X-SLURM-USER-TOKEN). Never log it."""
        out = self._run(["scontrol", "token", f"username={user}", f"lifespan={int(lifespan)}"], timeout=15).stdout
        for line in out.splitlines():
            if line.startswith("SLURM_JWT="):
                return line.split("=", 1)[1].strip()
        raise RuntimeError("scontrol token printed no SLURM_JWT line")

    # ---- stopping --------------------------------------------------------------------------

    def _job_ids(self) -> list[str]:
        out = self._run(["squeue", "-h", "-o", "%A"], timeout=10, check=False)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []

    def _cancel_jobs(self, done: list[str]) -> None:
        try:
            ids = self._job_ids()
            if not ids:
                return
            self._run(["scancel", *ids], timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            # A hung slurmctld must not stop down(); leftover job processes are killed below.
            done.append(f"could not cancel jobs: {exc}")
            return
        done.append(f"cancelled jobs {', '.join(ids)}")

        def drained() -> bool:
            out = self._run(["squeue", "-h", "-t", "PD,R,CG,S,CF", "-o", "%A"], timeout=10, check=False)
            return out.returncode == 0 and not out.stdout.strip() and not self.stepd_pids()

        try:
            wait_until(drained, 30, "cancelled jobs to finish", interval=0.5)
        except TimeoutError:
            done.append("some jobs were still completing after 30s")

    def stepd_pids(self) -> list[int]:
        """slurmstepd processes of this cluster (they inherit slurmd's SLURM_CONF)."""
        mine: list[int] = []
        conf = str(self.conf_path)
        slurmd_pid = self._slurmd.pid()
        for pid in _all_pids():
            argv = _cmdline(pid)
            if not argv or not argv[0].startswith("slurmstepd"):
                continue
            if _environ(pid).get("SLURM_CONF") == conf or self._descends_from(pid, slurmd_pid):
                mine.append(pid)
        return mine

    @staticmethod
    def _descends_from(pid: int, ancestor: int | None) -> bool:
        if not ancestor:
            return False
        seen = 0
        while pid and pid > 1 and seen < 64:
            if pid == ancestor:
                return True
            pid = _ppid(pid) or 0
            seen += 1
        return False

    @staticmethod
    def _descendants(roots: list[int]) -> list[int]:
        children: dict[int, list[int]] = {}
        for pid in _all_pids():
            parent = _ppid(pid)
            if parent:
                children.setdefault(parent, []).append(pid)
        out: list[int] = []
        stack = list(roots)
        while stack:
            pid = stack.pop()
            out.append(pid)
            stack.extend(children.get(pid, []))
        return out

    def down(self) -> list[str]:
        """Cancel jobs, stop slurmrestd, slurmd, slurmctld (and munged if we started it). Returns what was done."""
        done: list[str] = []
        if self._owned(self._ctld, "slurmctld") and self.conf_path.exists():
            self._cancel_jobs(done)
        for mp, binary in self._slurm_parts():
            pid = self._owned(mp, binary)
            if pid:
                mp.stop()
                done.append(f"stopped {binary} (pid {pid})")
            else:
                mp.pid_file.unlink(missing_ok=True)
        # Anything left of our jobs: the stepds and their job processes, by exact pid.
        leftovers = self._descendants(self.stepd_pids())
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftovers:
            done.append(f"killed leftover job processes {', '.join(map(str, leftovers))}")
        munged = self._owned(self._munged, "munged")
        if munged:
            self._munged.stop()
            done.append(f"stopped munged (pid {munged})")
        if self.chroot is not None:
            done += self.chroot.down()
        return done

    # ---- status ----------------------------------------------------------------------------

    def _label(self, part: str) -> str:
        return part if self.chroot is None else f"{part} ({self.release.name})"

    def status(self) -> dict[str, str]:
        out: dict[str, str] = {}
        munged = self._owned(self._munged, "munged")
        if munged:
            out[self._label("munged")] = f"running (pid {munged})"
        elif self.chroot is None and self.munge_answers():
            out["munged"] = "running (not started by aifactory, reused)"
        else:
            out[self._label("munged")] = "stopped"
        details = {
            "slurmctld": f"port {self.slurmctld_port}, cluster {self.cluster_name}",
            "slurmd": f"port {self.slurmd_port}, node {self.node_name}",
            "slurmrestd": f"{self.url} (API {self.release.api_version})",
        }
        for mp, binary in reversed(self._slurm_parts()):
            pid = self._owned(mp, binary)
            out[self._label(binary)] = f"running (pid {pid}) {details[binary]}" if pid else "stopped"
        return out

    def recorded(self) -> bool:
        """Whether any process of this cluster is recorded as started (then `down` has something to do)."""
        return any(mp.pid() is not None for mp in (self._munged, self._ctld, self._slurmd, self._rest)) or \
            (self.chroot is not None and self.chroot.mounted())
