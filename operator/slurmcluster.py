"""SlurmCluster handlers: keep one bridge and one poller per cluster, and report reachability and nodes."""

from __future__ import annotations

import kopf
from pydantic import ValidationError

from aifactory.models import GROUP, VERSION, NodesStatus, SlurmClusterSpec
from aifactory.operator.clusters import registry


@kopf.on.resume(GROUP, VERSION, "slurmclusters")
@kopf.on.create(GROUP, VERSION, "slurmclusters")
@kopf.on.update(GROUP, VERSION, "slurmclusters", field="spec")
async def slurmcluster_connect(name: str, spec: dict, patch: kopf.Patch, **_) -> None:
    try:
        parsed = SlurmClusterSpec.model_validate(dict(spec))
    except ValidationError as exc:
        patch.status.update({"reachable": False, "message": f"invalid spec: {exc}"})
        raise kopf.PermanentError(f"invalid SlurmCluster spec: {exc}") from exc
    try:
        await registry.put(name, parsed)
    except Exception as exc:  # the Secret may be missing or unreadable: say so and retry
        patch.status.update({"reachable": False, "message": str(exc)})
        raise kopf.TemporaryError(f"cannot set up SlurmCluster {name}: {exc}", delay=10) from exc


@kopf.timer(GROUP, VERSION, "slurmclusters", interval=10.0, initial_delay=2.0)
async def slurmcluster_report(name: str, status: dict, patch: kopf.Patch, **_) -> None:
    try:
        cluster = registry.get(name)
    except LookupError:
        return
    poller = cluster.poller
    reachable = poller.reachable
    wanted = {"reachable": reachable, "apiVersion": cluster.bridge.api_version or None,
              "message": poller.last_error}
    nodes = await cluster.nodes.current()  # reads only when the last read is older than the node interval
    if nodes.read_at is not None:
        wanted["nodes"] = NodesStatus.model_validate(vars(nodes.summary)).wire()
    if {k: status.get(k) for k in wanted} != wanted:
        patch.status.update(wanted)


@kopf.on.delete(GROUP, VERSION, "slurmclusters", optional=True)
async def slurmcluster_disconnect(name: str, **_) -> None:
    await registry.remove(name)
