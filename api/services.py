"""The service verbs, once, below every face: find, create, delete a service, read its logs, reach its endpoint.

Each verb takes the caller (a Principal) and applies tenancy here, so every face gets the same rules: a caller
sees and changes only its tenant's services (an admin: every tenant's); another tenant's service does not exist
for it (404). The faces translate their requests into these calls and the results into their words.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from kubernetes.client.rest import ApiException

from aifactory.api.aiservices import aiservice_manifest, find_service, service_name
from aifactory.api.errors import Conflict, NotFound
from aifactory.api.identity.principal import Principal
from aifactory.models import Recipe, Resources
from aifactory.slurm.jobs import SlurmJob

NAME_ATTEMPTS = 3  # a clash of the random suffix is rare; a second one rarer still
MAX_LOG_LINES = 10_000


@dataclass(frozen=True)
class LogTail:
    text: str
    job_id: str | None
    attempt: int | None = None


class ServiceVerbs:
    def __init__(self, state) -> None:
        self.state = state

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

    async def delete(self, caller: Principal, obj: dict) -> None:
        """Delete the AIService; the operator cancels its Slurm job before the resource goes."""
        self._check_visible(caller, obj)
        try:
            await self.store.delete("aiservices", obj)
        except ApiException as exc:
            if exc.status != 404:
                raise

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

    async def client_for(self, obj: dict) -> httpx.AsyncClient:
        """How to reach the service's endpoint: directly, or through its cluster's SSH connection."""
        name = (obj.get("spec") or {}).get("cluster") or "default"
        spec_obj = self.store.slurm_cluster(name)
        if spec_obj is None or not (spec_obj.get("spec") or {}).get("ssh"):
            return self.state.http
        return (await self.state.cluster(name)).http
