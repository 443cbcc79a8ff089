"""Pure arithmetic of the benchmarks: percentiles, ratios, rates, request keys. No I/O, no clocks."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, min, max and mean of the samples (None when there are none)."""
    if not samples:
        return {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}
    return {"n": len(samples), "p50": percentile(samples, 50), "p95": percentile(samples, 95),
            "min": min(samples), "max": max(samples), "mean": sum(samples) / len(samples)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def difference(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None:
        return None
    return value - baseline


def per_minute(count: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("a rate needs a window longer than zero")
    return count * 60.0 / seconds


def per_interval(count: int, seconds: float, interval: float) -> float:
    """Requests per poll interval over a window of `seconds`."""
    if seconds <= 0 or interval <= 0:
        raise ValueError("a rate needs a window and an interval longer than zero")
    return count * interval / seconds


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x: how a count grows with N (0 = flat). None for fewer than 2 x values."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


_NUMBER_SEGMENT = re.compile(r"/\d+(?=/|$)")


def request_key(method: str, target: str) -> str:
    """'GET /slurm/v0.0.38/job/123?x=1' -> 'GET /slurm/v0.0.38/job/{id}': one key per kind of request."""
    path = target.split("?", 1)[0]
    return f"{method.upper()} {_NUMBER_SEGMENT.sub('/{id}', path)}"


def count_kinds(requests: Iterable[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for method, target in requests:
        key = request_key(method, target)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def subtract(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Counts made between two snapshots of a counter."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    return dict(sorted((k, v) for k, v in out.items() if v))


def parse_wrk_result(output: str) -> dict:
    """The JSON line our wrk script prints at the end (`BENCH_RESULT {...}`)."""
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise ValueError("wrk printed no BENCH_RESULT line; its output was:\n" + output[-2000:])


def vm_rss_kib(proc_status: str, field: str = "VmRSS") -> int | None:
    """A memory field (kB) from the text of /proc/<pid>/status."""
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", proc_status, re.MULTILINE)
    return int(match.group(1)) if match else None


def cpu_ticks(proc_stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat; the command name may hold spaces."""
    fields = proc_stat.rsplit(")", 1)[1].split()
    # After the ")" come state (field 3) ... utime (14) and stime (15), 1-based in proc(5).
    return int(fields[11]) + int(fields[12])


def start_ticks(proc_stat: str) -> int:
    """starttime (clock ticks after boot) from the text of /proc/<pid>/stat."""
    return int(proc_stat.rsplit(")", 1)[1].split()[19])


def steal_ticks(proc_stat: str) -> tuple[int, int]:
    """(stolen, all) CPU ticks of the whole machine from the text of /proc/stat: what the host (hypervisor) ran
    elsewhere while this machine wanted the CPU, and the total. Guest time is counted within user time."""
    fields = proc_stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"not /proc/stat: {proc_stat[:40]!r}")
    # user nice system idle iowait irq softirq steal (proc(5)); kernels before 2.6.11 have no steal
    ticks = [int(v) for v in fields[1:9]]
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)


def steal_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the CPU time the host took between two readings of steal_ticks."""
    stolen, total = after[0] - before[0], after[1] - before[1]
    return stolen / total if total > 0 else None
