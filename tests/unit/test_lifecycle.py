import pytest

from aifactory.lifecycle import (
    RESERVED_ENV,
    ServiceRef,
    SpecError,
    conditions_for,
    job_request,
    observe,
)
from aifactory.models import (
    AIServiceSpec,
    Phase,
    Recipe,
    Resources,
    SlurmClusterSpec,
    TenantSpec,
)
from aifactory.slurm.jobs import JobTags, SlurmJob, memory_mb

REF = ServiceRef("team", "emb", "1234-uid")
CLUSTER = SlurmClusterSpec(url="http://slurm", working_directory="/scratch/jobs/", partition="cpu",
                           account="proj", job_environment={"PATH": "/opt/bin", "SITE": "x"})
RECIPE = Recipe(name="minilm", category="embeddings", runtime="native", command=["serve", "--port", "{port}"],
                environment={"SITE": "recipe", "MODEL": "m"},
                resources=Resources(cpu=2, memory="4G", time_limit=30, nodes=1))


def test_job_request_layers_environment_and_resources():
    spec = AIServiceSpec(recipe="embeddings/minilm", env={"MODEL": "user"}, resources=Resources(cpu=8),
                         partition="gpu")
    req = job_request(REF, spec, RECIPE, CLUSTER)
    assert req.environment["MODEL"] == "user"            # the service's env wins over the recipe's
    assert req.environment["SITE"] == "recipe"           # the recipe's over the cluster's
    assert req.environment["PATH"] == "/opt/bin"
    assert req.environment["AIFACTORY_SERVICE_UID"] == REF.uid
    assert (req.cpus_per_task, req.memory_per_node_mb, req.time_limit_minutes) == (8, 4096, 30)
    assert (req.partition, req.account) == ("gpu", "proj")
    assert req.standard_output == "/scratch/jobs/aifactory-%j.out"
    assert JobTags.parse(req.comment).uid == REF.uid
    assert "exec serve --port \"$AIFACTORY_PORT\"" in req.script


def test_reserved_env_is_refused():
    with pytest.raises(SpecError, match="AIFACTORY_SERVICE_UID"):
        job_request(REF, AIServiceSpec(recipe="x", env={"AIFACTORY_SERVICE_UID": "evil"}), RECIPE, CLUSTER)
    assert "AIFACTORY_PORT" in RESERVED_ENV


def test_a_tenants_jobs_run_under_its_account_and_user_and_take_its_defaults():
    tenant = TenantSpec(slurm={"account": "acct-a", "user": "alice", "qos": "short", "partition": "t-part"})
    req = job_request(REF, AIServiceSpec(recipe="x"), RECIPE, CLUSTER, tenant)
    assert (req.account, req.user, req.qos, req.partition) == ("acct-a", "alice", "short", "t-part")
    req = job_request(REF, AIServiceSpec(recipe="x", partition="gpu", qos="long"), RECIPE, CLUSTER, tenant)
    assert (req.partition, req.qos) == ("gpu", "long")  # the spec's choice within the tenant's account
    with pytest.raises(SpecError, match="account acct-a"):
        job_request(REF, AIServiceSpec(recipe="x", account="someone-else"), RECIPE, CLUSTER, tenant)
    plain = job_request(REF, AIServiceSpec(recipe="x"), RECIPE, CLUSTER, TenantSpec())
    assert (plain.account, plain.user) == ("proj", None)  # a tenant without settings: the cluster's


def test_secret_env_values_reach_the_job_and_are_handed_into_the_container():
    spec = AIServiceSpec(recipe="x", secret_env={"HF_TOKEN": {"name": "hf", "key": "token"}})
    value = "hf_\n'\"$(rm -rf /)`x` \t "
    req = job_request(REF, spec, RECIPE.model_copy(update={"runtime": "apptainer", "image": "docker://x/y"}),
                      CLUSTER, secret_env={"HF_TOKEN": value})
    assert req.environment["HF_TOKEN"] == value
    assert value not in req.script and "HF_TOKEN" in req.script  # forwarded by name, never as text
    twice = AIServiceSpec(recipe="x", env={"HF_TOKEN": "a"}, secret_env={"HF_TOKEN": {"name": "hf", "key": "t"}})
    with pytest.raises(SpecError, match="env and in secretEnv"):
        job_request(REF, twice, RECIPE, CLUSTER, secret_env={"HF_TOKEN": "b"})


