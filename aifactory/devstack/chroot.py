"""Newer Slurm releases for the local stack, each in a Debian chroot next to the host's own 22.05.

Debian 13 (trixie) ships Slurm 24.11 and Debian's unstable suite (sid) ships 26.05. Each chroot is made once with
`debootstrap --variant=minbase` from the machine's own Debian archive (taken from its apt sources at run time),
plus Slurm's packages, openssh-server (a login node of that release) and the shared libraries the project's
Python needs, and is kept in the cache next to kube-apiserver. It is never changed after the build: each stack
mounts it as the lower layer of an overlay whose upper layer is in its own state directory, so its daemons
write only there. The mount point itself is under /run/aifactory (gone at reboot, like the mounts), never inside the
state directory: nothing that walks or removes that folder may descend into the chroot's /proc, /sys, /dev or the
project's folders.

Inside the mounted root: /proc, /sys, /dev, the host's /etc/hosts, and read-only binds of the project's Python
and source folders at the same paths as outside, so that a job started by the chroot's slurmd runs the same
`python3 -m aifactory...` as on the host (newer glibc runs older binaries). The cluster's own folder (config,
state, job output) is bound read-write at the same path too, so paths mean the same inside and out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .debian import Progress, Ticker, debian_archive, file_lock, run
from .process import cache_dir

# Slurm release -> Debian suite that ships it.
SUITES = {"24.11": "trixie", "26.05": "sid"}
PACKAGES = ["slurmctld", "slurmd", "slurmrestd", "slurm-client", "munge", "slurm-wlm-jwt-plugin",
            "slurm-wlm-basic-plugins", "procps", "openssh-server"]
LAYOUT = 1  # bump when what a build puts in changes; a new layout is built beside the old one
# sid's Release files on a mirror or snapshot may be past their Valid-Until date.
APT_OPTIONS = ["-o", "Acquire::Check-Valid-Until=false", "-o", "DPkg::Lock::Timeout=600"]
REST_USER = "slurmrestd"  # the unprivileged user slurmrestd runs as inside the chroot


def chroot_dir(release: str) -> Path:
    return cache_dir() / f"slurm-{release}-{SUITES[release]}-v{LAYOUT}"


def build_info(release: str) -> dict | None:
    """What the build recorded (Slurm's package version, seconds taken), or None when there is no complete build."""
    try:
        return json.loads((chroot_dir(release) / "build.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_chroot(release: str, progress: Progress = print) -> Path:
    """The root of the release's chroot in the cache, built first when missing (about a minute)."""
    if release not in SUITES:
        raise ValueError(f"no chroot for Slurm {release}; known: {', '.join(SUITES)}")
    target = chroot_dir(release)
    if build_info(release):
        return target / "root"
    with file_lock(cache_dir() / f".slurm-{release}.lock", progress, f"another build of the Slurm {release} chroot"):
        if build_info(release):  # built by someone else while we waited
            return target / "root"
        _build(release, target, progress)
    return target / "root"


def _chroot_run(root: Path, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    run(["chroot", str(root), *argv], env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", **(env or {})},
        log=log)


def _build(release: str, target: Path, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install -y debootstrap; "
                           "scripts/install-system-deps.sh does it)")
    suite = SUITES[release]
    archive, keyring = debian_archive()
    started = time.monotonic()
    progress(f"Slurm {release}: building a Debian {suite} chroot into the cache with debootstrap (about a minute)")
    build = Path(tempfile.mkdtemp(prefix=f"build-slurm-{release}-", dir=cache_dir()))
    build.chmod(0o755)
    root, log = build / "root", build / "build.log"
    mounts: list[Path] = []
    try:
        argv = ["debootstrap", "--variant=minbase"]
        if keyring and keyring.startswith("/") and Path(keyring).is_file():
            argv.append(f"--keyring={keyring}")
        argv += [suite, str(root), archive]
        with open(log, "ab") as fh:
            fh.write(f"$ {' '.join(argv)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if Ticker(progress, "debootstrap").run(proc, log) != 0:
                raise RuntimeError(f"debootstrap {suite} failed; see {log}:\n{_tail(log)}")
        # Packages must not start their daemons inside the chroot while they are installed.
        policy = root / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        mounts = _mount_system(root)
        progress(f"Slurm {release}: installing {' '.join(PACKAGES)}")
        _chroot_run(root, ["apt-get", *APT_OPTIONS, "update"], log)
        _chroot_run(root, ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", *PACKAGES], log)
        libraries = _missing_python_libraries(root)
        if libraries:
            progress(f"Slurm {release}: installing what the project's Python needs: {' '.join(libraries)}")
            _chroot_run(root, ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", *libraries], log)
        _chroot_run(root, ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", REST_USER], log)
        _chroot_run(root, ["apt-get", "clean"], log)
        version = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f=${Version}", "slurmctld"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        _unmount(mounts)
        mounts = []
        seconds = time.monotonic() - started
        (build / "build.json").write_text(json.dumps({
            "release": release, "suite": suite, "slurm_package": version, "python_libraries": libraries,
            "build_seconds": round(seconds), "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        }, indent=1) + "\n")
        os.replace(build, target)
    except BaseException:
        _unmount(mounts)
        progress(f"Slurm {release}: the chroot build failed; its folder is kept for inspection: {build}")
        raise
    progress(f"Slurm {release}: chroot built in {seconds:.0f}s (slurmctld {version}): {target}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _mount_system(root: Path) -> list[Path]:
    done = []
    for fstype, source, sub in (("proc", "proc", "proc"), ("sysfs", "sysfs", "sys")):
        subprocess.run(["mount", "-t", fstype, source, str(root / sub)], check=True)
        done.append(root / sub)
    subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True)
    done.append(root / "dev")
    return done


def _unmount(points: list[Path]) -> None:
    for point in reversed(points):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def python_libraries() -> dict[str, Path]:
    """Shared libraries (soname -> path on this machine) that the running interpreter and its compiled standard
    modules load from the system (the Tk GUI module aside)."""
    executable = Path(sys.executable).resolve()
    dynload = Path(sys.base_exec_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "lib-dynload"
    if not dynload.is_dir():  # Debian's own interpreter keeps them elsewhere
        dynload = next((Path(p) for p in sys.path if p.endswith("lib-dynload")), dynload)
    files = [executable, *sorted(p for p in dynload.glob("*.so") if "_tkinter" not in p.name)]
    found: dict[str, Path] = {}
    for path in files:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for soname, where in re.findall(r"^\s*(\S+) => (/\S+)", out, re.MULTILINE):
            if not Path(where).resolve().is_relative_to(Path(sys.base_prefix).resolve()) or sys.base_prefix == "/usr":
                found.setdefault(soname, Path(where))
    return found


def _missing_python_libraries(root: Path) -> list[str]:
    """Debian packages to install in the chroot for the libraries the project's Python needs and it lacks, named
    as this machine's packages that ship them (later suites provide the same names)."""
    known = subprocess.run(["chroot", str(root), "/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    packages: set[str] = set()
    for soname, path in python_libraries().items():
        if f"{soname} " in known:
            continue
        owner = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True)
        if owner.returncode != 0:  # merged /usr: dpkg may know it under /lib
            alt = str(path).replace("/usr/lib/", "/lib/", 1) if str(path).startswith("/usr/lib/") else \
                str(path).replace("/lib/", "/usr/lib/", 1)
            owner = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True)
        if owner.returncode == 0:
            packages.add(owner.stdout.split(":", 1)[0].strip())
    return sorted(packages)


# --------------------------------------------------------------------------------------------------
# One stack's mounted view of a chroot
# --------------------------------------------------------------------------------------------------

def mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            # Field 5 is the mount point, with spaces and the like escaped as octal.
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]))
    return points


def _python_folders(project: Path) -> list[Path]:
    """The folders (and files) the running interpreter, its packages and the project live in.

    A system prefix (/usr) cannot be bound whole over the chroot's own: then only the interpreter's library
    folders and its binary are.
    """
    system = {Path("/"), Path("/usr"), Path("/usr/local"), Path("/opt"), Path("/home"), Path("/root")}
    wanted = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), project,
              *(Path(p) for p in sys.path if p and os.path.isdir(p))]
    folders = [p.resolve() for p in wanted if p.resolve() not in system]
    executable = Path(sys.executable).resolve()
    folders.append(executable)
    kept: list[Path] = []
    for path in sorted(set(folders), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    # The venv's own folder holds bin/python3 (a symlink to the interpreter): keep it too, unresolved.
    if Path(sys.prefix) not in kept and not any(Path(sys.prefix).is_relative_to(k) for k in kept):
        kept.append(Path(sys.prefix))
    return kept


MOUNTS = Path("/run/aifactory")


class ChrootMount:
    """A release's chroot as one stack sees it: an overlay with the cache's tree below and `base/upper` above,
    mounted at /run/aifactory/<stack>-<release>/root, with /proc, /sys, /dev, /etc/hosts and the given folders
    bound in."""

    def __init__(self, release: str, base: Path, shared: list[Path], project: Path):
        self.release = release
        self.base = base
        self.shared = shared  # bound read-write at the same path (the cluster's own folder)
        self.project = project

    @property
    def root(self) -> Path:
        stack = hashlib.sha256(str(self.base.resolve()).encode()).hexdigest()[:12]
        return MOUNTS / f"{stack}-{self.release}" / "root"

    @property
    def lower(self) -> Path:
        return chroot_dir(self.release) / "root"

    def _binds(self) -> list[tuple[Path, bool]]:
        """(path, read_only): the same path inside as outside."""
        return [(Path("/etc/hosts"), True), *((p, True) for p in _python_folders(self.project)),
                *((p, False) for p in self.shared)]

    def points(self) -> list[Path]:
        """Every mount point of this view, in mounting order."""
        r = self.root
        return [r, r / "proc", r / "sys", r / "dev", *(r / str(p).lstrip("/") for p, _ in self._binds())]

    def mounted(self) -> bool:
        return str(self.root) in mount_points()

    def up(self) -> None:
        """Mount what is not mounted yet (idempotent)."""
        upper, work = self.base / "upper", self.base / "work"
        stamp = self.base / "lower"
        now = mount_points()
        if str(self.root) not in now:
            if stamp.exists() and stamp.read_text().strip() != str(self.lower):
                # A newer build of the chroot: this stack's changes were made over the old one.
                shutil.rmtree(upper, ignore_errors=True)
                shutil.rmtree(work, ignore_errors=True)
            for d in (upper, work, self.root):
                d.mkdir(parents=True, exist_ok=True)
            stamp.write_text(f"{self.lower}\n")
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={self.lower},upperdir={upper},workdir={work}", str(self.root)],
                           check=True, capture_output=True, text=True)
        r = self.root
        for fstype, sub in (("proc", "proc"), ("sysfs", "sys")):
            if str(r / sub) not in now:
                subprocess.run(["mount", "-t", fstype, fstype, str(r / sub)], check=True)
        if str(r / "dev") not in now:
            subprocess.run(["mount", "--bind", "/dev", str(r / "dev")], check=True)
        for path, read_only in self._binds():
            point = r / str(path).lstrip("/")
            if str(point) in now or not path.exists():
                continue
            if path.is_dir():
                point.mkdir(parents=True, exist_ok=True)
            else:
                point.parent.mkdir(parents=True, exist_ok=True)
                point.touch(exist_ok=True)
            # Unprivileged users of the chroot (slurmrestd) must be able to reach it, e.g. under /root (0700).
            for parent in point.relative_to(r).parents:
                inside = r / parent
                if inside != r and not inside.stat().st_mode & 0o001:
                    inside.chmod(inside.stat().st_mode | 0o011)
            subprocess.run(["mount", "--bind", str(path), str(point)], check=True)
            if read_only:
                subprocess.run(["mount", "-o", "remount,bind,ro", str(point)], check=True)

    def down(self) -> list[str]:
        """Unmount everything of this view (lazily when something still holds it)."""
        now = mount_points()
        # Deepest first, also binds left by an earlier run with other folders.
        ours = sorted((p for p in now if p == str(self.root) or p.startswith(str(self.root) + "/")),
                      key=lambda p: p.count("/"), reverse=True)
        for point in ours:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        return [f"unmounted the Slurm {self.release} chroot ({len(ours)} mounts)"] if ours else []

    def command(self, argv: list[str], user: str | None = None) -> list[str]:
        """argv run inside the chroot (as `user` when given; the chroot's own users)."""
        spec = [f"--userspec={user}:{user}"] if user else []
        return ["chroot", *spec, str(self.root), *argv]
