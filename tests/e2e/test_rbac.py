"""Least-privilege RBAC: the chart's rule files, applied to the real kube-apiserver, are enough for the whole
flow, and one rule less breaks it.

The operator runs here with a ServiceAccount token, watching only NAMESPACE, bound exactly as the chart binds it
in namespaced mode. The stack's own operator watches every namespace and would fight over the same AIServices,
so it is stopped (by its pid) for this module and started again at the end.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aifactory.devstack import stack as devstack

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm" / "aifactory" / "files" / "rbac"
NAMESPACE = "aifactory-rbac-e2e"          # the watched namespace, where the AIServices live
RELEASE_NAMESPACE = devstack.NAMESPACE    # the operator's own namespace: the Slurm JWT Secret is there
OPERATOR_SA = "aifactory-operator"
API_SA = "aifactory-api"


def rules(component: str) -> dict[str, list[dict]]:
    return yaml.safe_load((RULES / f"{component}-rules.yaml").read_text())


def without_verb(scoped: dict[str, list[dict]], resource: str, verb: str) -> dict[str, list[dict]]:
    out = copy.deepcopy(scoped)
    hits = 0
    for rule_list in out.values():
        for rule in rule_list:
            if resource in rule["resources"] and verb in rule["verbs"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                hits += 1
    assert hits, f"no rule grants {verb} on {resource}"
    # A rule without verbs is invalid; without its only verb it goes.
    return {scope: [r for r in rule_list if r["verbs"]] for scope, rule_list in out.items()}


def bound(scoped: dict[str, list[dict]], name: str, sa: str, cluster_scopes: list[str],
          namespaces: dict[str, str]) -> list[dict]:
    """The rules bound the way templates/rbac.yaml binds them: some scopes in a ClusterRole, the others in a
    Role per namespace (namespaces: scope -> namespace)."""
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    ref = lambda kind: {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}
    objects = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": [rule for scope in cluster_scopes for rule in scoped.get(scope, [])]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": ref("ClusterRole"), "subjects": subject},
    ]
    for scope, namespace in namespaces.items():
        meta = {"name": name, "namespace": namespace}
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
             "rules": scoped.get(scope, [])},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
             "roleRef": ref("Role"), "subjects": subject},
        ]
    return objects


def bind_operator(stack, scoped: dict[str, list[dict]]) -> None:
    """Namespaced watching of NAMESPACE, as the chart does with watch.namespaces: [NAMESPACE]."""
    apply_all(stack, bound(scoped, f"{NAMESPACE}-{OPERATOR_SA}", OPERATOR_SA, ["cluster", "namespacedWatch"],
                           {"watched": NAMESPACE, "release": RELEASE_NAMESPACE}))


def bind_api(stack, scoped: dict[str, list[dict]]) -> None:
    """The API, serving every tenant's namespace."""
    apply_all(stack, bound(scoped, f"{NAMESPACE}-{API_SA}", API_SA, ["cluster"], {"release": RELEASE_NAMESPACE}))


def apply_all(stack, objects: list[dict]) -> None:
    stack.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def kubeconfig_for(stack, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (server and CA from the stack's kubeconfig)."""
    token = stack.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration=3600s").stdout.strip()
    admin = yaml.safe_load(stack.kube.kubeconfig.read_text())
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": sa, "user": {"token": token}}],
        # Like a Pod's namespace: where kopf posts events about cluster-scoped objects.
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa, "namespace": RELEASE_NAMESPACE}}],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """One process this test starts; stopped by its own pid."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=REPO)

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.proc.args[3]} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{url} did not answer within {timeout}s:\n{self.text()[-3000:]}")

    def text(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def clean_env(kubeconfig: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "AIFACTORY_", "SLURM"))}
    return {**keep, "KUBECONFIG": str(kubeconfig), "AIFACTORY_NAMESPACE": RELEASE_NAMESPACE,
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def accounts(stack):
    apply_all(stack, [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA, "namespace": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": API_SA, "namespace": NAMESPACE}},
    ])
    yield
    # No controller-manager here: the namespace stays (and is reused); the grants go.
    for sa in (OPERATOR_SA, API_SA):
        name = f"{NAMESPACE}-{sa}"
        stack.kubectl("delete", "clusterrole,clusterrolebinding", name, "--ignore-not-found", check=False)
        for namespace in (NAMESPACE, RELEASE_NAMESPACE):
            stack.kubectl("delete", "role,rolebinding", name, "-n", namespace, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def stack_operator_paused(stack, accounts):
    """Stop the stack's cluster-wide operator (exactly its pid) for this module; start it again afterwards."""
    was_running = devstack.OPERATOR.running()
    devstack.OPERATOR.stop()
    try:
        yield
    finally:
        if was_running:
            devstack.start_operator(stack.kube)


