"""The pure parts of the benchmark suite: percentile math, ratios and rates, request keys, result parsing, the report.

No timings are asserted here; the benchmarks themselves run with `make bench`.
"""

from __future__ import annotations

import json

import pytest

from bench.report import Benchmark, Figure, Run, fmt, meets, missed, render_markdown, replace_table
from bench.stack import HostSteal
from bench.stats import (
    count_kinds,
    cpu_ticks,
    parse_wrk_result,
    per_interval,
    per_minute,
    percentile,
    ratio,
    request_key,
    slope,
    start_ticks,
    steal_share,
    steal_ticks,
    subtract,
    summary,
    vm_rss_kib,
)

# -- percentiles --------------------------------------------------------------------------------------------

def test_percentile_interpolates_between_ranks_like_numpy():
    samples = [10, 20, 30, 40]
    assert percentile(samples, 50) == pytest.approx(25.0)
    assert percentile(samples, 95) == pytest.approx(38.5)  # numpy.percentile([10,20,30,40], 95)
    assert percentile(samples, 0) == 10 and percentile(samples, 100) == 40


def test_percentile_does_not_depend_on_order():
    assert percentile([3, 1, 2], 50) == percentile([1, 2, 3], 50) == 2


def test_percentile_of_one_sample_is_that_sample():
    assert percentile([0.7], 95) == 0.7