def job(state, comment="", **kw):
    return SlurmJob(job_id="7", state=state, comment=comment, batch_host="node1", **kw)


TAGGED = "aifactory uid=1234-uid stage=starting port=4567"


@pytest.mark.parametrize("slurm_job, healthy, phase, words", [
    (job("PENDING", reason="Resources"), False, Phase.pending, "Resources"),
    (job("RUNNING"), False, Phase.starting, "report its port"),
    (job("RUNNING", "aifactory uid=1234-uid stage=building"), False, Phase.building, "image"),
    (job("RUNNING", TAGGED), False, Phase.starting, "health"),
    (job("RUNNING", TAGGED), True, Phase.running, "answering"),
    (job("COMPLETED", exit_code=0), False, Phase.completed, "success"),
    (job("CANCELLED"), False, Phase.cancelled, "cancelled"),
    (job("FAILED", exit_code=3, reason="NonZeroExitCode"), False, Phase.failed, "exit code 3"),
    (job("TIMEOUT"), False, Phase.failed, "time limit"),
    (job("OUT_OF_MEMORY"), False, Phase.failed, "memory"),
    (job("RUNNING", TAGGED, vanished=True), False, Phase.failed, "no longer knows"),
])
def test_observe_maps_jobs_to_phases(slurm_job, healthy, phase, words):
    seen = observe(slurm_job, healthy)
    assert seen.phase is phase
    assert words in seen.message


def test_running_reports_node_and_port():
    seen = observe(job("RUNNING", TAGGED), True)
    assert (seen.node, seen.port, seen.slurm_state) == ("node1", 4567, "RUNNING")


