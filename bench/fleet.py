"""Many live AIServices on one SlurmCluster whose slurmrestd traffic is counted: the ground of B3 and B4.

The SlurmCluster `bench-proxied` is the stack's `default` with its url pointed at a counting proxy in front of
the same slurmrestd (same token Secret). Its jobs go to a partition the benchmark creates DOWN at run time
(`scontrol create PartitionName=bench-held ... State=DOWN`), so they stay PENDING (reason PartitionDown): real
jobs the poller must follow, without taking the node's CPUs. When the partition cannot be made, the jobs queue
in the default partition behind the node's CPUs instead (reason Resources), and the report says so.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

from bench.context import ECHO_RECIPE, Context
from bench.counting_proxy import CountingProxy
from bench.stack import say
from bench.stats import per_interval, per_minute, subtract

CLUSTER = "bench-proxied"
PARTITION = "bench-held"


class Fleet:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.proxy = CountingProxy(ctx.access.slurm_url)
        self.names: list[str] = []
        self.interval = 2.0
        self.partition: str | None = None
        self.made_partition = False
        self.made_cluster = False
        self.how_pending = ""

    # -- set-up and tear-down ---------------------------------------------------------------------------

    def _hold_partition(self) -> None:
        slurm = self.ctx.slurm
        if slurm.scontrol("show", "partition", PARTITION).returncode != 0:
            made = slurm.scontrol("create", f"PartitionName={PARTITION}", "Nodes=ALL", "State=DOWN",
                                  "Default=NO")
            if made.returncode != 0:
                self.how_pending = (f"jobs queue in the default partition behind the node's CPUs (reason "
                                    f"Resources): a DOWN partition could not be made: {made.stderr.strip()}")
                return
            self.made_partition = True
        else:
            slurm.scontrol("update", f"PartitionName={PARTITION}", "State=DOWN")
        self.partition = PARTITION
        self.how_pending = (f"jobs stay PENDING (reason PartitionDown) in partition {PARTITION}, made DOWN at run "
                            "time, so they take no CPU; each is still a real job the poller follows")

    def start(self) -> None:
        self._hold_partition()
        self.proxy.start()
        default = self.ctx.kube.cluster("default")
        if default is None:
            raise RuntimeError("SlurmCluster 'default' does not exist: run `aifactory dev up` first")
        spec = copy.deepcopy(default["spec"])
        spec["url"] = self.proxy.url
        if self.partition:
            spec["partition"] = self.partition
        self.interval = float(spec.get("pollIntervalSeconds", 5.0))
        if self.ctx.kube.cluster(CLUSTER) is not None:  # left by an interrupted run
            self.ctx.kube.delete_cluster(CLUSTER)
            time.sleep(2)
        self.ctx.kube.create_cluster(CLUSTER, spec)
        self.made_cluster = True
        # The operator has connected once its poller asks Slurm through the proxy.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("/jobs" in k for k in self.proxy.snapshot()):
            time.sleep(0.2)
        if not any("/jobs" in k for k in self.proxy.snapshot()):
            raise RuntimeError(f"the operator did not start polling SlurmCluster {CLUSTER} within 60s")
        say(f"SlurmCluster {CLUSTER} polls slurmrestd through the counting proxy at {self.proxy.url} "
            f"every {self.interval:g}s; {self.how_pending}")

    def delete_services(self, timeout: float) -> bool:
        if not self.names:
            return True
        self.ctx.kube.delete_all_services(self.ctx.namespace)
        names = set(self.names)
        gone = self.ctx.watch.wait(lambda s: all(s[n].deleted_at is not None for n in names if n in s), timeout,
                                   f"{len(names)} services to be deleted")
        if gone:
            self.names = []
        return gone

    def stop(self, timeout: float = 600.0) -> list[str]:
        """Delete what the fleet made, in order; returns what could not be cleaned up."""
        left = []
        if not self.delete_services(timeout):
            left.append(f"AIServices labelled {self.ctx.kube.selector} in {self.ctx.namespace}")
        if self.made_cluster and not left:
            self.ctx.kube.delete_cluster(CLUSTER)
            time.sleep(1)
        elif self.made_cluster:
            left.append(f"SlurmCluster {CLUSTER} (kept: its services still wait for their jobs to end)")
        self.proxy.stop()
        if self.made_partition and not left:
            gone = self.ctx.slurm.scontrol("delete", f"PartitionName={PARTITION}")
            if gone.returncode != 0:
                left.append(f"Slurm partition {PARTITION} (DOWN): {gone.stderr.strip()}")
        return left

    # -- growing it and counting ------------------------------------------------------------------------

    def grow_to(self, n: int) -> dict:
        """Create services until n are live; wait until each has a job id. Returns what the creation cost."""
        start_count = self.proxy.snapshot()
        first = len(self.names)
        new = [self.ctx.name(f"f{i}") for i in range(first, n)]
        spec = {"recipe": ECHO_RECIPE, "cluster": CLUSTER}
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: self.ctx.kube.create_service(self.ctx.namespace, name, spec), new))
        self.names += new
        created = time.monotonic()
        names = set(self.names)
        complete = self.ctx.watch.wait(
            lambda s: all(n in s and s[n].job_id_at for n in names), min(600.0, 120 + 1.0 * len(new)),
            f"{len(new)} services to get job ids")
        done = time.monotonic()
        with_job = sum(1 for n in self.names if (self.ctx.watch.get(n) or None) and self.ctx.watch.get(n).job_id_at)
        return {"added": len(new), "live": len(self.names), "with_job_id": with_job, "complete": complete,
                "create_calls_seconds": created - started, "until_all_job_ids_seconds": done - started,
                "slurmrestd_requests": subtract(self.proxy.snapshot(), start_count)}

    def count_window(self, intervals: int) -> dict:
        """slurmrestd requests during `intervals` poll intervals, after one interval for the dust to settle."""
        time.sleep(self.interval)
        start = time.monotonic()
        time.sleep(intervals * self.interval)
        end = time.monotonic()
        kinds = self.proxy.between(start, end)
        total = sum(kinds.values())
        seconds = end - start
        return {"live": len(self.names), "window_seconds": seconds, "requests": total, "by_kind": kinds,
                "per_minute": per_minute(total, seconds), "per_interval": per_interval(total, seconds, self.interval)}