@pytest.fixture
def run_operator(stack, stack_operator_paused, tmp_path):
    started: list[Process] = []

    def start(scoped: dict[str, list[dict]]) -> Process:
        bind_operator(stack, scoped)
        config = kubeconfig_for(stack, OPERATOR_SA, tmp_path / "operator.kubeconfig")
        port = free_port()
        proc = Process([sys.executable, "-m", "aifactory", "operator", "--namespace", NAMESPACE,
                        "--liveness-host", "127.0.0.1", "--liveness-port", str(port)],
                       clean_env(config), tmp_path / f"operator-{len(started)}.log")
        started.append(proc)
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        return proc

    yield start
    for proc in started:
        proc.stop()


def slurm_jobs_named(stack, job_name: str) -> list[dict]:
    response = httpx.get(f"{stack.slurm.url}/slurm/v0.0.38/jobs", timeout=10,
                         headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": stack.token})
    return [j for j in response.json().get("jobs") or [] if j.get("name") == job_name]


def api_command_exists() -> bool:
    return subprocess.run([sys.executable, "-m", "aifactory", "api", "--help"], capture_output=True,
                          check=False).returncode == 0


@pytest.fixture
def run_api(stack, accounts, tmp_path):
    if not api_command_exists():
        pytest.skip("`aifactory api` does not exist yet: the API half of the RBAC test has nothing to run")
    started: list[Process] = []
    key = stack.make_key(NAMESPACE)

    def start(scoped: dict[str, list[dict]]) -> tuple[str, dict[str, str]]:
        """The API's URL, and the headers with a management key of NAMESPACE's tenant."""
        bind_api(stack, scoped)
        config = kubeconfig_for(stack, API_SA, tmp_path / "api.kubeconfig")
        port = free_port()
        env = {**clean_env(config), "AIFACTORY_API_NAMESPACE": NAMESPACE,
               "AIFACTORY_API_OPERATOR_NAMESPACE": RELEASE_NAMESPACE}
        proc = Process([sys.executable, "-m", "aifactory", "api", "--host", "127.0.0.1", "--port", str(port)],
                       env, tmp_path / f"api-{len(started)}.log")
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/health", 60)
        return url, {"X-API-Key": key}

    yield start
    for proc in started:
        proc.stop()


FORBIDDEN_SIGNS = ("Not enough permissions", "Failed to post an event", "403", "Forbidden")


def test_api_without_create_on_aiservices_is_refused_in_kubernetes_words(stack, run_api):
    url, key = run_api(without_verb(rules("api"), "aiservices", "create"))
    assert httpx.get(f"{url}/api/v1/services", headers=key, timeout=30).status_code == 200  # list + watch granted
    answer = httpx.post(f"{url}/api/v1/services", json={"recipe_name": "testing/openai-echo"}, headers=key,
                        timeout=30)
    assert answer.status_code == 403, answer.text
    assert 'cannot create resource "aiservices"' in answer.json()["detail"]


def test_operator_runs_the_whole_flow_with_exactly_the_chart_rules(stack, run_operator, unique_name):
    operator = run_operator(rules("operator"))
    name = unique_name("rbac")
    stack.apply(stack.manifest(name, "testing/openai-echo", namespace=NAMESPACE))
    try:
        seen = stack.phases_until(name, "running", timeout=240, namespace=NAMESPACE)
        assert seen[0] == "pending", seen
        status = stack.get(name, NAMESPACE)["status"]
        assert httpx.get(f"{status['endpoint']}/health", timeout=5).status_code == 200
        # The transition events were posted next to the service (events: create).
        events = stack.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                               f"involvedObject.name={name}", "-o", "json").stdout
        reasons = {e["reason"] for e in json.loads(events)["items"]}
        assert {"Submitted", "Running"} <= reasons, reasons
    finally:
        stack.kubectl("delete", "ais", name, "-n", NAMESPACE, "--wait=false", "--ignore-not-found")
    stack.wait_gone(name, 60, namespace=NAMESPACE)
    assert stack.slurm_job(status["jobId"])["job_state"] == "CANCELLED"
    # Nothing was refused along the way: kopf says so in its log when a permission is missing.
    log = operator.text()
    assert not [line for line in log.splitlines() if any(s in line for s in FORBIDDEN_SIGNS)], log[-3000:]
    # The SlurmCluster (cluster-scoped, through the ClusterRole) was served too.
    assert "SlurmCluster default: polling" in log


