"""Processes of the local stack: started in the background, recorded by pid, stopped by that pid only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def state_dir() -> Path:
    """Where the running local stack keeps its configs, logs and pid files (outside any clone)."""
    base = os.environ.get("AIFACTORY_DEV_DIR") or os.path.expanduser("~/.local/state/aifactory/dev")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where slow-to-make artefacts (the kube-apiserver binary) live across clones."""
    base = os.environ.get("AIFACTORY_CACHE") or os.path.expanduser("~/.cache/aifactory")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def dev_port(base: int) -> int:
    """A port of the local stack: `base` shifted by AIFACTORY_DEV_PORT_OFFSET, so that several stacks (each with
    its own AIFACTORY_DEV_DIR) can run side by side on one machine."""
    return base + int(os.environ.get("AIFACTORY_DEV_PORT_OFFSET") or 0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class ManagedProcess:
    """One process of the stack, known by name; its pid lives in <state>/pids/<name>.pid."""

    name: str

    @property
    def pid_file(self) -> Path:
        d = state_dir() / "pids"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        d = state_dir() / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def record(self, pid: int) -> None:
        self.pid_file.write_text(f"{pid}\n")

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              user: str | None = None) -> int:
        """Start argv in its own session, output to the log file, and record its pid."""
        if self.running():
            return self.pid()  # type: ignore[return-value]
        log = open(self.log_file, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=cwd, start_new_session=True)
        log.close()
        self.record(proc.pid)
        return proc.pid

    def adopt_pid_file(self, path: Path, timeout: float = 15.0) -> int:
        """For daemons that fork and write their own pid file: wait for it and record that pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = int(path.read_text().strip())
                if pid_alive(pid):
                    self.record(pid)
                    return pid
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not write {path} within {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop exactly the recorded pid: SIGTERM, then SIGKILL after timeout. True if it was running."""
        pid = self.pid()
        if pid is None or not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    """Poll check() until it returns a truthy value; raise with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the check's own failure is the most useful message on timeout
            last_error = exc
        time.sleep(interval)
    detail = f": {last_error}" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
