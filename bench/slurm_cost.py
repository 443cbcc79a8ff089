"""B3 slurmctld cost: requests to slurmrestd (counted at the transport) with a growing number of live services."""

from __future__ import annotations

from bench.fleet import CLUSTER, Fleet
from bench.report import Benchmark, Figure, fmt
from bench.stack import say
from bench.stats import slope

TARGET_PER_INTERVAL = 2


def run(fleet: Fleet) -> Benchmark:
    sizes = fleet.ctx.sizes
    b3 = Benchmark("B3", "slurmctld cost: slurmrestd requests with N live services of one cluster",
                   config={"N": "/".join(map(str, sizes.fleet)), "window": f"{sizes.window_intervals} poll intervals",
                           "poll interval": f"{fleet.interval:g} s", "cluster": CLUSTER,
                           "counted at": "a loopback HTTP/1.1 proxy in front of slurmrestd"})
    b3.notes.append(fleet.how_pending[:1].upper() + fleet.how_pending[1:] + ".")
    points = []
    windows = []
    for n in sizes.fleet:
        say(f"B3: growing to {n} live services on {CLUSTER}")
        grown = fleet.grow_to(n)
        window = fleet.count_window(sizes.window_intervals)
        window["creation"] = grown
        windows.append(window)
        points.append((n, window["per_interval"]))
        say(f"  N={n}: {window['requests']} requests in {window['window_seconds']:.1f}s "
            f"({window['per_interval']:.2f} per poll interval, {window['per_minute']:.1f}/min): {window['by_kind']}; "
            f"creating {grown['added']} took {grown['until_all_job_ids_seconds']:.1f}s and "
            f"{sum(grown['slurmrestd_requests'].values())} requests")
        if not grown["complete"]:
            b3.notes.append(f"N={n}: only {grown['with_job_id']} of {n} services had a job id when counting began.")
    b3.raw = {"windows": windows}
    growth = slope(points)
    for w in windows:
        kinds = ", ".join(f"{k} {v}" for k, v in w["by_kind"].items()) or "none"
        b3.figures.append(Figure.checked(
            f"requests per poll interval, N={w['live']}", w["per_interval"], "count",
            f"{w['requests']} in {w['window_seconds']:.1f} s = {w['per_minute']:.1f}/min ({kinds})",
            "<=", TARGET_PER_INTERVAL))
    if growth is not None:
        b3.figures.append(Figure(
            "growth with N (requests per interval per added service)", growth, "",
            f"least-squares slope over N={'/'.join(str(p[0]) for p in points)}; 0 = flat"))
    creation = [w["creation"] for w in windows]
    b3.notes.append("Creating services costs requests too (not in the windows): " + "; ".join(
        f"+{c['added']}: {sum(c['slurmrestd_requests'].values())} requests "
        f"({', '.join(f'{k} {v}' for k, v in c['slurmrestd_requests'].items())})" for c in creation) + ".")
    b3.notes.append(f"Target: flat in N, at most {TARGET_PER_INTERVAL} requests per poll interval per cluster "
                    f"(each row is checked against {fmt(TARGET_PER_INTERVAL, 'count')}).")
    return b3
