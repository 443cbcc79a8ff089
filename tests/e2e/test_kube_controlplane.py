"""The local Kubernetes control plane (etcd + kube-apiserver built from Debian's source) really works.

Brings the control plane up (or reuses a running one) and checks with kubectl: custom resources (the path that
crashed with the vendored reflect2), RBAC for ServiceAccount tokens, and the TokenRequest API.
Only what this module started is stopped at the end.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from aifactory.devstack.kube import KubeControlPlane

pytestmark = pytest.mark.e2e

NAMESPACE = "aifactory-e2e-kube"  # reused across runs: without a controller-manager a namespace cannot be deleted
GROUP = "e2e.aifactory.test"
PLURAL = "widgets"
CRD_NAME = f"{PLURAL}.{GROUP}"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["replicas"],
                        "properties": {
                            "replicas": {"type": "integer", "minimum": 0},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            }},
        }],
    },
}


@pytest.fixture(scope="module")
def cp():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    plane = KubeControlPlane()
    status = plane.status()
    before = {plane.apiserver: status["kube-apiserver"].startswith("running"),
              plane.etcd: status["etcd"].startswith("running")}
    plane.up()
    yield plane
    # Leave a control plane that was already running alone; stop only what this module started.
    for mp, was_running in before.items():
        if not was_running:
            mp.stop()


def kubectl(cp: KubeControlPlane, *args: str, input: str | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess:
    res = subprocess.run(["kubectl", "--kubeconfig", str(cp.kubeconfig), *args], input=input,
                         capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def apply(cp: KubeControlPlane, obj: dict) -> None:
    kubectl(cp, "apply", "-f", "-", input=json.dumps(obj))


def http_get(cp: KubeControlPlane, path: str, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(cp.server + path, headers={"Authorization": f"Bearer {token}"})
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def namespace(cp):
    if kubectl(cp, "get", "namespace", NAMESPACE, check=False).returncode != 0:
        kubectl(cp, "create", "namespace", NAMESPACE)
    return NAMESPACE


@pytest.fixture(scope="module")
def widget_crd(cp):
    apply(cp, CRD)
    kubectl(cp, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")
    yield CRD_NAME
    kubectl(cp, "delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=false", check=False)


def test_status_reports_both_processes(cp):
    status = cp.status()
    assert status["etcd"].startswith("running (pid ") and f":{cp.etcd_port}" in status["etcd"]
    assert status["kube-apiserver"].startswith("running (pid ") and f":{cp.apiserver_port}" in status["kube-apiserver"]


def test_up_is_idempotent(cp):
    before = (cp.etcd.pid(), cp.apiserver.pid())
    cp.up(progress=lambda _msg: None)
    assert (cp.etcd.pid(), cp.apiserver.pid()) == before


def test_server_version_is_the_built_apiserver(cp):
    status, body = http_get(cp, "/version", cp.admin_token())
    assert status == 200
    assert (body["major"], body["minor"]) == ("1", "20"), body


def test_custom_resource_roundtrip(cp, namespace, widget_crd):
    name = f"w-{secrets.token_hex(3)}"
    widget = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name, "namespace": namespace},
              "spec": {"replicas": 3, "labels": {"tier": "gold", "team": "ai"}}}
    try:
        apply(cp, widget)
        got = json.loads(kubectl(cp, "get", f"{PLURAL}.{GROUP}", name, "-n", namespace, "-o", "json").stdout)
        assert got["spec"] == {"replicas": 3, "labels": {"tier": "gold", "team": "ai"}}
        assert got["metadata"]["uid"] and got["metadata"]["resourceVersion"]

        # The status subresource is separate from the main resource.
        kubectl(cp, "patch", f"{PLURAL}.{GROUP}", name, "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"phase": "Ready"}}))
        got = json.loads(kubectl(cp, "get", f"{PLURAL}.{GROUP}", name, "-n", namespace, "-o", "json").stdout)
        assert got["status"] == {"phase": "Ready"}
        assert got["spec"]["replicas"] == 3

        listed = json.loads(kubectl(cp, "get", f"{PLURAL}.{GROUP}", "-n", namespace, "-o", "json").stdout)
        assert name in [item["metadata"]["name"] for item in listed["items"]]

        # Schema validation runs: a string where an integer belongs is refused.
        bad = dict(widget, metadata={"name": f"{name}-bad", "namespace": namespace}, spec={"replicas": "many"})
        res = kubectl(cp, "apply", "-f", "-", input=json.dumps(bad), check=False)
        assert res.returncode != 0 and "replicas" in res.stderr, res.stderr
    finally:
        kubectl(cp, "delete", f"{PLURAL}.{GROUP}", name, "-n", namespace, "--ignore-not-found", check=False)
    assert kubectl(cp, "get", f"{PLURAL}.{GROUP}", name, "-n", namespace, check=False).returncode != 0


def test_serviceaccount_token_and_rbac(cp, namespace, widget_crd):
    sa = f"e2e-reader-{secrets.token_hex(3)}"
    role = f"{sa}-role"
    kubectl(cp, "create", "serviceaccount", sa, "-n", namespace)
    try:
        # TokenRequest API (there is no token controller, so this is the only way to get a token).
        token = kubectl(cp, "create", "token", sa, "-n", namespace, "--duration=10m").stdout.strip()
        assert token.count(".") == 2, "expected a JWT"

        path = f"/apis/{GROUP}/v1/namespaces/{namespace}/{PLURAL}"
        code, body = http_get(cp, path, token)
        assert code == 403, (code, body)
        # Authenticated as the ServiceAccount (a bad token would be 401), but not authorized.
        assert f"system:serviceaccount:{namespace}:{sa}" in body.get("message", ""), body

        kubectl(cp, "create", "role", role, "-n", namespace, "--verb=get,list", f"--resource={PLURAL}.{GROUP}")
        kubectl(cp, "create", "rolebinding", role, "-n", namespace, f"--role={role}",
                f"--serviceaccount={namespace}:{sa}")
        deadline = time.monotonic() + 15  # the RBAC authorizer reads roles through an informer cache
        while True:
            code, body = http_get(cp, path, token)
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert code == 200, (code, body)
        assert body["kind"] == "WidgetList"

        # The binding grants only this namespace's widgets: other resources stay forbidden.
        code, _ = http_get(cp, f"/api/v1/namespaces/{namespace}/secrets", token)
        assert code == 403
    finally:
        for kind, name in (("rolebinding", role), ("role", role), ("serviceaccount", sa)):
            kubectl(cp, "delete", kind, name, "-n", namespace, "--ignore-not-found", check=False)


def test_admin_token_file_is_private(cp):
    for path in (cp.kubeconfig, cp.pki_dir / "admin.token", cp.token_file, cp.pki_dir / "sa.key"):
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
