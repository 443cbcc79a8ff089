"""B5 data-path overhead: the same prompt to the same upstream directly, through aifactory's OpenAI endpoint (its
gateway, /v1/chat/completions routed by model), through the seed API's prompt shim and through LiteLLM's proxy, in
one run; and the same with streaming: time to first token and streams per second.

The upstream is `python -m aifactory.servers.openai_test_server`, the OpenAI-compatible TEST DOUBLE (it echoes
the prompt; no model), launched by an AIService of recipe testing/openai-echo as a real Slurm job. Latency is
measured with one connection (no queueing), throughput with many; wrk is the load generator and its own CPU
share is reported to show it is not the bottleneck.
"""

from __future__ import annotations

import os
import shutil
import time

from bench import streaming
from bench.context import ECHO_RECIPE, Context
from bench.peers import LiteLLMProxy, run_wrk
from bench.report import Benchmark, Figure, fmt
from bench.stack import api_answers, say
from bench.stats import difference, ratio

MODEL = "aifactory-echo-test"
PROMPT = "Say hello to the benchmark"
MAX_TOKENS = 16


def _start_upstream(ctx: Context, name: str) -> str | None:
    ctx.kube.create_service(ctx.namespace, name, {"recipe": ECHO_RECIPE})
    ok = ctx.watch.wait(lambda s: name in s and s[name].status.get("phase") in ("running", "failed", "cancelled"),
                        180, f"{name} to be running")
    seen = ctx.watch.get(name)
    if not ok or seen.status.get("phase") != "running":
        return None
    return seen.status.get("endpoint")


def _measure(label: str, url: str, body: dict, ctx: Context, auth: str | None = None) -> dict:
    sizes = ctx.sizes
    run_wrk(url, body, connections=4, seconds=sizes.warmup_seconds, auth=auth)  # warm-up: connections, caches, first requests
    latency = run_wrk(url, body, connections=1, seconds=sizes.latency_seconds, auth=auth)
    load = run_wrk(url, body, connections=sizes.connections, seconds=sizes.throughput_seconds, auth=auth)
    say(f"  {label}: p50 {latency['p50_us'] / 1000:.2f} ms, p95 {latency['p95_us'] / 1000:.2f} ms (1 connection); "
        f"{load['throughput_rps']:.0f} req/s ({sizes.connections} connections); wrk used "
        f"{load['wrk_cpu_share']:.0%} of a core; errors {latency['status_errors'] + load['status_errors']}")
    return {"latency": latency, "load": load}


def _measure_stream(label: str, url: str, body: dict, ctx: Context, auth: str | None = None) -> dict:
    sizes = ctx.sizes
    result = streaming.measure(url, {**body, "stream": True}, auth, seconds_latency=sizes.latency_seconds,
                               seconds_load=sizes.throughput_seconds, connections=sizes.connections)
    say(f"  {label} streaming: TTFT p50 {result['ttft_p50_ms'] or 0:.2f} ms (n={result['n']}); "
        f"{result['streams_per_s']:.0f} streams/s ({sizes.connections} at once); errors {result['errors']}")
    return result