@pytest.mark.parametrize("samples,q", [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_refuses_what_has_no_answer(samples, q):
    with pytest.raises(ValueError):
        percentile(samples, q)


def test_summary_of_samples_and_of_none():
    s = summary([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s["n"], s["p50"], s["min"], s["max"], s["mean"]) == (5, 3.0, 1.0, 5.0, 3.0)
    assert s["p95"] == pytest.approx(4.8)
    assert summary([]) == {"n": 0, "p50": None, "p95": None, "min": None, "max": None, "mean": None}


# -- ratios, rates, growth ----------------------------------------------------------------------------------

def test_ratio_and_its_unknowns():
    assert ratio(0.06, 0.02) == pytest.approx(3.0)
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None  # no baseline to compare with


def test_rates_over_a_window():
    assert per_minute(30, 60.0) == 30.0
    assert per_minute(5, 10.0) == 30.0
    assert per_interval(5, 10.0, 2.0) == 1.0
    with pytest.raises(ValueError):
        per_minute(1, 0)


def test_slope_is_zero_when_flat_and_positive_when_growing():
    assert slope([(10, 1.0), (50, 1.0), (200, 1.0)]) == pytest.approx(0.0)
    assert slope([(10, 10.0), (50, 50.0), (200, 200.0)]) == pytest.approx(1.0)
    assert slope([(10, 1.0)]) is None


# -- counting requests --------------------------------------------------------------------------------------

def test_request_key_drops_the_query_and_names_ids():
    assert request_key("get", "/slurm/v0.0.38/jobs?update_time=1700000000") == "GET /slurm/v0.0.38/jobs"
    assert request_key("DELETE", "/slurm/v0.0.38/job/12345") == "DELETE /slurm/v0.0.38/job/{id}"
    assert request_key("GET", "/slurm/v0.0.38/node/vm") == "GET /slurm/v0.0.38/node/vm"
    # The API version's digits are not an id.
    assert request_key("POST", "/slurm/v0.0.38/job/submit") == "POST /slurm/v0.0.38/job/submit"


def test_count_kinds_and_subtract_snapshots():
    before = count_kinds([("GET", "/slurm/v0.0.38/jobs"), ("GET", "/slurm/v0.0.38/job/1")])
    after = count_kinds([("GET", "/slurm/v0.0.38/jobs"), ("GET", "/slurm/v0.0.38/job/1"),
                         ("GET", "/slurm/v0.0.38/jobs?update_time=5"), ("GET", "/slurm/v0.0.38/job/2")])
    assert after == {"GET /slurm/v0.0.38/job/{id}": 2, "GET /slurm/v0.0.38/jobs": 2}
    assert subtract(after, before) == {"GET /slurm/v0.0.38/job/{id}": 1, "GET /slurm/v0.0.38/jobs": 1}


# -- reading outside programs' output -----------------------------------------------------------------------

def test_parse_wrk_result_finds_the_line_among_wrk_output():
    out = ("Running 2s test @ http://127.0.0.1:1/v1\n  1 threads and 1 connections\n"
           'BENCH_RESULT {"requests": 100, "duration_us": 2000000, "status_errors": 0, "socket_errors": 0, '
           '"p50_us": 250, "p95_us": 300, "p99_us": 900, "mean_us": 260.5}\n')
    result = parse_wrk_result(out)
    assert result["requests"] == 100 and result["p95_us"] == 300


def test_parse_wrk_result_says_what_wrk_printed_when_the_line_is_missing():
    with pytest.raises(ValueError, match="unable to connect"):
        parse_wrk_result("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_proc_fields():
    status = "Name:\tpython3\nVmHWM:\t  150000 kB\nVmRSS:\t  131072 kB\n"
    assert vm_rss_kib(status) == 131072
    assert vm_rss_kib(status, "VmHWM") == 150000
    assert vm_rss_kib("Name:\tkthreadd\n") is None
    # The command name may hold spaces and parentheses; utime=7, stime=3, starttime=4242.
    stat = "123 (python3 (x) y) S 1 123 123 0 -1 4194560 10 0 0 0 7 3 0 0 20 0 5 0 4242 1000 50"
    assert cpu_ticks(stat) == 10
    assert start_ticks(stat) == 4242


# -- the report ---------------------------------------------------------------------------------------------

def test_meets_reads_the_operator_and_unknown_stays_unknown():
    assert meets(2.9, "<=", 3) is True and meets(3.1, "<=", 3) is False
    assert meets(1.5, ">", 1) is True and meets(0.5, "<", 1) is True
    assert meets(None, "<=", 3) is None


def test_checked_figure_carries_its_target():
    f = Figure.checked("p50 ratio", 4.0, "x", "raw", "<=", 3)
    assert (f.target, f.met) == ("<= 3.00x", False)
    assert Figure.checked("memory", 120.0, "MB", "", "<=", 300).target == "<= 300 MB"


@pytest.mark.parametrize("value,unit,text", [
    (None, "ms", "not measured"), (2.345, "x", "2.35x"), (7.0, "count", "7"), (0.234, "ms", "0.23 ms"),
    (12.34, "s", "12.3 s"), (1234.5, "req/s", "1234 req/s"),
])
def test_fmt(value, unit, text):
    assert fmt(value, unit) == text


def _run() -> Run:
    b1 = Benchmark("B1", "Submit overhead", config={"N": 10},
                   figures=[Figure.checked("p50 ratio aifactory / bare", 4.2, "x", "aif 42 ms | bare 10 ms", "<=", 3)],
                   notes=["a note"])
    b2 = Benchmark("B2", "Readiness lag", figures=[Figure.checked("lag p50", 0.5, "s", "n=10", "<=", 1)])
    b4 = Benchmark("B4", "Scale", not_measured="the REST API does not answer")
    return Run(date="2026-01-02 03:04 UTC", machine={"cpus": 2, "cpu_model": "CPU", "memory_gb": 8}, mode="full",
               duration_s=600.0, benchmarks=[b1, b2, b4])


def test_markdown_has_one_row_per_figure_with_value_raw_numbers_and_verdict():
    text = render_markdown(_run())
    assert "2026-01-02 03:04 UTC" in text and "2 cores" in text
    rows = [line for line in text.splitlines() if line.startswith("| B")]
    assert rows[0] == ("| B1 | p50 ratio aifactory / bare | 4.20x | aif 42 ms \\| bare 10 ms | <= 3.00x | "
                       "**missed** |")
    assert rows[1] == "| B2 | lag p50 | 0.50 s | n=10 | <= 1.00 s | met |"
    assert rows[2] == "| B4 | Scale | not measured | the REST API does not answer | | |"
    assert "N=10" in text and "a note" in text


def test_missed_targets_are_listed():
    run = _run()
    assert [(b.id, f.name) for b, f in missed(run)] == [("B1", "p50 ratio aifactory / bare")]
    assert "- B1 p50 ratio aifactory / bare: 4.20x, target <= 3.00x." in render_markdown(run)


def test_json_keeps_every_figure_and_the_configuration():
    data = json.loads(_run().to_json())
    assert data["benchmarks"][0]["config"] == {"N": 10}
    assert data["benchmarks"][0]["figures"][0]["met"] is False
    assert data["benchmarks"][2]["not_measured"] == "the REST API does not answer"


def test_replace_table_rewrites_only_between_the_markers():
    doc = "intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\noutro\n"
    assert replace_table(doc, "new table\n") == "intro\n<!-- bench:start -->\nnew table\n<!-- bench:end -->\noutro\n"
    with pytest.raises(ValueError):
        replace_table("no markers here", "x")


def test_b1_says_and_cancels_the_jobs_its_deleted_services_left_running():
    from types import SimpleNamespace

    from bench.submit_readiness import _jobs_left_running

    class Slurm:
        states = {"11": "RUNNING", "12": "CANCELLED"}
        cancelled: list[str] = []

        def job(self, job_id):
            return {"job_state": self.states[job_id]} if job_id in self.states else None

        def cancel(self, job_id):
            self.cancelled.append(job_id)

    ctx = SimpleNamespace(slurm=Slurm())
    left = _jobs_left_running(ctx, {"s1": "11", "s2": "12", "s3": "13"}, patience=0)
    assert left == ["s1: its job 11 still ran 0s after the service was deleted"]
    assert ctx.slurm.cancelled == ["11"]


# -- the host's share of the CPU (steal) ------------------------------------------------------------------------

PROC_STAT = ("cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\n"
             "cpu0 1 0 1 1 0 0 0 0 0 0\nintr 12345\n")


def test_steal_ticks_reads_the_machine_line_of_proc_stat():
    assert steal_ticks(PROC_STAT.format(user=100, system=50, idle=800, steal=50)) == (50, 1000)
    assert steal_ticks("cpu  10 0 5 85\n") == (0, 100)  # a kernel without the steal column
    with pytest.raises(ValueError, match="not /proc/stat"):
        steal_ticks("Name:\tpython3\n")


def test_steal_share_is_the_stolen_part_of_the_time_between_two_readings():
    assert steal_share((50, 1000), (80, 1200)) == pytest.approx(30 / 200)
    assert steal_share((50, 1000), (50, 1000)) is None  # no time went by


def test_host_steal_notes_each_benchmark_with_what_the_host_took_meanwhile():
    readings = iter([PROC_STAT.format(user=100, system=50, idle=800, steal=50),
                     PROC_STAT.format(user=200, system=100, idle=1600, steal=100)])
    steal = HostSteal(read=lambda: next(readings))
    b1, b2 = Benchmark("B1", "Submit overhead"), Benchmark("B2", "Readiness lag")
    steal.tell(b1, b2)
    for benchmark in (b1, b2):
        assert benchmark.raw["host_steal_share"] == pytest.approx(0.05)
        assert "The host took 5.0% of this machine's CPU time" in benchmark.notes[-1]


def test_measure_notes_what_the_host_took_and_reports_a_failure_for_each_benchmark_measured_together(monkeypatch):
    import bench.run as bench_run

    readings = iter([PROC_STAT.format(user=100, system=50, idle=800, steal=50),
                     PROC_STAT.format(user=200, system=100, idle=1500, steal=200)])
    monkeypatch.setattr(bench_run, "HostSteal", lambda: HostSteal(read=lambda: next(readings)))
    out: dict[str, Benchmark] = {}
    b1, b2 = Benchmark("B1", "Submit overhead"), Benchmark("B2", "Readiness lag")
    bench_run.measure(out, ("B1", "B2"), lambda: (b1, b2))
    assert out == {"B1": b1, "B2": b2}
    assert b2.raw["host_steal_share"] == pytest.approx(0.15)

    def broken():
        raise RuntimeError("no stack")

    readings = iter([PROC_STAT.format(user=1, system=1, idle=1, steal=0)] * 2)
    bench_run.measure(out, ("B3", "B4"), broken)
    assert out["B3"].not_measured == out["B4"].not_measured == "the benchmark failed: RuntimeError: no stack"
