"""`aifactory dev up|down|status|env`: the whole local stack on this one machine.

Order: Slurm (munge, slurmctld, slurmd, slurmrestd) -> Kubernetes API (etcd, kube-apiserver) -> CRDs, the
`default` SlurmCluster and its token Secret -> the operator -> the REST API. `--slurm 24.11` (or 26.05, or
`all`) also starts that Slurm release from its chroot, with its own token Secret and SlurmCluster
`slurm-24-11`. Every process is recorded by pid and `down` stops exactly those.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aifactory.crds import all_crds
from aifactory.devstack.kube import KubeControlPlane
from aifactory.devstack.process import ManagedProcess, dev_port, state_dir, wait_until
from aifactory.devstack.slurm import DEFAULT_RELEASE, RELEASES, LocalSlurm

NAMESPACE = "aifactory-system"
TOKEN_SECRET = "slurm-jwt"
OPERATOR = ManagedProcess("operator")
OPERATOR_LIVENESS_PORT = dev_port(18080)
API = ManagedProcess("api")
API_PORT = dev_port(8001)
API_URL = f"http://127.0.0.1:{API_PORT}"
TOKEN_LIFESPAN = 7 * 24 * 3600  # the local stack renews it at every `dev up`


DEFAULT_TENANT = "default"


def admin_key_file() -> Path:
    """The local stack's admin API key, kept for `dev env` (0600; the cluster stores only its hash)."""
    return state_dir() / "api" / "admin.key"


def say(line: str) -> None:
    print(f"[aifactory dev] {line}", flush=True)


def kubectl(kube: KubeControlPlane, *args: str, stdin: str | None = None, check: bool = True) -> str:
    if shutil.which("kubectl") is None:
        raise RuntimeError("kubectl is not installed")
    result = subprocess.run(["kubectl", "--kubeconfig", str(kube.kubeconfig), *args], input=stdin,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def apply(kube: KubeControlPlane, *objects: dict) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    for attempt in range(20):
        try:
            kubectl(kube, "apply", "-f", "-", stdin=json.dumps(document))
            return
        except RuntimeError as exc:
            # A CRD that just gained a field is served with it a moment later (kubectl validates against the
            # published OpenAPI document): an older stack brought up with newer CRDs.
            if "unknown field" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.5)


def cluster_name(release: str) -> str:
    """The SlurmCluster of a release: `default` for the demo's 22.05, `slurm-24-11` for the others."""
    return "default" if release == DEFAULT_RELEASE else f"slurm-{RELEASES[release].tag}"


def token_secret(release: str) -> str:
    return TOKEN_SECRET if release == DEFAULT_RELEASE else f"{TOKEN_SECRET}-{RELEASES[release].tag}"


def job_environment() -> dict[str, str]:
    # Jobs run this machine's Python (the one aifactory is installed in; the chroots see it at the same path).
    python_bin = str(Path(sys.executable).parent)
    return {"PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": os.path.expanduser("~")}


def default_slurmcluster(slurm: LocalSlurm) -> dict:
    release = slurm.release.name
    return {
        "apiVersion": "aifactory.io/v1alpha1",
        "kind": "SlurmCluster",
        "metadata": {"name": cluster_name(release)},
        "spec": {
            "url": slurm.url,
            "user": "root",
            "tokenSecretRef": {"name": token_secret(release), "namespace": NAMESPACE, "key": "token"},
            "partition": slurm.partition,
            "workingDirectory": str(slurm.jobs_dir),
            "jobEnvironment": job_environment(),
            "bindAddress": "127.0.0.1",
            "localLogs": True,
            "pollIntervalSeconds": 2,
            "nodePollIntervalSeconds": 5,
            # The model and dataset registries of training runs (one area per tenant).
            "storage": {"path": str(slurm.jobs_dir.parent / "storage")},
        },
    }


def operator_env(kube: KubeControlPlane) -> dict[str, str]:
    return {"KUBECONFIG": str(kube.kubeconfig), "AIFACTORY_NAMESPACE": NAMESPACE, "PYTHONUNBUFFERED": "1"}


def start_operator(kube: KubeControlPlane) -> None:
    if OPERATOR.running():
        say(f"operator: already running (pid {OPERATOR.pid()})")
        return
    OPERATOR.start([sys.executable, "-m", "aifactory", "operator", "--liveness-host", "127.0.0.1",
                    "--liveness-port", str(OPERATOR_LIVENESS_PORT)], env=operator_env(kube))

    def alive() -> bool:
        if not OPERATOR.running():
            raise RuntimeError(f"the operator exited:\n{OPERATOR.log_tail()}")
        return httpx.get(f"http://127.0.0.1:{OPERATOR_LIVENESS_PORT}/healthz", timeout=2).status_code == 200

    wait_until(alive, 60, "the operator's liveness endpoint")
    say(f"operator: running (pid {OPERATOR.pid()}), log {OPERATOR.log_file}")


