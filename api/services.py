"""The service verbs, once, below every face: find, create, delete a service, read its logs, reach its endpoint.

Each verb takes the caller (a Principal) and applies tenancy here, so every face gets the same rules: a caller
sees and changes only its tenant's services (an admin: every tenant's); another tenant's service does not exist
for it (404). The faces translate their requests into these calls and the results into their words.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from aifactory.api.aiservices import (
    aiservice_manifest,
    availability,
    find_service,
    service_name,
)
from aifactory.api.errors import Conflict, NotFound, ServiceNotAvailable
from aifactory.api.identity.principal import Forbidden, Principal
from aifactory.api.traffic import key_of
from aifactory.recipes import RecipeNotFound
from kubernetes.client.rest import ApiException

from aifactory import preflight
from aifactory.lifecycle import ACTION_ANNOTATION, SpecError, action_value, parse_rfc3339
from aifactory.models import AIServiceSpec, Phase, PreflightResult, Recipe, Resources, TenantQuotas, TenantSpec
from aifactory.slurm.jobs import SlurmJob

NAME_ATTEMPTS = 3  # a clash of the random suffix is rare; a second one rarer still
MAX_LOG_LINES = 10_000


@dataclass(frozen=True)
class LogTail:
    text: str
    job_id: str | None
    attempt: int | None = None


def phase_of(obj: dict) -> Phase | None:
    phase = (obj.get("status") or {}).get("phase")
    return Phase(phase) if phase in Phase._value2member_map_ else None


def holds_job(obj: dict) -> bool:
    """Whether the service holds (or is about to hold) a Slurm job: what the running limits count."""
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return False
    phase = phase_of(obj)
    if phase is None:
        return not (obj.get("spec") or {}).get("stopped")
    return not phase.finished


@dataclass(frozen=True)
class Where:
    """Where a service that cannot answer yet is: for a 503's body and its Retry-After."""

    message: str
    retry_after: int | None
    details: dict


