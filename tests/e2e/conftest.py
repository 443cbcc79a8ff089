"""The local stack for end-to-end tests: real kube-apiserver, real slurmrestd, the operator.

The session brings the stack up with `aifactory dev up` and, at the end, stops exactly the parts that were
not running before it started.

`slurm_release` is the same stack seen through one real Slurm release at a time: 22.05 (the host's, the
`default` SlurmCluster), 24.11 and 26.05 (from their chroots, started with `aifactory dev up --slurm`). Each
comes with a login node of its own (a real sshd whose commands are that release's) and three SlurmClusters built
from real Secrets, one per transport: rest, ssh-tunnel, ssh-cli. Tests that take it run once per release;
pytest groups them so that each release is started once per session (and stopped after, if it was not running).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from aifactory.devstack import stack as devstack
from aifactory.devstack.kube import KubeControlPlane
from aifactory.devstack.slurm import DEFAULT_RELEASE, RELEASES, LocalSlurm
from aifactory.devstack.sshd import LocalSshd, free_port


@dataclass
class Stack:
    kube: KubeControlPlane
    slurm: LocalSlurm
    token: str = field(repr=False)  # a slurmrestd JWT: never in test output
    api_key: str = field(repr=False)  # the local stack's admin key (`aifactory dev env`)

    @property
    def api_url(self) -> str:
        return devstack.API_URL

    def make_key(self, namespace: str, role: str = "management", **fields) -> str:
        """An API key of that namespace's tenant, stored with kubectl as an admin would (only its hash)."""
        from aifactory.api.identity.admin import apikey_manifest
        from aifactory.api.identity.keys import new_key
        from aifactory.models import Role

        made = new_key()
        self.kubectl("apply", "-f", "-", stdin=json.dumps(
            apikey_manifest(made, namespace, name=f"e2e {role}", role=Role(role), **fields)))
        return made.key

    def ensure_namespace(self, name: str) -> None:
        # Namespaces cannot be deleted on the local apiserver (no controller-manager): they are reused.
        self.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))

    def api(self, key: str | None = None, prefix: str = "") -> httpx.Client:
        """A client of the stack's REST API, sending `key` (default: the admin key) as a Bearer token."""
        headers = {"Authorization": f"Bearer {key or self.api_key}"}
        return httpx.Client(base_url=f"{self.api_url}{prefix}", headers=headers, timeout=60, trust_env=False)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(["kubectl", "--kubeconfig", str(self.kube.kubeconfig), *args], input=stdin,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    @staticmethod
    def manifest(name: str, recipe: str, env: dict | None = None, namespace: str = "default", **spec) -> dict:
        """An AIService manifest, as a user would write it."""
        return aiservice(name, recipe, env, namespace=namespace, **spec)

    def apply(self, manifest: dict) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    def get(self, name: str, namespace: str = "default") -> dict | None:
        result = self.kubectl("get", "aiservice", name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def slurm_job(self, job_id: str) -> dict | None:
        """The job as the real slurmrestd reports it (not through aifactory)."""
        response = httpx.get(f"{self.slurm.url}/slurm/v0.0.38/job/{job_id}", timeout=10,
                             headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": self.token})
        jobs = response.json().get("jobs") or []
        return jobs[0] if jobs else None

    def slurm_jobs_tagged(self, uid: str) -> list[dict]:
        """Every job the default cluster's slurmctld knows whose comment carries this AIService UID."""
        response = httpx.get(f"{self.slurm.url}/slurm/v0.0.38/jobs", timeout=20,
                             headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": self.token})
        return [j for j in response.json().get("jobs") or [] if f"uid={uid}" in (j.get("comment") or "")]

    def slurm_cpus(self) -> int:
        return os.cpu_count() or 1

    def wait_for(self, name: str, predicate, timeout: float, namespace: str = "default",
                 what: str = "a condition") -> dict:
        """Poll the resource until predicate(obj) holds; the error shows the last status seen."""
        deadline = time.monotonic() + timeout
        obj = None
        while time.monotonic() < deadline:
            obj = self.get(name, namespace)
            if obj is not None and predicate(obj):
                return obj
            time.sleep(0.3)
        raise AssertionError(f"{name}: timed out waiting for {what}; last status: "
                             f"{json.dumps((obj or {}).get('status'), indent=1)}")

    def phases_until(self, name: str, target: str, timeout: float, namespace: str = "default") -> list[str]:
        """Every phase the resource passes through (from a watch, so none is missed) until `target`."""
        argv = ["kubectl", "--kubeconfig", str(self.kube.kubeconfig), "get", "aiservice", name, "-n", namespace,
                "--watch", "-o", "jsonpath={.status.phase}{'\\n'}"]
        seen: list[str] = []
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if not ready:
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                phase = line.strip()
                if phase and (not seen or seen[-1] != phase):
                    seen.append(phase)
                if phase == target or phase in ("failed", "cancelled", "completed"):
                    break
        finally:
            proc.kill()
            proc.wait()
        if not seen or seen[-1] != target:
            status = (self.get(name, namespace) or {}).get("status")
            raise AssertionError(f"{name}: phases {seen}, never {target}; status: {json.dumps(status, indent=1)}")
        return seen

    @staticmethod
    def recipe_manifest(name: str, **spec) -> dict:
        """A ServiceRecipe manifest; the recipe's name is the resource's."""
        return {"apiVersion": "aifactory.io/v1alpha1", "kind": "ServiceRecipe", "metadata": {"name": name},
                "spec": {"name": name, **spec}}

    def recipe_status(self, name: str, timeout: float = 30) -> dict:
        """A ServiceRecipe's status once the operator has said whether it took it into its catalog."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            got = self.kubectl("get", "servicerecipe", name, "-o", "json", check=False)
            status = json.loads(got.stdout).get("status", {}) if got.returncode == 0 else {}
            if "accepted" in status:
                return status
            time.sleep(0.3)
        raise AssertionError(f"ServiceRecipe {name} never got a status; last: {status}")

    def wait_gone(self, name: str, timeout: float, namespace: str = "default") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(name, namespace) is None:
                return
            time.sleep(0.3)
        raise AssertionError(f"{name} still exists after {timeout}s: {self.get(name, namespace)}")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


class _OneReleaseAtATime:
    """After pytest's own ordering: the tests of each Slurm release together, so each release is started once
    (pytest groups parametrized fixtures by the case's position, which differs between tests)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        items.sort(key=_release_of)  # stable: each group keeps pytest's order


def pytest_configure(config):
    config.pluginmanager.register(_OneReleaseAtATime(), "aifactory-one-release-at-a-time")


def _release_of(item) -> int:
    """Tests without a release first (in their own order), then each release's tests together."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "slurm_release" not in callspec.params:
        return -1
    return list(RELEASES).index(callspec.params["slurm_release"])


@pytest.fixture(scope="session")
def stack() -> Stack:
    if os.geteuid() != 0:
        pytest.skip("the local stack (munge, slurmd, slurmctld) needs root")
    before = devstack.running_parts()
    subprocess.run([sys.executable, "-m", "aifactory", "dev", "up"], check=True, timeout=1200)
    slurm = LocalSlurm()
    key = devstack.admin_key()
    assert key, "aifactory dev up made no admin key"
    yield Stack(KubeControlPlane(), slurm, slurm.mint_token(lifespan=3600), key)
    devstack.down(keep=before)
    if not before:
        # The session started the whole stack, so `dev down` must leave none of it behind.
        time.sleep(1)
        assert devstack.leftover_processes() == [], "processes of the stack survived `aifactory dev down`"


@dataclass
class SlurmUnderTest:
    """One real Slurm release of the stack, as the tests see it."""

    release: str
    slurm: LocalSlurm
    token: str = field(repr=False)  # a slurmrestd JWT for the checks made straight against slurmrestd
    login: LocalSshd | None = None
    clusters: dict[str, str] = field(default_factory=dict)  # transport -> SlurmCluster name

    @property
    def api_version(self) -> str:
        return self.slurm.release.api_version

    def rest(self, method: str, path: str, **kw) -> httpx.Response:
        """slurmrestd itself (not through aifactory), in the newest API the release serves."""
        return httpx.request(method, f"{self.slurm.url}/slurm/{self.api_version}{path}", timeout=20,
                             headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": self.token}, **kw)

    def job(self, job_id: str) -> dict | None:
        jobs = self.rest("GET", f"/job/{job_id}").json().get("jobs") or []
        return jobs[0] if jobs else None

    def state(self, job_id: str) -> str | None:
        """The job's base state as slurmrestd says it (a string up to v0.0.39, a list after)."""
        job = self.job(job_id)
        if job is None:
            return None
        state = job["job_state"]
        return state[0] if isinstance(state, list) else state

    def jobs_tagged(self, uid: str) -> list[dict]:
        """Every job slurmctld knows whose comment carries this AIService UID."""
        answer = self.rest("GET", "/jobs").json()
        return [j for j in answer.get("jobs") or [] if f"uid={uid}" in (j.get("comment") or "")]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm command of this release (inside its chroot for 24.11 and 26.05)."""
        return subprocess.run(self.slurm.command(list(argv)), env={**os.environ, **self.slurm.env()},
                              capture_output=True, text=True, timeout=60, check=check)


RELEASE_IDS = [f"slurm-{r}" for r in RELEASES]


def _release_clusters(stack: Stack, s: SlurmUnderTest) -> dict[str, str]:
    """SlurmClusters for the ssh-tunnel and ssh-cli transports, from real Secrets (key, known_hosts, token)."""
    tag = s.slurm.release.tag
    key_secret, known_secret = f"e2e-ssh-key-{tag}", f"e2e-known-hosts-{tag}"
    for name, data in ((key_secret, {"ssh-privatekey": s.login.private_key()}),
                       (known_secret, {"known_hosts": s.login.known_hosts()})):
        devstack.apply(stack.kube, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                    "metadata": {"name": name, "namespace": devstack.NAMESPACE},
                                    "stringData": data})
    rest = json.loads(stack.kubectl("get", "slurmcluster", devstack.cluster_name(s.release), "-o", "json").stdout)
    ssh = {"host": "127.0.0.1", "port": s.login.port, "user": s.login.user,
           "keySecretRef": {"name": key_secret}, "knownHostsSecretRef": {"name": known_secret}}
    names = {"rest": devstack.cluster_name(s.release)}
    for transport in ("ssh-tunnel", "ssh-cli"):
        spec = {**rest["spec"], "transport": transport, "ssh": ssh, "cli": {"environment": s.slurm.env()}}
        if transport == "ssh-cli":
            spec.pop("url", None)
            spec.pop("tokenSecretRef", None)
        names[transport] = f"e2e-{tag}-{transport}"
        devstack.apply(stack.kube, {"apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster",
                                    "metadata": {"name": names[transport]}, "spec": spec})
    return names


def _wait_reachable(stack: Stack, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    status = {}
    while time.monotonic() < deadline:
        listed = json.loads(stack.kubectl("get", "slurmclusters", "-o", "json").stdout)["items"]
        status = {o["metadata"]["name"]: o.get("status") or {} for o in listed if o["metadata"]["name"] in names}
        if len(status) == len(names) and all(s.get("reachable") for s in status.values()):
            return
        time.sleep(1)
    raise AssertionError(f"SlurmClusters not reachable after {timeout}s: {status}")


def pytest_generate_tests(metafunc):
    """Tests that take `slurm_release` run once per release; `@pytest.mark.slurm_cases(names, cases)` gives
    (release, *values) cases instead, e.g. one per API version a release serves."""
    if "slurm_release" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("slurm_cases")
    if marker is None or not set(marker.args[0]) <= set(metafunc.fixturenames):
        metafunc.parametrize("slurm_release", list(RELEASES), ids=RELEASE_IDS, indirect=True, scope="session")
    else:
        names, cases = marker.args
        metafunc.parametrize(["slurm_release", *names], cases, indirect=["slurm_release"], scope="session")


@pytest.fixture(scope="session")
def slurm_release(request, stack) -> SlurmUnderTest:
    release = request.param
    slurm = LocalSlurm(release)
    started_here = False
    if release != DEFAULT_RELEASE:
        started_here = f"slurm-{release}" not in devstack.running_parts()
        subprocess.run([sys.executable, "-m", "aifactory", "dev", "up", "--slurm", release], check=True,
                       timeout=1200)
    s = SlurmUnderTest(release, slurm, slurm.mint_token(lifespan=3600))
    port = free_port()
    s.login = LocalSshd(port=port, base_dir=slurm.base_dir / f"login-{port}", name=f"sshd-e2e-{release}",
                        root=slurm.chroot.root if slurm.chroot else None)
    s.login.up()
    try:
        s.clusters = _release_clusters(stack, s)
        _wait_reachable(stack, list(s.clusters.values()))
        yield s
    finally:
        tag = slurm.release.tag
        for transport in ("ssh-tunnel", "ssh-cli"):
            stack.kubectl("delete", "slurmcluster", f"e2e-{tag}-{transport}", "--ignore-not-found", check=False)
        stack.kubectl("delete", "secret", f"e2e-ssh-key-{tag}", f"e2e-known-hosts-{tag}", "-n", devstack.NAMESPACE,
                      "--ignore-not-found", check=False)
        s.login.down()
        if started_here:
            devstack.down_release(release)


@pytest.fixture(scope="module")
def login_node(stack, tmp_path_factory):
    """A login node of the local Slurm for one test module: a real sshd on loopback, as the stack's user."""
    port = free_port()
    sshd = LocalSshd(port=port, base_dir=tmp_path_factory.mktemp("sshd"), name=f"sshd-login-{port}")
    sshd.up()
    yield sshd
    assert sshd.down(), "the test's sshd was not running at the end"


@pytest.fixture
def unique_name():
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:6]}"
    return make


def aiservice(name: str, recipe: str, env: dict | None = None, namespace: str = "default", **spec) -> dict:
    return {"apiVersion": "aifactory.io/v1alpha1", "kind": "AIService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"recipe": recipe, **({"env": env} if env else {}), **spec}}


@pytest.fixture
def services(stack):
    """Create AIServices; whatever a test leaves behind is deleted (and its job cancelled) afterwards."""
    made: list[tuple[str, str]] = []

    def create(name: str, recipe: str, namespace: str = "default", **kw) -> str:
        stack.apply(aiservice(name, recipe, namespace=namespace, **kw))
        made.append((name, namespace))
        return name

    yield create
    for name, namespace in made:
        stack.kubectl("delete", "aiservice", name, "-n", namespace, "--wait=false", "--ignore-not-found", check=False)
    for name, namespace in made:
        stack.wait_gone(name, 60, namespace=namespace)


@pytest.fixture
def service_recipes(stack):
    """Create ServiceRecipes with kubectl; whatever a test leaves behind is deleted afterwards."""
    made: list[str] = []

    def create(name: str, **spec) -> str:
        stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(stack.recipe_manifest(name, **spec)))
        made.append(name)
        return name

    yield create
    for name in made:
        stack.kubectl("delete", "servicerecipe", name, "--ignore-not-found", "--timeout=60s", check=False)