def start_api(kube: KubeControlPlane) -> None:
    if API.running():
        say(f"api: already running (pid {API.pid()})")
        return
    API.start([sys.executable, "-m", "aifactory", "api", "--host", "127.0.0.1", "--port", str(API_PORT)],
              env={"KUBECONFIG": str(kube.kubeconfig), "AIFACTORY_API_OPERATOR_NAMESPACE": NAMESPACE,
                   "PYTHONUNBUFFERED": "1"})

    def alive() -> bool:
        if not API.running():
            raise RuntimeError(f"the REST API exited:\n{API.log_tail()}")
        try:
            return httpx.get(f"{API_URL}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(alive, 60, "the REST API's /health")
    say(f"api: running (pid {API.pid()}) at {API_URL}, log {API.log_file}")


def publish_cluster(kube: KubeControlPlane, slurm: LocalSlurm) -> None:
    """A release's token Secret and SlurmCluster (the token goes through stdin, never on a command line)."""
    release = slurm.release.name
    say(f"Slurm {release}: the token Secret {token_secret(release)} and SlurmCluster '{cluster_name(release)}'")
    apply(kube, {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": token_secret(release), "namespace": NAMESPACE},
        "stringData": {"token": slurm.mint_token(lifespan=TOKEN_LIFESPAN)},
    })
    apply(kube, default_slurmcluster(slurm))


def releases_asked(asked: list[str] | None) -> list[str]:
    """The extra Slurm releases named with --slurm ("all" = every one the stack runs besides the default)."""
    out: list[str] = []
    for name in asked or []:
        for release in (r for r in RELEASES if r != DEFAULT_RELEASE) if name == "all" else [name]:
            if release not in RELEASES:
                raise SystemExit(f"no Slurm {release} in the local stack; it runs {', '.join(RELEASES)} (or `all`)")
            if release != DEFAULT_RELEASE and release not in out:
                out.append(release)
    return out


def up(releases: list[str] = ()) -> None:
    if os.geteuid() != 0:
        raise SystemExit("aifactory dev up needs root: the local Slurm runs munged, slurmctld and slurmd, which "
                         "start jobs as any user, and it writes /etc/munge/munge.key. Run it as root "
                         "(for example `sudo make demo`).")
    started = time.monotonic()
    slurm = LocalSlurm()
    slurm.up(progress=say)
    extra = [LocalSlurm(release) for release in releases]
    for other in extra:
        other.up(progress=lambda line, r=other.release.name: say(f"[{r}] {line}"))
    kube = KubeControlPlane()
    kube.up(progress=say)
    say("applying the CRDs")
    apply(kube, *all_crds().values())
    for crd in all_crds().values():
        kubectl(kube, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}")
    say(f"creating namespace {NAMESPACE}")
    apply(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for each in (slurm, *extra):
        publish_cluster(kube, each)
    ensure_identity(kube)
    start_operator(kube)
    start_api(kube)
    say(f"up in {time.monotonic() - started:.0f}s; `aifactory dev env` prints the variables to use it")


def ensure_identity(kube: KubeControlPlane) -> None:
    """The default tenant and an admin key of it: the key is kept in the state directory, its hash in Kubernetes."""
    from aifactory.api.identity.admin import apikey_manifest
    from aifactory.api.identity.keys import key_hash, key_id_of, new_key
    from aifactory.models import Role

    apply(kube, {"apiVersion": "aifactory.io/v1alpha1", "kind": "Tenant", "metadata": {"name": DEFAULT_TENANT},
                 "spec": {"namespace": DEFAULT_TENANT, "description": "The local stack's own tenant"}})
    path = admin_key_file()
    key = path.read_text().strip() if path.exists() else ""
    key_id = key_id_of(key)
    if key_id:
        stored = kubectl(kube, "get", "apikey", key_id, "-n", DEFAULT_TENANT, "-o", "jsonpath={.spec.keyHash}",
                         check=False)
        if stored == key_hash(key):
            say(f"api: admin key {key[:16]}... of tenant {DEFAULT_TENANT} (`aifactory dev env` prints it)")
            return
    made = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(made.key + "\n")
    apply(kube, apikey_manifest(made, DEFAULT_TENANT, name="local stack admin",
                                role=Role.admin))
    say(f"api: made an admin key {made.prefix}... of tenant {DEFAULT_TENANT} (`aifactory dev env` prints it)")


def admin_key() -> str | None:
    path = admin_key_file()
    return path.read_text().strip() if path.exists() else None


def running_parts() -> set[str]:
    """Which of the stack's parts run now (each counts as running when all its processes do): "slurm" (the
    default 22.05), "slurm-24.11", ..., "kube", "operator", "api"."""
    kube, slurm = KubeControlPlane(), LocalSlurm()
    running = set()
    if all(s.startswith("running") for s in slurm.status().values()):
        running.add("slurm")
    for release in RELEASES:
        if release != DEFAULT_RELEASE and all(s.startswith("running") for s in LocalSlurm(release).status().values()):
            running.add(f"slurm-{release}")
    if all(s.startswith("running") for s in kube.status().values()):
        running.add("kube")
    if OPERATOR.running():
        running.add("operator")
    if API.running():
        running.add("api")
    return running


def down(keep: set[str] = frozenset()) -> None:
    """Stop the stack's processes, except the parts named in `keep`."""
    stopped = []
    if "api" not in keep and API.stop():
        stopped.append("api")
    if "operator" not in keep and OPERATOR.stop():
        stopped.append("operator")
    if "kube" not in keep:
        stopped += KubeControlPlane().down()
    if "slurm" not in keep:
        stopped += LocalSlurm().down()
    for release in RELEASES:
        other = LocalSlurm(release)
        if release != DEFAULT_RELEASE and f"slurm-{release}" not in keep and other.recorded():
            stopped += [f"{line} [{release}]" for line in other.down()]
    say(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def down_release(release: str) -> list[str]:
    """Stop one of the extra Slurm releases, after taking its SlurmCluster and Secret out of Kubernetes."""
    kube = KubeControlPlane()
    if kube.running():
        kubectl(kube, "delete", "slurmcluster", cluster_name(release), "--ignore-not-found", "--wait=false",
                check=False)
        kubectl(kube, "delete", "secret", token_secret(release), "-n", NAMESPACE, "--ignore-not-found", check=False)
    return LocalSlurm(release).down()


def status() -> int:
    kube, slurm = KubeControlPlane(), LocalSlurm()
    others = [LocalSlurm(r) for r in RELEASES if r != DEFAULT_RELEASE]
    parts = {**slurm.status(), **{k: v for o in others if o.recorded() for k, v in o.status().items()},
             **kube.status(),
             "operator": f"running (pid {OPERATOR.pid()})" if OPERATOR.running() else "stopped",
             "api": f"running (pid {API.pid()}) {API_URL}" if API.running() else "stopped"}
    width = max(map(len, parts))
    for name, state in parts.items():
        print(f"{name:<{width}}  {state}")
    print(f"{'state':<{width}}  {state_dir()}")
    return 0 if all(s.startswith("running") for s in parts.values()) else 1


def env(release: str = DEFAULT_RELEASE) -> None:
    kube, slurm = KubeControlPlane(), LocalSlurm(release)
    print(f"export KUBECONFIG={kube.kubeconfig}")
    print(f"export SLURMRESTD_URL={slurm.url}")
    print(f"export AIFACTORY_API_URL={API_URL}")
    key = admin_key()
    if key:
        print(f"export AIFACTORY_API_KEY={key}")
    print(f"export SLURM_JWT={slurm.mint_token(lifespan=TOKEN_LIFESPAN)}")
    for key, value in slurm.env().items():
        print(f"export {key}={value}")
    if slurm.chroot is not None:
        print(f"# Slurm {release}'s commands run inside its chroot: chroot {slurm.chroot.root} squeue")


def leftover_processes() -> list[tuple[int, str]]:
    """Processes that still belong to the stack: their command line or environment names its state directory
    (daemons have their configs there; Slurm jobs carry SLURM_CONF pointing into it)."""
    # With the separator: another stack's folder may start with the same name (dev, dev-2, ...).
    marker = (str(state_dir()).rstrip("/") + "/").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            if (entry / "stat").read_text().split(") ", 1)[1].startswith("Z"):
                continue  # a zombie holds nothing
        except OSError:
            continue
        if marker in cmdline or marker in environ:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    # And any recorded pid still alive (munged, for one, keeps no file of ours on its command line).
    for pid_file in (state_dir() / "pids").glob("*.pid"):
        process = ManagedProcess(pid_file.stem)
        if process.running() and all(pid != process.pid() for pid, _ in found):
            found.append((process.pid(), f"{pid_file.stem} (recorded)"))
    return found


def command(action: str, releases: list[str] | None = None) -> int:
    asked = releases_asked(releases)
    if action == "up":
        up(asked)
    elif action == "down":
        if asked:  # only those releases
            for release in asked:
                say(f"Slurm {release}: stopped: {', '.join(down_release(release)) or 'nothing was running'}")
        else:
            down()
    elif action == "status":
        return status()
    elif action == "env":
        if len(asked) > 1:
            raise SystemExit("`dev env` prints the variables of one Slurm release at a time")
        env(*asked)
    return 0
