"""`python3 -m bench [--quick] [--only B1,B5]`: run the benchmarks on the local stack, write bench/results/<date>.*

Order: B1/B2 and B5 first, on a quiet machine; then B3 and B4, which share one growing fleet of services.
Everything the run creates is labelled with its run id and removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import data_path, scale, slurm_cost, submit_readiness
from bench.context import REPO, Context, Sizes
from bench.fleet import Fleet
from bench.report import Benchmark, Run, render_markdown, render_table, replace_table
from bench.stack import BareSlurm, HostSteal, Kube, ServiceWatch, StackAccess, say

ALL = ("B1", "B2", "B3", "B4", "B5")
DOCS = REPO / "docs" / "performance.md"
TITLES = {"B1": "Submit overhead", "B2": "Readiness lag", "B3": "slurmctld cost", "B4": "Scale",
          "B5": "Data-path overhead"}


def machine() -> dict:
    def first(path: str, key: str) -> str | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip('"')
        except OSError:
            pass
        return None

    mem_kib = first("/proc/meminfo", "MemTotal")
    return {"cpus": os.cpu_count(), "cpu_model": first("/proc/cpuinfo", "model name"),
            "memory_gb": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
            "os": first("/etc/os-release", "PRETTY_NAME="), "kernel": platform.release(),
            "python": platform.python_version()}


def failed(bench_id: str, exc: BaseException) -> Benchmark:
    say(f"{bench_id} failed: {type(exc).__name__}: {exc}")
    traceback.print_exc()
    return Benchmark(bench_id, TITLES[bench_id], not_measured=f"the benchmark failed: {type(exc).__name__}: {exc}")


def measure(out: dict[str, Benchmark], ids: tuple[str, ...],
            run: Callable[[], Benchmark | tuple[Benchmark, ...]]) -> None:
    """Run one benchmark (or the ones measured together) into `out`, each noted with what the host took of the
    CPU meanwhile. One that fails is reported as failed: it must not hide the others."""
    steal = HostSteal()
    try:
        done = run()
    except Exception as exc:  # noqa: BLE001
        out.update({bench_id: failed(bench_id, exc) for bench_id in ids})
        return
    done = done if isinstance(done, tuple) else (done,)
    steal.tell(*done)
    out.update(zip(ids, done))


def run_all(ctx: Context, only: set[str]) -> list[Benchmark]:
    out: dict[str, Benchmark] = {}
    if only & {"B1", "B2"}:
        measure(out, ("B1", "B2"), lambda: submit_readiness.run(ctx))
    if "B5" in only:
        measure(out, ("B5",), lambda: data_path.run(ctx))
    if only & {"B3", "B4"}:
        fleet = Fleet(ctx)
        try:
            fleet.start()
            if "B3" in only:
                measure(out, ("B3",), lambda: slurm_cost.run(fleet))
            if "B4" in only:
                measure(out, ("B4",), lambda: scale.run(fleet))
        except Exception as exc:  # noqa: BLE001
            for b in only & {"B3", "B4"}:
                out.setdefault(b, failed(b, exc))
        finally:
            say("removing the fleet (services, SlurmCluster, proxy, partition)")
            left = fleet.stop()
            for b in only & {"B3", "B4"}:
                if left and b in out:
                    out[b].notes.append("Left behind after the run: " + "; ".join(left))
    return [out[b] for b in ALL if b in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs, for a shared stack")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated benchmarks (default: all)")
    parser.add_argument("--namespace", default="default",
                        help="where the services are made; the REST API lists this namespace (default: default)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results", help="output folder")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help=f"write the table into {DOCS.relative_to(REPO)} (default: on full runs only)")
    args = parser.parse_args(argv)
    only = {b.strip().upper() for b in args.only.split(",") if b.strip()}
    if not only <= set(ALL):
        parser.error(f"unknown benchmarks: {sorted(only - set(ALL))}")
    sizes = Sizes.quick() if args.quick else Sizes()
    started = time.monotonic()
    run_id = secrets.token_hex(3)
    say(f"run {run_id}, {'quick' if args.quick else 'full'} sizes: {sizes}")

    access = StackAccess.from_dev_env()
    kube = Kube(access, run_id)
    slurm = BareSlurm(access)
    watch = ServiceWatch(kube, args.namespace).start()
    ctx = Context(access, kube, slurm, watch, run_id, args.namespace, sizes)
    try:
        benchmarks = run_all(ctx, only)
    finally:
        if any(s.deleted_at is None for s in watch.seen.values()):
            say("deleting what is left of this run's services")
            kube.delete_all_services(args.namespace)
            watch.wait(lambda s: all(x.deleted_at is not None for x in s.values()), 300, "the last deletions")
        watch.stop()
        slurm.close()
        kube.close()

    now = datetime.now(UTC)
    run = Run(date=now.strftime("%Y-%m-%d %H:%M UTC"), machine=machine(), mode="quick" if args.quick else "full",
              duration_s=time.monotonic() - started, benchmarks=benchmarks)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    markdown = render_markdown(run)
    (args.results / f"{stem}.json").write_text(run.to_json())
    (args.results / f"{stem}.md").write_text(markdown)
    print(markdown)
    if args.docs if args.docs is not None else not args.quick:
        DOCS.write_text(replace_table(DOCS.read_text(), render_table(run)))
        say(f"updated the table in {DOCS.relative_to(REPO)}")
    say(f"wrote {args.results / stem}.json and .md in {run.duration_s / 60:.1f} min")
    return 0
