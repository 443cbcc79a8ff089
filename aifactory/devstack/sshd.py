"""A real OpenSSH server on a loopback port, standing in for a cluster's login node in tests and demos.

It runs Debian's /usr/sbin/sshd in the foreground (-D -e) with its own config, host key and authorized key,
all under one folder (default ``state_dir()/sshd/``), and is stopped by its recorded pid only. Given the root of a
Slurm release's chroot (``root=``), it runs the chroot's own sshd there: a login node of that release, whose
commands (sbatch, squeue, scontrol) are the release's own. The folder must then be one the chroot sees at the
same path (the cluster's own folder is).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from aifactory.devstack.process import ManagedProcess, state_dir, wait_until

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start as root without its privilege separation folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSshd:
    """sshd on 127.0.0.1:<port> that lets `user` in with the generated client key, and nobody else."""

    def __init__(self, *, port: int | None = None, base_dir: Path | None = None, name: str = "sshd",
                 user: str | None = None, root: Path | None = None):
        self.port = port or free_port()
        self.base_dir = base_dir or state_dir() / "sshd"
        self.user = user or os.environ.get("USER") or "root"
        self.root = root
        self.process = ManagedProcess(name)

    def _inside(self, argv: list[str]) -> list[str]:
        return argv if self.root is None else ["chroot", str(self.root), *argv]

    @property
    def host_key(self) -> Path:
        return self.base_dir / "host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.base_dir / "client_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.base_dir / "authorized_keys"

    @property
    def config(self) -> Path:
        return self.base_dir / "sshd_config"

    def known_hosts(self) -> str:
        """The known_hosts line for this server (OpenSSH's [host]:port form for a non-22 port)."""
        return f"[127.0.0.1]:{self.port} {self.host_key.with_suffix('.pub').read_text().strip()}\n"

    def private_key(self) -> str:
        """The client's private key text (what a SlurmCluster's key Secret would hold). Never log it."""
        return self.client_key.read_text()

    @staticmethod
    def _keygen(path: Path, comment: str) -> None:
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                           check=True, capture_output=True)

    def render_config(self) -> str:
        return "\n".join([
            "# Written by aifactory.devstack.sshd.",
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            # The folder may be a test's temp dir whose modes sshd would otherwise refuse.
            "StrictModes no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "PidFile none",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def write_files(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        self._keygen(self.host_key, "aifactory-local-login-node")
        self._keygen(self.client_key, "aifactory-operator")
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.config.write_text(self.render_config())

    def up(self, timeout: float = 15.0) -> None:
        if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
            raise RuntimeError("openssh-server is not installed (apt-get install -y openssh-server)")
        self.write_files()
        if os.geteuid() == 0:
            privsep = PRIVSEP_DIR if self.root is None else self.root / str(PRIVSEP_DIR).lstrip("/")
            privsep.mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(self._inside([SSHD, "-t", "-f", str(self.config)]), capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refuses its config: {check.stderr.strip()}")
        self.process.start(self._inside([SSHD, "-D", "-e", "-f", str(self.config)]))

        def listening() -> bool:
            if not self.process.running():
                raise RuntimeError(f"sshd exited:\n{self.process.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, timeout, f"sshd on 127.0.0.1:{self.port}", interval=0.1)

    def down(self) -> bool:
        return self.process.stop()
