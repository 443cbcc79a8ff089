"""GET /metrics in Prometheus' text format: requests by route and status, services by phase, and the gateway's
requests and tokens per service and per key.

Small enough to keep without a client library; the chart's optional ServiceMonitor scrapes it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

from fastapi import FastAPI, Response
from fastapi.params import Depends

from aifactory.models import Phase


class RequestMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(metrics: RequestMetrics, phases: Counter[str], traffic=None) -> str:
    lines = ["# HELP aifactory_api_requests_total HTTP requests answered, by route and status.",
             "# TYPE aifactory_api_requests_total counter"]
    for (method, route, status), count in sorted(metrics.requests.items()):
        lines.append(f'aifactory_api_requests_total{{method="{method}",route="{_label(route)}",status="{status}"}} '
                     f"{count}")
    lines += ["# HELP aifactory_api_request_seconds_sum Time spent answering, by route.",
              "# TYPE aifactory_api_request_seconds_sum counter"]
    for (method, route), seconds in sorted(metrics.seconds.items()):
        lines.append(f'aifactory_api_request_seconds_sum{{method="{method}",route="{_label(route)}"}} {seconds:.6f}')
    lines += ["# HELP aifactory_services AIService resources the API sees, by phase.",
              "# TYPE aifactory_services gauge"]
    for phase in Phase:
        lines.append(f'aifactory_services{{phase="{phase.value}"}} {phases.get(phase.value, 0)}')
    if traffic is not None:
        lines += ["# HELP aifactory_gateway_requests_total Requests the gateway forwarded, by service.",
                  "# TYPE aifactory_gateway_requests_total counter"]
        for (namespace, name), tally in sorted(traffic.services.items()):
            lines.append(f'aifactory_gateway_requests_total{{namespace="{_label(namespace)}",'
                         f'service="{_label(name)}"}} {tally.requests}')
        lines += ["# HELP aifactory_gateway_tokens_total Tokens the services reported (usage), by service and kind.",
                  "# TYPE aifactory_gateway_tokens_total counter"]
        for (namespace, name), tally in sorted(traffic.services.items()):
            for kind, count in (("prompt", tally.prompt_tokens), ("completion", tally.completion_tokens)):
                lines.append(f'aifactory_gateway_tokens_total{{namespace="{_label(namespace)}",'
                             f'service="{_label(name)}",kind="{kind}"}} {count}')
        lines += ["# HELP aifactory_gateway_key_tokens_total Tokens the services reported, by API key and kind.",
                  "# TYPE aifactory_gateway_key_tokens_total counter"]
        for (tenant, key_id), tally in sorted(traffic.keys.items()):
            for kind, count in (("prompt", tally.prompt_tokens), ("completion", tally.completion_tokens)):
                lines.append(f'aifactory_gateway_key_tokens_total{{tenant="{_label(tenant)}",key="{_label(key_id)}",'
                             f'kind="{kind}"}} {count}')
    return "\n".join(lines) + "\n"


class CountRequests:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware would copy every streamed answer through a queue)."""

    def __init__(self, app, metrics: RequestMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


def install(app: FastAPI, phases: Callable[[], Counter[str]], dependencies: list[Depends] = (),
            traffic=None) -> None:
    metrics = RequestMetrics()
    app.add_middleware(CountRequests, metrics=metrics)

    @app.get("/metrics", include_in_schema=False, dependencies=list(dependencies))
    def prometheus_metrics() -> Response:
        return Response(render(metrics, phases(), traffic), media_type="text/plain; version=0.0.4")