def test_conditions_keep_transition_time_while_status_holds():
    first = conditions_for(Phase.starting, "Starting", "m", 1, None)
    ready = {c["type"]: c for c in first}["Ready"]
    assert ready["status"] == "False" and ready["observedGeneration"] == 1
    ready["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    again = {c["type"]: c for c in conditions_for(Phase.starting, "Starting", "m", 1, first)}
    assert again["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    now = {c["type"]: c for c in conditions_for(Phase.running, "Running", "m", 1, first)}
    assert now["Ready"]["status"] == "True" and now["Ready"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    assert now["Reconciling"]["status"] == "False"
    failed = {c["type"]: c for c in conditions_for(Phase.failed, "JobFailed", "boom", 1, None)}
    assert failed["Stalled"]["status"] == "True" and failed["Stalled"]["message"] == "boom"


def test_tags_round_trip_and_ignore_foreign_comments():
    tags = JobTags(uid="u-1", stage="starting", port=80)
    assert JobTags.parse(tags.render()) == tags
    assert JobTags.parse("someone else's comment").uid == ""


@pytest.mark.parametrize("size, mb", [("512M", 512), ("32G", 32768), ("1T", 1048576), ("100", 100), ("2GiB", 2048)])
def test_memory_sizes(size, mb):
    assert memory_mb(size) == mb


def test_the_clusters_container_command_reaches_the_script():
    recipe = Recipe(name="c", category="t", runtime="apptainer", image="docker://example.org/img:1",
                    command=["serve"])
    site = SlurmClusterSpec.model_validate({**CLUSTER.model_dump(), "container_command": "singularity"})
    script = job_request(REF, AIServiceSpec(recipe="t/c"), recipe, site).script
    assert "singularity exec" in script and "apptainer" not in script
    assert "apptainer exec" in job_request(REF, AIServiceSpec(recipe="t/c"), recipe, CLUSTER).script


@pytest.mark.parametrize("phase, started, grace, overdue", [
    (Phase.starting, 1000, 60, True),      # 100 s after start, 60 s allowed
    (Phase.building, 1000, 60, True),
    (Phase.starting, 1000, 300, False),
    (Phase.running, 1000, 60, False),      # healthy in time: never overdue
    (Phase.pending, None, 60, False),      # not started yet: the grace has not begun
])
def test_startup_overdue(phase, started, grace, overdue):
    from aifactory.lifecycle import startup_overdue

    assert startup_overdue(phase, SlurmJob(job_id="1", state="RUNNING", start_time=started), grace, 1100) is overdue


def test_a_queued_job_says_why_and_when_slurm_expects_it_to_start():
    from aifactory.lifecycle import scheduled_condition

    queued = job("PENDING", reason="Resources", start_time=1795988071)
    seen = observe(queued, False)
    assert (seen.phase, seen.pending_reason, seen.expected_start) == (Phase.pending, "Resources", 1795988071)
    assert "expected start 2026-11-29T" in seen.message
    cond = scheduled_condition(queued)
    assert (cond.status, cond.reason) == ("False", "Resources")
    assert "2026-11-29T" in cond.message and "job 7" in cond.message.lower()


def test_a_held_job_has_slurms_reason_and_no_expected_start():
    from aifactory.lifecycle import scheduled_condition

    held = job("PENDING", reason="JobHeldAdmin", start_time=None)
    seen = observe(held, False)
    assert (seen.pending_reason, seen.expected_start) == ("JobHeldAdmin", None)
    cond = scheduled_condition(held)
    assert (cond.status, cond.reason) == ("False", "JobHeldAdmin")
    assert "no expected start" in cond.message


def test_a_reason_with_a_node_list_becomes_one_condition_word():
    from aifactory.lifecycle import scheduled_condition

    cond = scheduled_condition(job("PENDING", reason="ReqNodeNotAvail, UnavailableNodes:n[1-2]"))
    assert cond.reason == "ReqNodeNotAvail" and "UnavailableNodes:n[1-2]" in cond.message
    assert scheduled_condition(job("PENDING", reason="None")).reason == "Queued"  # not yet looked at


def test_scheduled_is_true_once_the_job_runs_and_pending_fields_go():
    from aifactory.lifecycle import scheduled_condition

    running = job("RUNNING", TAGGED, start_time=1795988071)
    cond = scheduled_condition(running)
    assert (cond.status, cond.reason) == ("True", "Started") and "node1" in cond.message
    seen = observe(running, True)
    assert (seen.pending_reason, seen.expected_start) == (None, None)
    # A running job's start_time is when it started, never an expected start.
    assert running.expected_start is None
    assert scheduled_condition(job("CANCELLED")).status == "False"  # cancelled while queued: never ran


# ---- stop, start, restart, on demand, idle ----------------------------------------------------------------------

from datetime import UTC

from aifactory.lifecycle import (
    action_value,
    action_verb,
    idle_step,
    last_use_resolution,
    next_step,
    starts_at_creation,
)

RUNNING_SPEC = AIServiceSpec(recipe="x/y")


def test_a_new_service_starts_unless_created_stopped():
    assert next_step(RUNNING_SPEC, None).kind == "start"
    assert next_step(AIServiceSpec(recipe="x/y", stopped=True), None).kind == "stop"
    assert next_step(AIServiceSpec(recipe="x/y", stopped=True, on_demand=True), None).kind == "stop"


def test_only_a_plain_new_service_is_submitted_at_its_creation_event():
    assert starts_at_creation(RUNNING_SPEC, None)
    assert starts_at_creation(RUNNING_SPEC, {"example.org/owner": "team-a"})
    assert not starts_at_creation(AIServiceSpec(recipe="x/y", stopped=True), None)
    assert not starts_at_creation(AIServiceSpec(recipe="x/y", stopped=True, on_demand=True), {})
    # An action, a dry run or kopf's own state (an object copied with its annotations): the create handler decides.
    assert not starts_at_creation(RUNNING_SPEC, {"lifecycle.aifactory.io/action": action_value("start")})
    assert not starts_at_creation(RUNNING_SPEC, {"lifecycle.aifactory.io/dry-run": "true"})
    assert not starts_at_creation(RUNNING_SPEC, {"aifactory.io/last-handled-configuration": "{}"})


def test_stopping_by_spec_cancels_a_live_job_and_starting_again_makes_a_new_one():
    stopped = AIServiceSpec(recipe="x/y", stopped=True)
    step = next_step(stopped, Phase.running, old_spec=RUNNING_SPEC)
    assert (step.kind, step.reason) == ("stop", "Stopped")
    assert next_step(stopped, Phase.stopped, old_spec=stopped).kind == "none"
    assert next_step(RUNNING_SPEC, Phase.stopped, old_spec=stopped).kind == "start"
    # A finished service that is stopped reads stopped too.
    assert next_step(stopped, Phase.completed, old_spec=RUNNING_SPEC).kind == "stop"


def test_a_changed_spec_means_a_new_job_but_not_a_change_of_when_it_runs():
    changed = AIServiceSpec(recipe="x/y", env={"A": "1"})
    assert next_step(changed, Phase.running, old_spec=RUNNING_SPEC).reason == "SpecChanged"
    scheduling = AIServiceSpec(recipe="x/y", on_demand=True, idle_timeout_minutes=5, start_timeout_seconds=30,
                               restart={"policy": "OnFailure"})
    assert next_step(scheduling, Phase.running, old_spec=RUNNING_SPEC).kind == "none"
    # An idle-stopped service keeps resting when its spec changes: the next start uses the new spec.
    assert next_step(changed, Phase.stopped, old_spec=RUNNING_SPEC).kind == "none"


def test_actions_are_acted_on_once():
    restart = action_value("restart")
    assert action_verb(restart) == "restart"
    assert next_step(RUNNING_SPEC, Phase.running, action=restart).reason == "Restarted"
    assert next_step(RUNNING_SPEC, Phase.running, action=restart, observed_action=restart).kind == "none"
    start = action_value("start")
    assert next_step(RUNNING_SPEC, Phase.stopped, action=start).kind == "start"
    assert next_step(RUNNING_SPEC, Phase.running, action=start).kind == "none"  # already running
    evict = action_value("evict")
    assert (next_step(RUNNING_SPEC, Phase.running, action=evict).reason) == "Evicted"
    assert next_step(RUNNING_SPEC, Phase.stopped, action=evict).kind == "none"
    with pytest.raises(ValueError):
        action_value("delete")


def test_on_demand_wakes_a_service_stopped_by_spec_but_a_plain_stopped_one_stays_stopped():
    start = action_value("start")
    resting = AIServiceSpec(recipe="x/y", stopped=True, on_demand=True)
    assert next_step(resting, Phase.stopped, action=start).kind == "start"
    assert next_step(AIServiceSpec(recipe="x/y", stopped=True), Phase.stopped, action=start).kind == "none"
    # Found running at a restart of the operator: woken by a request, it runs until idle.
    assert next_step(resting, Phase.running).kind == "none"
    assert next_step(AIServiceSpec(recipe="x/y", stopped=True), Phase.running).kind == "stop"


def _running_since(seconds_ago: float, now: float, last_request_ago: float | None = None) -> dict:
    from datetime import datetime

    def stamp(ago):
        return datetime.fromtimestamp(now - ago, UTC).isoformat().replace("+00:00", "Z")
    status = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp(seconds_ago)}]}
    if last_request_ago is not None:
        status["lastRequest"] = stamp(last_request_ago)
    return status


