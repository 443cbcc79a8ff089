"""Debian's own tools for the local stack's builds: the machine's apt sources, apt-get, file locks, build logs.

Nothing here names a mirror: every archive address comes from the machine's own apt sources at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

Progress = Callable[[str], None]

DEB_SRC_FILE = Path("/etc/apt/sources.list.d/aifactory-deb-src.sources")
APT_LOCK_TIMEOUT = "600"  # seconds apt waits for another apt/dpkg run instead of failing at once


@contextlib.contextmanager
def file_lock(path: Path, progress: Progress, holder: str) -> Iterator[None]:
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for {holder} to finish ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         log: Path | None = None) -> None:
    """Run a build step; on failure raise with the end of its output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if log is not None:
        with open(log, "ab") as fh:
            fh.write(f"\n$ {' '.join(argv)}\n".encode())
            fh.flush()
            rc = subprocess.run(argv, cwd=cwd, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"`{' '.join(argv)}` failed with exit code {rc}; end of {log}:\n{tail}")
        return
    res = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip().splitlines()[-30:]
        raise RuntimeError(f"`{' '.join(argv)}` failed with exit code {res.returncode}:\n" + "\n".join(out))


def missing_packages(packages: list[str]) -> list[str]:
    missing = []
    for pkg in packages:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            missing.append(pkg)
    return missing


def apt_get(*args: str, log: Path | None = None) -> None:
    run(["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}", *args],
         env={"DEBIAN_FRONTEND": "noninteractive"}, log=log)


def os_codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "bookworm"


def _parse_deb822(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file as field -> value (continuation lines joined, comments dropped)."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key: str | None = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, last_key = {}, None
            continue
        if raw[0] in " \t" and last_key:
            current[last_key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        last_key = key.strip()
        current[last_key] = value.strip()
    return stanzas


def deb_src_entries() -> list[dict[str, str]]:
    """deb-src stanzas mirroring the machine's own Debian archive entries (those that carry the release suite)."""
    codename = os_codename()
    entries: list[dict[str, str]] = []
    parts = Path("/etc/apt/sources.list.d")
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        if path == DEB_SRC_FILE:
            continue
        for st in _parse_deb822(path.read_text(errors="replace")):
            if st.get("Enabled", "yes").lower() == "no" or "deb" not in st.get("Types", "").split():
                continue
            if codename not in st.get("Suites", "").split():
                continue
            entry = {"Types": "deb-src"}
            for key in ("URIs", "Suites", "Components", "Signed-By"):
                if key in st:
                    entry[key] = st[key]
            entries.append(entry)
    # The classic one-line format, for machines that still use it.
    for path in [Path("/etc/apt/sources.list"), *sorted(parts.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            options: dict[str, str] = {}
            if words and words[0].startswith("["):
                opts = []
                while words:
                    w = words.pop(0)
                    opts.append(w)
                    if w.endswith("]"):
                        break
                for opt in " ".join(opts).strip("[]").split():
                    k, _, v = opt.partition("=")
                    options[k] = v
            if len(words) < 3 or words[1] != codename:
                continue
            entry = {"Types": "deb-src", "URIs": words[0], "Suites": words[1], "Components": " ".join(words[2:])}
            if "signed-by" in options:
                entry["Signed-By"] = options["signed-by"]
            entries.append(entry)
    return entries


class Ticker:
    """Prints a line every `every` seconds while a long step runs, so a user sees it is still working."""

    def __init__(self, progress: Progress, what: str, every: float = 20.0):
        self.progress, self.what, self.every = progress, what, every

    def run(self, proc: subprocess.Popen, log: Path) -> int:
        start = time.monotonic()
        next_tick = start + self.every
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_tick:
                next_tick += self.every
                last = _last_line(log)
                self.progress(f"  {self.what}: {now - start:.0f}s" + (f" ({last})" if last else ""))
        return proc.returncode  # type: ignore[return-value]


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 2000))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:100] if lines else ""


def debian_archive() -> tuple[str, str | None]:
    """(URI, keyring) of the machine's own Debian archive: the first apt source that carries the release suite.

    The other suites (trixie, sid) are read from the same archive; no address is written into the project.
    """
    for entry in deb_src_entries():
        uris = entry.get("URIs", "").split()
        if uris:
            return uris[0], entry.get("Signed-By")
    raise RuntimeError(f"no Debian '{os_codename()}' entry in the machine's apt sources to take the archive from")
