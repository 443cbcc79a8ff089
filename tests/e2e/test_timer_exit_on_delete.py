"""A resource deleted while its timer is mid-tick goes once the tick ends, not a minute later.

kopf removes a resource's finalizer only after the resource's timers have exited, and looks again, by default,
after 60 s. A service's timer is often mid-tick (a health probe, a Slurm call) when the service is deleted: in CI
services took a minute to go. A small kopf operator with the operator's own settings (aifactory.operator.tuning)
shows it on the real API server, with a ConfigMap whose timer is always in a 3-second tick.
"""

from __future__ import annotations

import json
import time

import kopf
from kopf.testing import KopfRunner

from aifactory.devstack.process import wait_until

TOY_OPERATOR = '''
import asyncio
import pathlib

import kopf

from aifactory.operator.tuning import tune

SELECTOR = {"aifactory.io/test": "timer-exit"}


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)  # reads KUBECONFIG now, unlike the kubernetes client


@kopf.on.startup()
def configure(settings, **_):
    tune(settings)


@kopf.timer("configmaps", labels=SELECTOR, interval=0.1)
async def tick(**_):
    pathlib.Path(MARK).write_text("in a tick")
    await asyncio.sleep(3)


@kopf.on.delete("configmaps", labels=SELECTOR)
def let_go(**_):
    pass
'''


def test_a_resource_deleted_mid_tick_goes_when_the_tick_ends(stack, tmp_path, monkeypatch, unique_name):
    mark = tmp_path / "ticking"
    toy = tmp_path / "toy_operator.py"
    toy.write_text(f"MARK = {str(mark)!r}\n" + TOY_OPERATOR)
    monkeypatch.setenv("KUBECONFIG", str(stack.kube.kubeconfig))
    name = unique_name("timer-exit")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": name, "namespace": "default", "labels": {"aifactory.io/test": "timer-exit"}}}
    # A registry of its own: only the toy's handlers, whatever this process imported before.
    with KopfRunner(["run", "--standalone", "--namespace", "default", str(toy)],
                    registry=kopf.OperatorRegistry()) as runner:
        stack.kubectl("apply", "-f", "-", stdin=json.dumps(configmap))
        wait_until(mark.exists, 60, "the timer to tick")
        got = json.loads(stack.kubectl("get", "configmap", name, "-n", "default", "-o", "json").stdout)
        assert got["metadata"].get("finalizers"), "kopf put no finalizer on it"
        deleted = time.monotonic()
        stack.kubectl("delete", "configmap", name, "-n", "default", "--wait=false")
        while time.monotonic() - deleted < 45:
            if "NotFound" in stack.kubectl("get", "configmap", name, "-n", "default", check=False).stderr:
                break
            time.sleep(0.2)
        took = time.monotonic() - deleted
    assert runner.exit_code == 0, runner.output
    # The tick ends within 3 s; kopf's default would hold the finalizer 60 s.
    assert took < 30, f"the ConfigMap went {took:.0f} s after its deletion"
