"""GET /metrics in Prometheus' text format: requests by route and status, and services by phase.

Small enough to keep without a client library; the chart's optional ServiceMonitor scrapes it.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Callable

from fastapi import FastAPI, Request, Response
from fastapi.params import Depends

from aifactory.models import Phase


class RequestMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds


def _route_of(request: Request) -> str:
    # The route's template (/api/v1/services/{service_id}), so that ids do not make one series each;
    # the router leaves the matched route in the scope.
    return getattr(request.scope.get("route"), "path", None) or "unmatched"


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(metrics: RequestMetrics, phases: Counter[str]) -> str:
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
    return "\n".join(lines) + "\n"


def install(app: FastAPI, phases: Callable[[], Counter[str]], dependencies: list[Depends] = ()) -> None:
    metrics = RequestMetrics()

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request.method, _route_of(request), response.status_code,
                        time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False, dependencies=list(dependencies))
    def prometheus_metrics() -> Response:
        return Response(render(metrics, phases()), media_type="text/plain; version=0.0.4")
