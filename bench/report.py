"""The benchmark report: figures checked against their targets, rendered as JSON and as a Markdown table. Pure."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

_OPERATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def meets(value: float | None, op: str, limit: float) -> bool | None:
    """Whether a measured value meets a target such as `<= 3`; None when it was not measured."""
    if value is None:
        return None
    return _OPERATORS[op](value, limit)


@dataclass
class Figure:
    """One reported number: a ratio, a count or a time from this run, with the raw numbers it comes from."""

    name: str
    value: float | None
    unit: str = ""
    raw: str = ""
    target: str | None = None  # e.g. "<= 3"
    met: bool | None = None

    @classmethod
    def checked(cls, name: str, value: float | None, unit: str, raw: str, op: str, limit: float) -> Figure:
        """A figure with its target, e.g. op "<=" and limit 3 for "at most 3"."""
        return cls(name, value, unit, raw, f"{op} {fmt(limit, unit)}", meets(value, op, limit))


@dataclass
class Benchmark:
    id: str
    title: str
    config: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    not_measured: str | None = None  # why, when the benchmark could not run

    def config_line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


@dataclass
class Run:
    date: str
    machine: dict[str, Any]
    mode: str  # "full" or "quick"
    duration_s: float | None = None
    benchmarks: list[Benchmark] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False, default=str) + "\n"


def fmt(value: float | None, unit: str = "") -> str:
    """A value for the table: ratios with an x, times and sizes with their unit, counts as integers."""
    if value is None:
        return "not measured"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "count":
        return f"{value:.0f}"
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def verdict(met: bool | None, target: str | None) -> str:
    if target is None:
        return ""
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def missed(run: Run) -> list[tuple[Benchmark, Figure]]:
    return [(b, f) for b in run.benchmarks for f in b.figures if f.target is not None and f.met is False]


def render_table(run: Run) -> str:
    """When and where, then one row per figure: what the README and docs/performance.md show."""
    m = run.machine
    lines = [
        f"Measured {run.date} on {m.get('cpus', '?')} cores ({m.get('cpu_model', 'unknown CPU')}), "
        f"{m.get('memory_gb', '?')} GB RAM, {m.get('os', '')}; Python {m.get('python', '?')}. "
        f"Mode: {run.mode}" + (f"; the run took {run.duration_s / 60:.1f} min." if run.duration_s else "."),
        "",
        "| | figure | value | raw numbers | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for b in run.benchmarks:
        if b.not_measured and not b.figures:
            lines.append(f"| {b.id} | {_cell(b.title)} | not measured | {_cell(b.not_measured)} | | |")
            continue
        for f in b.figures:
            lines.append(f"| {b.id} | {_cell(f.name)} | {fmt(f.value, f.unit)} | {_cell(f.raw)} | "
                         f"{_cell(f.target or '')} | {verdict(f.met, f.target)} |")
    return "\n".join(lines) + "\n"


def render_markdown(run: Run) -> str:
    lines = [
        f"# aifactory benchmarks, {run.date}",
        "",
        "All numbers come from this one run on the local stack; targets are reported, never asserted.",
        "",
        render_table(run),
        "## Configuration and notes",
        "",
    ]
    for b in run.benchmarks:
        lines.append(f"- **{b.id} {b.title}**: {b.config_line() or 'no configuration'}.")
        if b.not_measured:
            lines.append(f"  - Not measured: {b.not_measured}")
        for note in b.notes:
            lines.append(f"  - {note}")
    gaps = missed(run)
    lines += ["", "## Missed targets", ""]
    if gaps:
        lines += [f"- {b.id} {f.name}: {fmt(f.value, f.unit)}, target {f.target}." for b, f in gaps]
    else:
        lines.append("- none")
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- bench:start -->", "<!-- bench:end -->"


def replace_table(document: str, table: str) -> str:
    """The document with the text between its two bench markers replaced by `table`."""
    start, end = document.find(TABLE_START), document.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {TABLE_START} ... {TABLE_END} block")
    return document[:start + len(TABLE_START)] + "\n" + table + document[end:]
