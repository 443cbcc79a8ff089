"""A local Kubernetes control plane in the style of envtest: etcd + kube-apiserver, no kubelet, no controllers.

etcd comes from Debian's `etcd-server`. kube-apiserver is built once from Debian bookworm's `kubernetes`
source package (1.20.2) and cached outside the clone; see `ensure_apiserver_binary`.

What is missing compared to a real cluster (no kube-controller-manager): no garbage collection of
ownerReferences, no namespace deletion, no `default` ServiceAccount in new namespaces, no pods running.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

from .debian import (
    DEB_SRC_FILE,
    Ticker,
    apt_get,
    deb_src_entries,
    file_lock,
    missing_packages,
    os_codename,
    run,
)
from .process import ManagedProcess, cache_dir, dev_port, pid_alive, state_dir

Progress = Callable[[str], None]

APISERVER_VERSION = "1.20.2"
SOURCE_PACKAGE = "kubernetes"
# Packages needed to build kube-apiserver and to run etcd.
BUILD_DEPENDENCIES = ["golang-go", "rsync", "jq", "dpkg-dev", "golang-github-modern-go-reflect2-dev", "etcd-server"]
# Debian's reflect2 1.0.2; the vendored 1.0.1 crashes under Go 1.19 when a custom resource is created.
REFLECT2_SOURCE = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
ETCD_BINARY = "/usr/bin/etcd"


# --------------------------------------------------------------------------------------------------
# Building kube-apiserver
# --------------------------------------------------------------------------------------------------

def apiserver_binary_path() -> Path:
    return cache_dir() / f"kube-apiserver-{APISERVER_VERSION}" / "kube-apiserver"


def ensure_apiserver_binary(progress: Progress = print) -> Path:
    """Return the cached kube-apiserver binary, building it first if it is missing (about 3.5 min on 2 cores)."""
    target = apiserver_binary_path()
    if _is_executable(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / ".build.lock", progress, "another build of kube-apiserver"):
        # Someone else may have finished the build while we waited for the lock.
        if _is_executable(target):
            return target
        _build_apiserver(target, progress)
    return target


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _have_source_index() -> bool:
    res = subprocess.run(["apt-cache", "showsrc", SOURCE_PACKAGE], capture_output=True, text=True)
    return res.returncode == 0 and f"Package: {SOURCE_PACKAGE}" in res.stdout


def _ensure_deb_src(progress: Progress, log: Path) -> None:
    if _have_source_index():
        return
    if not DEB_SRC_FILE.exists():
        entries = deb_src_entries()
        if not entries:
            raise RuntimeError(f"no Debian '{os_codename()}' entry in the apt sources to derive a deb-src entry from")
        text = "\n".join("\n".join(f"{k}: {v}" for k, v in e.items()) + "\n" for e in entries)
        progress(f"adding deb-src entries derived from the machine's apt sources ({DEB_SRC_FILE.name})")
        DEB_SRC_FILE.write_text("# Written by aifactory's devstack: source packages from the same archive.\n" + text)
    progress("apt-get update (to see source packages) ...")
    apt_get("update", log=log)
    if not _have_source_index():
        raise RuntimeError(f"apt still knows no source package '{SOURCE_PACKAGE}' after adding {DEB_SRC_FILE}")


def _build_apiserver(target: Path, progress: Progress) -> None:
    started = time.monotonic()
    progress(f"kube-apiserver {APISERVER_VERSION} is not in the cache; building it from Debian's "
             f"'{SOURCE_PACKAGE}' source package (about 3-4 minutes on 2 cores)")
    build_root = Path(tempfile.mkdtemp(prefix="build-kube-apiserver-", dir=cache_dir()))
    log = build_root / "build.log"
    try:
        missing = missing_packages(BUILD_DEPENDENCIES)
        if missing:
            progress(f"installing build dependencies: {' '.join(missing)}")
            apt_get("update", log=log)
            apt_get("install", "-y", "--no-install-recommends", *missing, log=log)
        _ensure_deb_src(progress, log)

        progress("downloading the source package ...")
        dl = build_root / "download"
        dl.mkdir()
        run(["apt-get", "source", "--download-only", SOURCE_PACKAGE], cwd=dl, log=log)
        dscs = sorted(dl.glob(f"{SOURCE_PACKAGE}_*.dsc"))
        if not dscs:
            raise RuntimeError(f"apt-get source left no .dsc file in {dl}")
        src = build_root / "src"
        progress(f"unpacking {dscs[-1].name} ...")
        run(["dpkg-source", "--no-check", "-x", str(dscs[-1]), str(src)], cwd=dl, log=log)
        shutil.rmtree(dl)

        # Swap in Debian's reflect2 (see REFLECT2_SOURCE); its go.mod would make it a module of its own.
        vendored = src / "vendor" / "github.com" / "modern-go" / "reflect2"
        if not REFLECT2_SOURCE.is_dir():
            raise RuntimeError(f"{REFLECT2_SOURCE} is missing (package golang-github-modern-go-reflect2-dev)")
        shutil.rmtree(vendored, ignore_errors=True)
        shutil.copytree(REFLECT2_SOURCE, vendored, ignore=shutil.ignore_patterns("go.mod", "go.sum"))

        # The GOPATH layout Debian's own build uses: .go/src/k8s.io/kubernetes -> source root.
        gopath = src / ".go"
        (gopath / "src" / "k8s.io").mkdir(parents=True)
        (gopath / "src" / "k8s.io" / "kubernetes").symlink_to(src)
        env = dict(os.environ)
        env.update({
            "GOPATH": str(gopath),
            "GOCACHE": str(build_root / "gocache"),
            "GOPROXY": "off",
            "GOFLAGS": "-mod=vendor",
            "CGO_ENABLED": "0",
            "HOME": str(build_root),
            # No .git in a source package: give the version explicitly (kubectl reports skew from it).
            "KUBE_GIT_VERSION": f"v{APISERVER_VERSION}",
            "KUBE_GIT_TREE_STATE": "clean",
            "KUBE_GIT_MAJOR": APISERVER_VERSION.split(".")[0],
            "KUBE_GIT_MINOR": APISERVER_VERSION.split(".")[1],
        })
        progress("compiling kube-apiserver (make WHAT=cmd/kube-apiserver) ...")
        with open(log, "ab") as fh:
            fh.write(b"\n$ make WHAT=cmd/kube-apiserver\n")
            fh.flush()
            proc = subprocess.Popen(["make", "WHAT=cmd/kube-apiserver"], cwd=gopath / "src" / "k8s.io" / "kubernetes",
                                    env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            rc = Ticker(progress, "compiling").run(proc, log)
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"building kube-apiserver failed (exit code {rc}); the build folder {build_root} "
                               f"is kept; end of its log:\n{tail}")
        built = src / "_output" / "bin" / "kube-apiserver"
        if not _is_executable(built):
            raise RuntimeError(f"make succeeded but {built} is missing; see {log}")
        # Copy then rename: a concurrent reader sees either no binary or a complete one.
        tmp = target.with_name(target.name + ".tmp")
        shutil.copy2(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        progress(f"kube-apiserver build failed; build folder kept for inspection: {build_root}")
        raise
    shutil.rmtree(build_root, ignore_errors=True)
    progress(f"kube-apiserver built in {time.monotonic() - started:.0f}s: {target}")


# --------------------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------------------

class ControlPlaneError(RuntimeError):
    pass


class KubeControlPlane:
    """etcd + kube-apiserver on loopback, with their state under <state_dir>/kube (or `base_dir`)."""

    def __init__(self, *, base_dir: Path | None = None, etcd_port: int | None = None,
                 etcd_peer_port: int | None = None, apiserver_port: int | None = None, host: str = "127.0.0.1",
                 name_prefix: str = "",
                 service_cluster_ip_range: str = "10.0.0.0/24", extra_apiserver_args: list[str] | None = None):
        self.base_dir = Path(base_dir) if base_dir else state_dir() / "kube"
        self.host = host
        self.etcd_port = etcd_port or dev_port(12379)
        self.etcd_peer_port = etcd_peer_port or dev_port(12380)
        self.apiserver_port = apiserver_port or dev_port(16443)
        self.service_cluster_ip_range = service_cluster_ip_range
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        # A second instance needs its own pid files, hence the prefix.
        self.etcd = ManagedProcess(f"{name_prefix}etcd")
        self.apiserver = ManagedProcess(f"{name_prefix}kube-apiserver")

    # ---- paths and addresses ------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.base_dir / "pki"

    @property
    def etcd_data_dir(self) -> Path:
        return self.base_dir / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.base_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def token_file(self) -> Path:
        return self.pki_dir / "tokens.csv"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.host}:{self.etcd_port}"

    def admin_token(self) -> str:
        return (self.pki_dir / "admin.token").read_text().strip()

    # ---- lifecycle ----------------------------------------------------------------------------

    def up(self, progress: Progress = print) -> None:
        """Start etcd and kube-apiserver unless they already run; wait until the API answers.

        If something fails, the processes this call started are stopped again (their logs stay).
        """
        binary = ensure_apiserver_binary(progress)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.base_dir / ".lock", progress, "another `up`/`down` of this control plane"):
            changed = self._ensure_credentials(progress)
            if changed and self._ours(self.apiserver, "kube-apiserver"):
                # The running apiserver read the old token file and keys at start.
                progress("credentials changed: restarting kube-apiserver")
                self.apiserver.stop()
            etcd_running = self._ours(self.etcd, "etcd")
            apiserver_running = self._ours(self.apiserver, "kube-apiserver")
            # Check every port first so a conflict leaves nothing half-started.
            if not etcd_running:
                self._check_port_free(self.etcd_port, "etcd")
                self._check_port_free(self.etcd_peer_port, "etcd (peer)")
            if not apiserver_running:
                self._check_port_free(self.apiserver_port, "kube-apiserver")
            started: list[ManagedProcess] = []
            try:
                if etcd_running:
                    progress(f"etcd already running (pid {self.etcd.pid()}) on {self.etcd_url}")
                else:
                    self.etcd_data_dir.mkdir(parents=True, exist_ok=True)
                    os.chmod(self.etcd_data_dir, 0o700)  # etcd warns about wider permissions
                    pid = self.etcd.start(self._etcd_argv())
                    started.append(self.etcd)
                    progress(f"started etcd (pid {pid}) on {self.etcd_url}")
                self._wait(self.etcd, self._etcd_healthy, 60, "etcd /health", progress)

                if apiserver_running:
                    progress(f"kube-apiserver already running (pid {self.apiserver.pid()}) on {self.server}")
                else:
                    pid = self.apiserver.start(self._apiserver_argv(binary))
                    started.append(self.apiserver)
                    progress(f"started kube-apiserver (pid {pid}) on {self.server}")
                self._wait(self.apiserver, lambda: self._get("/readyz")[0] == 200, 120,
                           "kube-apiserver /readyz", progress)
                self._wait(self.apiserver, lambda: self._get("/api/v1/namespaces/default")[0] == 200, 60,
                           "the 'default' namespace", progress)
            except BaseException:
                for mp in reversed(started):
                    mp.stop()
                raise
        progress(f"Kubernetes API ready at {self.server}; kubeconfig: {self.kubeconfig}")

    def down(self) -> list[str]:
        """Stop the recorded processes (apiserver first); etcd data stays, so `up` brings resources back."""
        stopped = []
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.base_dir / ".lock", lambda _m: None, ""):
            for mp, name in ((self.apiserver, "kube-apiserver"), (self.etcd, "etcd")):
                if self._ours(mp, name) and mp.stop():
                    stopped.append(name)
                else:
                    mp.pid_file.unlink(missing_ok=True)
        return stopped

    def reset(self) -> list[str]:
        """Stop and delete all state (etcd data, certificates, tokens, kubeconfig)."""
        stopped = self.down()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, str]:
        """{"etcd": "running (pid N) host:port" | "stopped", "kube-apiserver": ...}"""
        out = {}
        for mp, name, addr in ((self.etcd, "etcd", f"{self.host}:{self.etcd_port}"),
                               (self.apiserver, "kube-apiserver", f"{self.host}:{self.apiserver_port}")):
            out[name] = f"running (pid {mp.pid()}) {addr}" if self._ours(mp, name) else "stopped"
        return out

    def running(self) -> bool:
        return self._ours(self.etcd, "etcd") and self._ours(self.apiserver, "kube-apiserver")

    # ---- internals ----------------------------------------------------------------------------

    @staticmethod
    def _ours(mp: ManagedProcess, binary: str) -> bool:
        """Running, and the recorded pid really is that program (a pid can be reused after a reboot)."""
        pid = mp.pid()
        if pid is None or not pid_alive(pid):
            return False
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            return False
        if Path(argv0).name != binary:
            mp.pid_file.unlink(missing_ok=True)  # stale record; never signal a stranger
            return False
        return True

    def _check_port_free(self, port: int, what: str) -> None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((self.host, port)) == 0:
                raise ControlPlaneError(f"cannot start {what}: {self.host}:{port} is already in use by a process "
                                        f"this control plane did not record (see `ss -ltnp`)")

    def _etcd_argv(self) -> list[str]:
        peer = f"http://{self.host}:{self.etcd_peer_port}"
        name = "aifactory-dev"
        return [ETCD_BINARY, "--name", name, "--data-dir", str(self.etcd_data_dir),
                "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]

    def _apiserver_argv(self, binary: Path) -> list[str]:
        p = self.pki_dir
        return [
            str(binary),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.apiserver_port}",
            "--insecure-port=0",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--token-auth-file={self.token_file}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            # Without kube-controller-manager no namespace gets a `default` ServiceAccount, so this admission
            # plugin would refuse every pod; envtest disables it for the same reason. TokenRequest is unaffected.
            "--disable-admission-plugins=ServiceAccount",
            # The 'kubernetes' Service endpoints would be a loopback address, which validation rejects.
            "--endpoint-reconciler-type=none",
            *self.extra_apiserver_args,
        ]

    def _ensure_credentials(self, progress: Progress) -> bool:
        """Create once, then reuse: CA, serving certificate, service-account keys, admin token, kubeconfig.

        Returns True if something the apiserver reads at start was (re)created.
        """
        changed = False
        p = self.pki_dir
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o700)
        ossl = ["openssl"]
        if not (p / "ca.crt").exists() or not (p / "ca.key").exists():
            progress("creating a local CA")
            changed = True
            run([*ossl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
                  "-subj", "/CN=aifactory-dev-ca", "-keyout", str(p / "ca.key"), "-out", str(p / "ca.crt"),
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])
            (p / "apiserver.crt").unlink(missing_ok=True)
        if not (p / "apiserver.crt").exists() or not (p / "apiserver.key").exists():
            progress("creating the kube-apiserver serving certificate")
            changed = True
            ext = p / "apiserver.ext"
            ext.write_text(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                f"subjectAltName=IP:{self.host},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc\n")
            csr = p / "apiserver.csr"
            run([*ossl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                  "-keyout", str(p / "apiserver.key"), "-out", str(csr)])
            run([*ossl, "x509", "-req", "-in", str(csr), "-CA", str(p / "ca.crt"), "-CAkey", str(p / "ca.key"),
                  "-CAcreateserial", "-sha256", "-days", "3650", "-extfile", str(ext), "-out", str(p / "apiserver.crt")])
            csr.unlink(missing_ok=True)
        if not (p / "sa.key").exists() or not (p / "sa.pub").exists():
            progress("creating the service-account signing key")
            changed = True
            run([*ossl, "genrsa", "-out", str(p / "sa.key"), "2048"])
            run([*ossl, "rsa", "-in", str(p / "sa.key"), "-pubout", "-out", str(p / "sa.pub")])
        token_path = p / "admin.token"
        if not token_path.exists() or not self.token_file.exists():
            changed = True
            token = secrets.token_urlsafe(32)
            _write_private(token_path, token + "\n")
            # token,user,uid,"groups"
            _write_private(self.token_file, f'{token},aifactory-admin,aifactory-admin,"system:masters"\n')
            self.kubeconfig.unlink(missing_ok=True)
        for key in p.glob("*.key"):
            os.chmod(key, 0o600)
        if not self.kubeconfig.exists() or self._kubeconfig_stale():
            self._write_kubeconfig()
        return changed

    def _kubeconfig_doc(self) -> dict:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "aifactory-dev", "cluster": {"server": self.server,
                                                              "certificate-authority-data": ca}}],
            "users": [{"name": "aifactory-admin", "user": {"token": self.admin_token()}}],
            "contexts": [{"name": "aifactory-dev", "context": {"cluster": "aifactory-dev", "user": "aifactory-admin",
                                                               "namespace": "default"}}],
            "current-context": "aifactory-dev",
            "preferences": {},
        }

    def _kubeconfig_stale(self) -> bool:
        try:
            doc = yaml.safe_load(self.kubeconfig.read_text())
            return doc["clusters"][0]["cluster"] != self._kubeconfig_doc()["clusters"][0]["cluster"] or \
                doc["users"][0]["user"]["token"] != self.admin_token()
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return True

    def _write_kubeconfig(self) -> None:
        _write_private(self.kubeconfig, yaml.safe_dump(self._kubeconfig_doc(), sort_keys=False))

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _get(self, path: str) -> tuple[int, str]:
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.admin_token()}"})
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=5) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as resp:
            return json.loads(resp.read()).get("health") == "true"

    def _wait(self, mp: ManagedProcess, check: Callable[[], bool], timeout: float, what: str,
              progress: Progress) -> None:
        """Poll check() with a progress line now and then; fail fast with the log tail if the process died."""
        start = time.monotonic()
        next_note = start + 5
        last_error: Exception | None = None
        while True:
            try:
                if check():
                    return
            except Exception as exc:  # connection refused etc. while the process starts
                last_error = exc
            if not mp.running():
                raise ControlPlaneError(f"{mp.name} exited while waiting for {what}; last lines of "
                                        f"{mp.log_file}:\n{mp.log_tail(30)}")
            now = time.monotonic()
            if now - start > timeout:
                detail = f" (last error: {last_error})" if last_error else ""
                raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}{detail}; last lines of "
                                        f"{mp.log_file}:\n{mp.log_tail(30)}")
            if now >= next_note:
                progress(f"  waiting for {what} ({now - start:.0f}s)")
                next_note = now + 5
            time.sleep(0.3)


def _write_private(path: Path, text: str) -> None:
    """Write a secret file readable by the owner only, without a window where it is world-readable."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