def test_idle_timeout_counts_from_the_last_request_or_readiness_with_the_recording_resolution():
    now = 1_800_000_000.0
    spec = AIServiceSpec(recipe="x/y", idle_timeout_minutes=1, on_demand=True)
    slack = last_use_resolution(1)
    assert slack == 15.0 and last_use_resolution(None) == 60.0 and last_use_resolution(60) == 60.0
    assert idle_step(spec, Phase.running, _running_since(300, now, 60 + slack - 1), now).kind == "none"
    step = idle_step(spec, Phase.running, _running_since(300, now, 60 + slack + 1), now)
    assert (step.kind, step.reason) == ("stop", "Idle") and "a request starts it again" in step.message
    assert idle_step(spec, Phase.running, _running_since(30, now), now).kind == "none"  # ready 30 s ago
    assert idle_step(spec, Phase.running, _running_since(100, now), now).kind == "stop"
    assert idle_step(spec, Phase.pending, _running_since(100, now), now).kind == "none"
    assert idle_step(RUNNING_SPEC, Phase.running, _running_since(10_000, now), now).kind == "none"



def test_a_finished_job_shows_its_end_state_without_the_transient_completing_flag():
    # 24.11 and 26.05 answer ["CANCELLED", "COMPLETING"] right after a cancel; the status is final from then on.
    from aifactory.lifecycle import observe
    from aifactory.slurm.jobs import SlurmJob

    seen = observe(SlurmJob(job_id="1", state="CANCELLED", flags=("COMPLETING",)), healthy=False)
    assert seen.slurm_state == "CANCELLED"
    running = observe(SlurmJob(job_id="1", state="RUNNING", flags=("REQUEUED",)), healthy=False)
    assert running.slurm_state == "RUNNING,REQUEUED"