def test_without_patch_on_aiservices_status_the_service_never_gets_a_phase(stack, run_operator, unique_name):
    operator = run_operator(without_verb(rules("operator"), "aiservices/status", "patch"))
    name = unique_name("norbac")
    stack.apply(stack.manifest(name, "testing/openai-echo", namespace=NAMESPACE))
    try:
        # The operator handles the service (its finalizer goes through the object, which it may patch) ...
        stack.wait_for(name, lambda o: o["metadata"].get("finalizers"), 30, namespace=NAMESPACE,
                       what="the operator's finalizer")
        # ... but its status writes are refused, so no phase ever appears.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # Another operator would write the status: the stack's one must stay stopped for this to mean anything.
            assert not devstack.OPERATOR.running(), "the stack's operator was started again during this test"
            assert not (stack.get(name, NAMESPACE) or {}).get("status", {}).get("phase")
            time.sleep(0.5)
        assert 'cannot patch resource "aiservices/status"' in operator.text(), operator.text()[-3000:]
    finally:
        # Give the permission back (kopf would otherwise retry the refused patch for a minute), then delete.
        operator.stop()
        run_operator(rules("operator"))
        stack.kubectl("delete", "ais", name, "-n", NAMESPACE, "--wait=false", "--ignore-not-found")
    # Whatever job was submitted is found by its tag and cancelled on delete.
    stack.wait_gone(name, 60, namespace=NAMESPACE)
    jobs = slurm_jobs_named(stack, f"ais-{NAMESPACE}-{name}")
    assert all(j["job_state"] in ("CANCELLED", "COMPLETED", "FAILED") for j in jobs), jobs


def test_api_lists_creates_reads_logs_and_deletes_with_exactly_the_chart_rules(stack, run_operator, run_api):
    run_operator(rules("operator"))
    url, key = run_api(rules("api"))
    with httpx.Client(base_url=url, timeout=30, headers=key) as api:
        listed = api.get("/api/v1/services")
        assert listed.status_code == 200, listed.text
        created = api.post("/api/v1/services", json={"recipe_name": "testing/openai-echo"})
        assert created.status_code == 201, created.text
        service_id = created.json()["id"]
        assert created.json()["namespace"] == NAMESPACE
        try:
            # A job id is enough here (the Slurm queue of the shared node may hold the job for a while).
            deadline = time.monotonic() + 60
            while not (state := api.get(f"/api/v1/services/{service_id}").json())["job_id"]:
                assert state["status"] == "pending" and time.monotonic() < deadline, state
                time.sleep(0.5)
            # Reading the job's output goes through the Slurm bridge with the JWT Secret (secrets: get).
            logs = api.get(f"/api/v1/services/{service_id}/logs")
            assert logs.status_code == 200 and logs.json()["job_id"] == state["job_id"], logs.text
            assert service_id in [s["id"] for s in api.get("/api/v1/services").json()]
        finally:
            stopped = api.delete(f"/api/v1/services/{service_id}")
        assert stopped.status_code == 200, stopped.text
    stack.wait_gone(service_id, 60, namespace=NAMESPACE)
    assert stack.slurm_job(state["job_id"])["job_state"] in ("CANCELLED", "COMPLETED")