class ServiceVerbs:
    def __init__(self, state) -> None:
        self.state = state
        self._pools: dict[str, tuple[object, object]] = {}  # cluster -> (its bridge, the gateway's pool over it)

    @property
    def store(self):
        return self.state.store

    # ---- read -----------------------------------------------------------------------------------------

    def visible(self, caller: Principal) -> list[dict]:
        """The services the caller may see, oldest first."""
        return self.store.list_services(None if caller.is_admin else caller.tenant)

    def listing(self, caller: Principal, render) -> bytes:
        """render(visible(caller)), kept until a service changes (a thousand services are costly to render)."""
        return self.store.services_listing(None if caller.is_admin else caller.tenant, render)

    def get(self, caller: Principal, service_id: str) -> dict:
        """A service by name (or its Slurm job id); an admin's own tenant comes first when a name is in several."""
        objects = self.visible(caller)
        if caller.is_admin:
            own = [o for o in objects if o["metadata"].get("namespace") == caller.tenant]
            found = find_service(own, service_id)
            if found is not None:
                return found
        found = find_service(objects, service_id)
        if found is None:
            raise NotFound("Service not found")
        return found

    def for_model(self, caller: Principal, model: str) -> dict:
        """The service a request for `model` goes to: the caller's tenant's service of that name, else the one
        serving that model id (an admin's own tenant first, then any). allowed_models applies."""
        routes = self.store.routes()
        obj = routes.get((caller.tenant, model))
        if obj is None and caller.is_admin:
            obj = next((o for (_, m), o in routes.items() if m == model), None)
        if obj is None:
            raise NotFound(f"The model `{model}` does not exist (no service of that name or serving it)")
        if caller.allowed_models and not caller.may_use_model(
                model, obj["metadata"]["name"], *((obj.get("status") or {}).get("models") or ())):
            raise Forbidden(f"This API key may not use model {model!r} (see its allowed_models).")
        return obj

    def serves_openai(self, obj: dict) -> bool:
        try:
            return self.recipe(str((obj.get("spec") or {}).get("recipe", ""))).openai_api
        except RecipeNotFound:
            return False

    def recipe(self, recipe_name: str) -> Recipe:
        return self.store.catalog().get(recipe_name)

    # ---- write ----------------------------------------------------------------------------------------

    async def create(self, caller: Principal, recipe_name: str, *, env: dict[str, str] | None = None,
                     resources: Resources | None = None, name: str | None = None,
                     labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                     **spec_fields) -> dict:
        """A new AIService in the caller's tenant; the operator runs it as a Slurm job. With no `name`, one is
        made from the recipe's name."""
        recipe = self.recipe(recipe_name)
        if not spec_fields.get("stopped"):
            await self.make_room(caller.tenant)
        for attempt in range(NAME_ATTEMPTS):
            manifest = aiservice_manifest(name or service_name(recipe), caller.tenant, recipe, env, resources,
                                          labels=labels, annotations=annotations, **spec_fields)
            try:
                return await self.store.create("aiservices", manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                if name:
                    raise Conflict(f"Service {name} already exists") from None
                if attempt + 1 == NAME_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def preflight(self, caller: Principal, recipe_name: str, *, env: dict[str, str] | None = None,
                        resources: Resources | None = None, name: str | None = None,
                        **spec_fields) -> PreflightResult:
        """Would this service run? The AIService is checked by Kubernetes (a server-side dry run) and its job
        against its cluster (partition, account and QOS, the nodes, `sbatch --test-only` where the transport can);
        nothing is created, in Kubernetes or in Slurm."""
        recipe = self.recipe(recipe_name)
        manifest = aiservice_manifest(name or service_name(recipe), caller.tenant, recipe, env, resources,
                                      **spec_fields)
        try:
            await self.store.create("aiservices", manifest, dry_run=True)
        except ApiException as exc:
            if exc.status == 409 and name:
                raise Conflict(f"Service {name} already exists") from None
            raise
        spec = AIServiceSpec.model_validate(manifest["spec"])
        cluster = await self.state.cluster(spec.cluster)
        tenant_obj = self.store.tenant_for(caller.tenant)
        tenant = TenantSpec.model_validate(tenant_obj.get("spec") or {}) if tenant_obj else None
        try:
            request = preflight.request_for(caller.tenant, manifest["metadata"]["name"], spec, recipe, cluster.spec,
                                            tenant)
        except SpecError as exc:
            return preflight.refused(str(exc))
        return await preflight.check(cluster, request)

    async def delete(self, caller: Principal, obj: dict) -> None:
        """Delete the AIService; the operator cancels its Slurm job before the resource goes."""
        self._check_visible(caller, obj)
        try:
            await self.store.delete("aiservices", obj)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def update(self, caller: Principal, obj: dict, **spec_fields) -> dict:
        """Change the spec (a merge patch of the given fields, in the model's names): a running service gets a new
        job with it, the operator decides."""
        self._check_visible(caller, obj)
        body = {}
        for name, value in spec_fields.items():
            field = AIServiceSpec.model_fields[name]
            body[field.alias or name] = value.wire() if hasattr(value, "wire") else value
        AIServiceSpec.model_validate({**(obj.get("spec") or {}), **body})  # 400 (422) before Kubernetes sees it
        return await self.store.patch("aiservices", obj, {"spec": body})

    async def stop(self, caller: Principal, obj: dict) -> dict:
        """Stop without deleting: spec.stopped, so that kubectl and GitOps see the same; the operator cancels
        the job and the phase becomes stopped."""
        self._check_visible(caller, obj)
        return await self.store.patch("aiservices", obj, {"spec": {"stopped": True}})

    async def start(self, caller: Principal, obj: dict) -> dict:
        """Start a stopped (or ended) service: a new job. Nothing happens to one that holds a job already."""
        self._check_visible(caller, obj)
        if holds_job(obj) and not (obj.get("spec") or {}).get("stopped"):
            return obj
        return await self._act(obj, "start")

    async def restart(self, caller: Principal, obj: dict) -> dict:
        """A new job for the same service (the old one is cancelled first)."""
        self._check_visible(caller, obj)
        return await self._act(obj, "restart")

    async def wake(self, obj: dict) -> dict:
        """Start an on-demand service for a request, without changing its spec (it stops again when idle)."""
        return await self._act(obj, "start", keep_spec=True)

    async def _act(self, obj: dict, verb: str, keep_spec: bool = False) -> dict:
        if not holds_job(obj) or (obj.get("spec") or {}).get("stopped"):
            await self.make_room(obj["metadata"]["namespace"], starting=obj)
        body: dict = {"metadata": {"annotations": {ACTION_ANNOTATION: action_value(verb)}}}
        if not keep_spec and (obj.get("spec") or {}).get("stopped"):
            body["spec"] = {"stopped": False}
        return await self.store.patch("aiservices", obj, body)

    # ---- limits -------------------------------------------------------------------------------------------

    async def make_room(self, tenant: str, starting: dict | None = None) -> None:
        """Before a start: within the tenant's quotas.maxRunningServices and the API's max_running_services, or
        409 naming the limit; with the tenant's evictLeastRecentlyUsed, its least recently used idle on-demand
        services are stopped first instead."""
        others = [o for o in self.store.list_services() if holds_job(o) and o is not starting
                  and key_of(o) != (key_of(starting) if starting else None)]
        mine = [o for o in others if o["metadata"].get("namespace") == tenant]
        quotas = self._quotas(tenant)
        limit_words, excess = [], 0
        if quotas.max_running_services is not None and len(mine) >= quotas.max_running_services:
            excess = max(excess, len(mine) - quotas.max_running_services + 1)
            limit_words.append(f"tenant {tenant} may run {quotas.max_running_services} services at once "
                               "(its quotas.maxRunningServices)")
        cluster_limit = self.state.settings.max_running_services
        if cluster_limit is not None and len(others) >= cluster_limit:
            excess = max(excess, len(others) - cluster_limit + 1)
            limit_words.append(f"at most {cluster_limit} services may run at once in all "
                               "(the API's max_running_services)")
        if not limit_words:
            return
        victims = self._eviction_candidates(mine)[:excess] if quotas.evict_least_recently_used else []
        if len(victims) < excess:
            raise Conflict(f"Maximum number of running services reached: {'; and '.join(limit_words)}. Stop a "
                           "service first" + ("" if quotas.evict_least_recently_used else
                                              ", or enable evictLeastRecentlyUsed for the tenant") + ".")
        for victim in victims:
            await self.store.patch("aiservices", victim,
                                   {"metadata": {"annotations": {ACTION_ANNOTATION: action_value("evict")}}})

    def _eviction_candidates(self, running: list[dict]) -> list[dict]:
        """Idle on-demand services (no request in flight here), least recently used first."""
        traffic = self.state.traffic
        idle = [o for o in running if (o.get("spec") or {}).get("onDemand") and not traffic.in_flight.get(key_of(o))]
        return sorted(idle, key=traffic.last_use)

    def _quotas(self, tenant: str) -> TenantQuotas:
        found = self.store.tenant_for(tenant)
        try:
            return TenantQuotas.model_validate(((found or {}).get("spec") or {}).get("quotas") or {})
        except ValueError:
            return TenantQuotas()

    # ---- requests that wait for a service -----------------------------------------------------------------

    async def ready_endpoint(self, obj: dict, *, on_demand: bool = True) -> tuple[dict, str]:
        """The service and its endpoint once it takes requests. A stopped on-demand service is started; one that
        is queued or starting is waited for, up to its start timeout; then ServiceNotAvailable says where it is,
        with a Retry-After from Slurm's expected start or the recipe's start-up grace."""
        endpoint, why, _ = availability(obj)
        if endpoint:
            return obj, endpoint
        spec = obj.get("spec") or {}
        phase = phase_of(obj)
        woken = None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            raise ServiceNotAvailable(why, retry_after=None, status=self.where(obj).details)
        if phase is not None and phase.finished:
            if not (on_demand and spec.get("onDemand")):
                raise ServiceNotAvailable(f"{why}. It does not start on demand: start it first.", retry_after=None,
                                          status=self.where(obj).details)
            woken = (await self.wake(obj))["metadata"]["annotations"][ACTION_ANNOTATION]
        timeout = spec.get("startTimeoutSeconds") or self.state.settings.start_timeout_seconds
        deadline = time.monotonic() + timeout
        namespace, name = key_of(obj)
        while True:
            current = self.store.service(namespace, name)
            if current is None:
                raise NotFound(f"Service {name} was deleted")
            obj = current
            endpoint, why, may_come_up = availability(obj)
            if endpoint:
                return obj, endpoint
            acted = woken is None or (obj.get("status") or {}).get("observedAction") == woken
            phase = phase_of(obj)
            if acted and (not may_come_up or (phase is not None and phase.finished)):
                raise ServiceNotAvailable(why, retry_after=None, status=self.where(obj).details)
            left = deadline - time.monotonic()
            if left <= 0:
                where = self.where(obj, woken=woken is not None and not acted)
                raise ServiceNotAvailable(where.message, retry_after=where.retry_after, status=where.details)
            await self.store.service_changed.wait(left)

    def where(self, obj: dict, woken: bool = False) -> Where:
        """Where a service is on its way to ready: phase, Slurm's pending reason and expected start. woken: a
        start was asked for and the operator has not acted on it yet."""
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        phase = "pending" if woken else status.get("phase") or "pending"
        details = {"service": name, "phase": phase, "job_id": status.get("jobId"),
                   "pending_reason": status.get("pendingReason"), "expected_start": status.get("expectedStart"),
                   "message": status.get("message")}
        details = {k: v for k, v in details.items() if v is not None}
        retry = self.state.settings.retry_after_seconds
        if phase == "pending":
            expected = parse_rfc3339(status.get("expectedStart"))
            if expected is not None:
                retry = max(1, int(expected - time.time()))
            words = f"Service {name} is being started (on demand)" if woken else f"Service {name} is queued by Slurm"
            if status.get("pendingReason"):
                words += f" (reason: {status['pendingReason']})"
            if status.get("expectedStart"):
                words += f"; Slurm expects it to start at {status['expectedStart']}"
        elif phase in ("building", "starting"):
            try:
                retry = self.recipe(str((obj.get("spec") or {}).get("recipe", ""))).startup_grace_seconds
            except RecipeNotFound:
                pass
            words = f"Service {name} is {phase}: {status.get('message') or 'not ready yet'}"
        else:
            words = f"Service {name} is {phase}" + (f": {status['message']}" if status.get("message") else "")
            if phase_of(obj) is not None and phase_of(obj).finished:
                retry = None
        return Where(words, retry, details)

    def _check_visible(self, caller: Principal, obj: dict) -> None:
        if not caller.sees(obj["metadata"].get("namespace", "")):
            raise NotFound("Service not found")

    # ---- the job and the endpoint ---------------------------------------------------------------------

    async def logs(self, caller: Principal, obj: dict, lines: int, attempt: int | None = None) -> LogTail:
        """The tail of the service's Slurm job output (stdout and stderr), read through the Slurm bridge.

        attempt: the service's Nth job (status.attempts) instead of its current one; each job writes its own files.
        """
        self._check_visible(caller, obj)
        lines = max(1, min(int(lines), MAX_LOG_LINES))
        status = obj.get("status") or {}
        job_id = status.get("jobId")
        cluster_name = (obj.get("spec") or {}).get("cluster") or "default"
        attempts = status.get("attempts") or []
        if attempt is not None:
            found = next((a for a in attempts if a.get("number") == attempt), None)
            if found is None:
                kept = ", ".join(str(a.get("number")) for a in attempts) or "none yet"
                raise NotFound(f"Attempt {attempt} is not among the service's attempts (kept: {kept})")
            job_id, cluster_name = found.get("jobId"), found.get("cluster") or cluster_name
        elif job_id is None and attempts:
            # Between attempts (a restart is due): the last one's output says why it ended.
            job_id, attempt = attempts[-1].get("jobId"), attempts[-1].get("number")
        else:
            attempt = next((a.get("number") for a in attempts if a.get("jobId") == job_id), None)
        if not job_id:
            why = f" ({status['message']})" if status.get("message") else ""
            return LogTail(f"No logs yet: the service has no Slurm job yet{why}.", None)
        cluster = await self.state.cluster(cluster_name)
        # A job Slurm has forgotten still has its files, under the names aifactory gives them.
        job = await cluster.bridge.job(job_id) or SlurmJob(job_id=job_id,
                                                           working_directory=cluster.spec.working_directory)
        text = await cluster.bridge.log_tail(job, lines)
        if text is None:
            if not cluster.spec.local_logs and cluster.spec.ssh is None:
                text = (f"The output of Slurm job {job_id} is not readable from the API server "
                        "(its SlurmCluster has neither localLogs nor ssh).")
            else:
                text = f"No logs yet: Slurm job {job_id} has not written any output."
        return LogTail(text, job_id, attempt)

    async def upstream_for(self, obj: dict):
        """The gateway's connections to the service: direct, or through its cluster's SSH connection (one pool
        per cluster, renewed with the cluster's bridge)."""
        from aifactory.api.upstream import UpstreamPool

        name = (obj.get("spec") or {}).get("cluster") or "default"
        spec_obj = self.store.slurm_cluster(name)
        if spec_obj is None or not (spec_obj.get("spec") or {}).get("ssh"):
            return self.state.upstream
        cluster = await self.state.cluster(name)
        known = self._pools.get(name)
        if known is None or known[0] is not cluster.bridge:
            if known is not None:
                known[1].close()
            known = self._pools[name] = (cluster.bridge, UpstreamPool(cluster.bridge.open_connection))
        return known[1]

    async def client_for(self, obj: dict) -> httpx.AsyncClient:
        """How to reach the service's endpoint: directly, or through its cluster's SSH connection."""
        name = (obj.get("spec") or {}).get("cluster") or "default"
        spec_obj = self.store.slurm_cluster(name)
        if spec_obj is None or not (spec_obj.get("spec") or {}).get("ssh"):
            return self.state.http
        return (await self.state.cluster(name)).http