def run(ctx: Context) -> Benchmark:
    sizes = ctx.sizes
    b5 = Benchmark("B5", "Data-path overhead: prompt via the shim and via LiteLLM's proxy, against the upstream "
                         "directly",
                   config={"upstream": "aifactory.servers.openai_test_server (TEST DOUBLE, via a Slurm job)",
                           "load generator": "wrk, 1 thread",
                           "latency run": f"1 connection, {sizes.latency_seconds:g} s",
                           "throughput run": f"{sizes.connections} connections, {sizes.throughput_seconds:g} s",
                           "max_tokens": MAX_TOKENS})
    name = ctx.name("echo")
    say(f"B5: starting the upstream test double as AIService {name}")
    litellm: LiteLLMProxy | None = None
    results: dict[str, dict] = {}
    streams: dict[str, dict] = {}
    if shutil.which("wrk") is None:
        b5.not_measured = "wrk is not installed (Debian package wrk; `make deps` installs it)"
        return b5
    try:
        endpoint = _start_upstream(ctx, name)
        if endpoint is None:
            b5.not_measured = f"the upstream service {name} did not become running"
            return b5
        chat = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
        results["direct"] = _measure("direct", f"{endpoint}/v1/chat/completions", chat, ctx)
        streams["direct"] = _measure_stream("direct", f"{endpoint}/v1/chat/completions", chat, ctx)

        why_no_shim = api_answers(ctx.access.api_url)
        key = f"Bearer {ctx.access.api_key}" if ctx.access.api_key else None
        if why_no_shim is None:
            gateway = {**chat, "model": name}  # routed by the service's name
            results["aifactory"] = _measure("aifactory", f"{ctx.access.api_url}/v1/chat/completions", gateway, ctx,
                                            auth=key)
            streams["aifactory"] = _measure_stream("aifactory", f"{ctx.access.api_url}/v1/chat/completions",
                                                   gateway, ctx, auth=key)
            prompt = {"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.0}
            results["shim"] = _measure("shim", f"{ctx.access.api_url}/api/v1/vllm/{name}/prompt", prompt, ctx,
                                       auth=key)
        else:
            b5.notes.append(f"aifactory not measured: {why_no_shim}.")

        why_no_litellm = LiteLLMProxy.missing()
        if why_no_litellm is None:
            litellm = LiteLLMProxy(f"{endpoint}/v1", MODEL)
            started = time.monotonic()
            try:
                litellm.start()
            except RuntimeError as exc:
                why_no_litellm = str(exc)
            else:
                b5.config["LiteLLM"] = f"{litellm.version()}, its proxy with 1 worker"
                say(f"  LiteLLM's proxy answered after {time.monotonic() - started:.1f}s")
                results["litellm"] = _measure("LiteLLM", f"{litellm.url}/v1/chat/completions", chat, ctx,
                                              auth=f"Bearer {litellm.key}")
                streams["litellm"] = _measure_stream("LiteLLM", f"{litellm.url}/v1/chat/completions", chat, ctx,
                                                     auth=f"Bearer {litellm.key}")
        if why_no_litellm is not None:
            b5.notes.append(f"LiteLLM not measured: {why_no_litellm}.")
    finally:
        if litellm is not None:
            litellm.stop()
        ctx.kube.delete_service(ctx.namespace, name)
        ctx.watch.wait(lambda s: name not in s or s[name].deleted_at is not None, 90, f"{name} to be deleted")

    load = os.getloadavg()
    b5.notes.append(f"Load average of the machine at the end of B5: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) on "
                    f"{os.cpu_count()} cores; other work on the machine moves every figure, so compare the figures "
                    "of one run, not of two.")
    b5.raw = {**results, "streaming": streams}
    _figures(b5, results)
    _stream_figures(b5, streams)
    return b5


def _figures(b5: Benchmark, results: dict[str, dict]) -> None:
    direct = results["direct"]
    d50, d95 = direct["latency"]["p50_us"] / 1000, direct["latency"]["p95_us"] / 1000
    b5.figures.append(Figure("direct to the upstream: latency p50", d50, "ms",
                             f"p95 {fmt(d95, 'ms')}; {direct['load']['throughput_rps']:.0f} req/s with "
                             f"{direct['load']['connections']} connections"))
    added = {}
    for key, label in (("aifactory", "aifactory /v1"), ("shim", "seed prompt shim"), ("litellm", "LiteLLM")):
        if key not in results:
            continue
        r = results[key]
        p50, p95 = r["latency"]["p50_us"] / 1000, r["latency"]["p95_us"] / 1000
        added[key] = (difference(p50, d50), difference(p95, d95), r["load"]["throughput_rps"])
        b5.figures.append(Figure(f"{label}: added latency p50", added[key][0], "ms",
                                 f"p50 {fmt(p50, 'ms')} vs direct {fmt(d50, 'ms')}; added p95 "
                                 f"{fmt(added[key][1], 'ms')} (p95 {fmt(p95, 'ms')})"))
        b5.figures.append(Figure(f"{label}: throughput", r["load"]["throughput_rps"], "req/s",
                                 f"{ratio(r['load']['throughput_rps'], direct['load']['throughput_rps']):.0%} of "
                                 f"direct; {r['load']['status_errors'] + r['load']['socket_errors']} errors"))
    ours, peer = added.get("aifactory"), added.get("litellm")
    direct_rps = direct["load"]["throughput_rps"]
    b5.figures.append(Figure.checked(
        "aifactory /v1: added latency p50 (target)", ours[0] if ours else None, "ms",
        "small request, one connection" if ours else "not measured", "<=", 1))
    b5.figures.append(Figure.checked(
        "aifactory /v1: throughput share of direct (target)", ratio(ours[2], direct_rps) * 100 if ours else None,
        "%", f"{ours[2]:.0f} vs {direct_rps:.0f} req/s" if ours else "not measured", ">=", 20))
    b5.figures.append(Figure.checked(
        "throughput, aifactory /v1 / LiteLLM", ratio(ours[2], peer[2]) if ours and peer else None, "x",
        "above 1 = aifactory serves more" if ours and peer else "needs both aifactory and LiteLLM", ">", 1))
    b5.figures.append(Figure.checked(
        "added latency p50, aifactory /v1 / LiteLLM", ratio(ours[0], peer[0]) if ours and peer else None, "x",
        "below 1 = aifactory adds less" if ours and peer else "needs both aifactory and LiteLLM", "<", 1))
    shares = [r["load"]["wrk_cpu_share"] for r in results.values()]
    b5.notes.append(f"wrk used at most {max(shares):.0%} of one core in the throughput runs (it is not the "
                    "bottleneck); the upstream, the proxy under test and wrk share the machine's 2 cores.")
    errors = {k: r["latency"]["status_errors"] + r["load"]["status_errors"] + r["load"]["socket_errors"]
              for k, r in results.items()}
    if any(errors.values()):
        b5.notes.append(f"Non-2xx answers or socket errors: {errors}.")


def _stream_figures(b5: Benchmark, streams: dict[str, dict]) -> None:
    direct = streams.get("direct")
    if not direct or direct["ttft_p50_ms"] is None:
        b5.notes.append("Streaming not measured: no stream from the upstream directly.")
        return
    b5.figures.append(Figure("streaming, direct: TTFT p50", direct["ttft_p50_ms"], "ms",
                             f"p95 {fmt(direct['ttft_p95_ms'], 'ms')}; {direct['streams_per_s']:.0f} streams/s with "
                             f"{direct['connections']} at once"))
    for key, label in (("aifactory", "aifactory /v1"), ("litellm", "LiteLLM")):
        r = streams.get(key)
        if not r or r["ttft_p50_ms"] is None:
            continue
        added = difference(r["ttft_p50_ms"], direct["ttft_p50_ms"])
        raw = (f"TTFT p50 {fmt(r['ttft_p50_ms'], 'ms')} vs direct {fmt(direct['ttft_p50_ms'], 'ms')}; "
               f"p95 {fmt(r['ttft_p95_ms'], 'ms')}; {r['errors']} errors")
        if key == "aifactory":
            b5.figures.append(Figure.checked(f"streaming, {label}: TTFT added p50 (target)", added, "ms", raw, "<=", 2))
        else:
            b5.figures.append(Figure(f"streaming, {label}: TTFT added p50", added, "ms", raw))
        b5.figures.append(Figure(f"streaming, {label}: streams per second", r["streams_per_s"], "/s",
                                 f"{ratio(r['streams_per_s'], direct['streams_per_s']):.0%} of direct"))
