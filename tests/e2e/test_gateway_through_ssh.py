"""The OpenAI endpoint where compute nodes are reachable only through the login node: a SlurmCluster with transport
ssh-tunnel (real sshd on a loopback port), a service on it, and the gateway's requests carried by the API's own SSH
connection to that login node."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import yaml

from aifactory.devstack import stack as devstack
from aifactory.devstack.sshd import LocalSshd, free_port

CLUSTER = "gw-tunnel"
KEY_SECRET = "gw-tunnel-ssh-key"


@pytest.fixture(scope="module")
def tunnel_cluster(stack, tmp_path_factory):
    port = free_port()
    sshd = LocalSshd(port=port, base_dir=tmp_path_factory.mktemp("gw-sshd"), name=f"sshd-gw-{port}")
    sshd.up()
    stack.kubectl("create", "secret", "generic", KEY_SECRET, "-n", devstack.NAMESPACE,
                  f"--from-literal=ssh-privatekey={sshd.private_key()}", check=False)
    spec = devstack.default_slurmcluster(stack.slurm)["spec"]
    spec.update(transport="ssh-tunnel", ssh={
        "host": "127.0.0.1", "port": port, "user": sshd.user, "knownHosts": sshd.known_hosts(),
        "keySecretRef": {"name": KEY_SECRET, "namespace": devstack.NAMESPACE}})
    stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "aifactory.io/v1alpha1", "kind": "SlurmCluster", "metadata": {"name": CLUSTER}, "spec": spec}))
    yield sshd
    stack.kubectl("delete", "slurmcluster", CLUSTER, "--ignore-not-found", check=False)
    stack.kubectl("delete", "secret", KEY_SECRET, "-n", devstack.NAMESPACE, "--ignore-not-found", check=False)
    sshd.down()


def logins(sshd: LocalSshd) -> int:
    return sshd.process.log_file.read_text(errors="replace").count("Accepted publickey")


def test_the_gateway_reaches_a_service_through_the_login_node(stack, services, unique_name, tunnel_cluster):
    name = services(unique_name("tunnelled"), "testing/openai-echo", cluster=CLUSTER)
    status = stack.wait_for(name, lambda o: (o.get("status") or {}).get("phase") == "running", 180,
                            what="running")["status"]
    before = logins(tunnel_cluster)  # the operator's connection (jobs, probes) is open already
    with httpx.Client(timeout=60, trust_env=False) as http:
        answer = http.post(f"{stack.api_url}/v1/chat/completions", headers={"Authorization": f"Bearer {stack.api_key}"},
                           json={"model": name, "stream": True, "messages": [{"role": "user", "content": "via ssh"}]})
    assert answer.status_code == 200, answer.text
    assert answer.text.rstrip().endswith("data: [DONE]") and '"content":" ssh"' in answer.text
    # The API logged in to the login node to carry the request: its own connection, made for the gateway.
    deadline = time.monotonic() + 5
    while logins(tunnel_cluster) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert logins(tunnel_cluster) == before + 1, json.dumps(status)
