"""Each dialect against slurmrestd's own answers: the request bodies it builds and what it reads from the answers.

The answers of v0.0.38 (Slurm 22.05), v0.0.40 to v0.0.42 (24.11) and v0.0.42 to v0.0.45 (26.05) were recorded from
the real servers of the local stack (tests/e2e/test_local_slurm.py); v0.0.39 is served by none of them and is
checked against answers constructed from the documentation (see recordings/README.md).
"""

from __future__ import annotations

import copy

import pytest

from aifactory.devstack.slurm import RELEASES
from aifactory.slurm.dialects import SUPPORTED, dialect_for, errors_of, newest_served
from conftest import make_request
from recorded import CONSTRUCTED, exchange, recorded_sets, set_id

REAL = recorded_sets()
ALL = REAL + [("constructed", v) for v in CONSTRUCTED]
NEW = [v for v in SUPPORTED if v != "v0.0.38"]


def sets(which):
    return pytest.mark.parametrize("release,version", which, ids=[set_id(*s) for s in which])


def answer(release: str, version: str, name: str) -> dict:
    return exchange(release, version, name)["body"]


def test_every_supported_version_has_an_adapter_and_recordings():
    assert {v for _, v in ALL} == set(SUPPORTED)
    for version in SUPPORTED:
        assert dialect_for(version).version == version
    # Every version a Slurm of the local stack serves is recorded from it, by every release that serves it.
    served = {(r, v) for r, facts in RELEASES.items() for v in facts.api_versions if v >= "v0.0.38"}
    assert set(REAL) == served
    with pytest.raises(ValueError, match="v0.0.37 is not supported"):
        dialect_for("v0.0.37")


@pytest.mark.parametrize("version", NEW)
def test_submit_body_details(version):
    job = dialect_for(version).submit_body(make_request())["job"]
    assert "script" in job and set(dialect_for(version).submit_body(make_request())) == {"job"}
    assert job["environment"] == ["PATH=/usr/bin:/bin", "GREETING=a b=c 'q' $HOME"]
    assert job["time_limit"] == {"set": True, "infinite": False, "number": 60}
    assert job["memory_per_node"] == {"set": True, "infinite": False, "number": 16384}
    assert job["tres_per_node"] == ("gres:gpu:2" if version == "v0.0.39" else "gres/gpu:2")
    assert (job["minimum_nodes"], job["maximum_nodes"]) == (1, 1) and "nodes" not in job
    assert "gres" not in job


def test_constructed_v0039_submit_body_is_the_documented_shape():
    assert dialect_for("v0.0.39").submit_body(make_request()) == \
        exchange("constructed", "v0.0.39", "job_submit")["request"]["body"]


def test_v0038_submit_body_keeps_script_outside_and_environment_as_object():
    body = dialect_for("v0.0.38").submit_body(make_request())
    assert body["script"].startswith("#!/bin/bash") and "script" not in body["job"]
    assert body["job"]["environment"] == {"PATH": "/usr/bin:/bin", "GREETING": "a b=c 'q' $HOME"}
    assert body["job"]["time_limit"] == 60 and body["job"]["memory_per_node"] == 16384
    assert body["job"]["gres"] == "gpu:2" and body["job"]["nodes"] == 1


@pytest.mark.parametrize("version", SUPPORTED)
def test_an_empty_environment_is_never_sent(version):
    # slurmctld refuses a batch job without environment, in every version (see job_submit_no_environment).
    job = dialect_for(version).submit_body(make_request(environment={}))["job"]
    assert job["environment"]


@sets(REAL)
def test_a_submit_without_environment_is_refused_in_slurms_words(release, version):
    recorded = exchange(release, version, "job_submit_no_environment")
    # 22.05: 400 "environment must be set"; 24.11: 500, error 2019; 26.05: 422, error 2127.
    assert recorded["status"] == {"22.05": 400, "24.11": 500, "26.05": 422}[release]
    assert errors_of(recorded["body"])


@pytest.mark.parametrize("version", SUPPORTED)
def test_optional_fields_left_out_when_unset(version):
    request = make_request(partition=None, account=None, qos=None, cpus_per_task=None, memory_per_node_mb=None,
                           gpus_per_node=None, time_limit_minutes=None, nodes=None, comment="")
    job = dialect_for(version).submit_body(request)["job"]
    for name in ("partition", "account", "qos", "cpus_per_task", "memory_per_node", "time_limit", "nodes",
                 "minimum_nodes", "tres_per_node", "gres", "comment"):
        assert name not in job, name


@sets(REAL)
def test_submit_answer_gives_the_job_id_the_job_then_has(release, version):
    dialect = dialect_for(version)
    submitted = answer(release, version, "job_submit")
    (running,) = dialect.jobs(answer(release, version, "job_running"))
    assert dialect.submitted_job_id(submitted) == running.job_id
    # v0.0.40 and v0.0.41 also answer inside `result`; v0.0.42 on only at the top.
    assert ("result" in submitted) == (version in ("v0.0.40", "v0.0.41"))


def test_v0041_submit_answer_inside_result_only():
    answer_ = {"result": {"job_id": 77, "step_id": "batch"}, "errors": [], "warnings": []}
    assert dialect_for("v0.0.41").submitted_job_id(answer_) == "77"


@sets(ALL)
def test_rejected_submit_carries_slurms_words(release, version):
    recorded = exchange(release, version, "job_submit_bad_partition")
    assert recorded["status"] == (422 if release == "26.05" else 500)
    assert any("Invalid partition name specified" in text for text in errors_of(recorded["body"]))


@sets(REAL)
def test_running_job(release, version):
    dialect = dialect_for(version)
    (job,) = dialect.jobs(answer(release, version, "job_running"))
    node = answer(release, version, "node")["nodes"][0]["name"]
    assert (job.state, job.batch_host, job.nodes) == ("RUNNING", node, node)
    assert job.comment == f"hello-{job.job_id}" and job.name == "e2e-comment"
    assert job.start_time and job.submit_time
    assert job.exit_code in (None, 0) and job.signal is None and not job.finished
    assert job.working_directory.endswith("/jobs")


@sets(ALL)
def test_failed_job_exit_code(release, version):
    (job,) = dialect_for(version).jobs(answer(release, version, "job_failed"))
    assert job.state == "FAILED" and job.finished
    assert job.exit_code == 3 and job.signal is None  # `exit 3`: raw status 768 on 22.05, return_code 3 later


@sets(ALL)
def test_cancelled_job(release, version):
    (job,) = dialect_for(version).jobs(answer(release, version, "job_cancelled"))
    assert job.state == "CANCELLED" and job.finished
    # 22.05 reports the signal; 24.11 and 26.05 answer right after the cancel with flags COMPLETING and no signal.
    assert job.signal in (15, None) and job.exit_code in (0, None)
    if release in ("24.11", "26.05"):
        assert job.flags == ("COMPLETING",)


@sets(ALL)
def test_jobs_list_and_last_update(release, version):
    dialect = dialect_for(version)
    recorded = answer(release, version, "jobs")
    jobs = dialect.jobs(recorded)
    assert jobs and all(j.job_id for j in jobs)
    if version == "v0.0.38":
        assert dialect.last_update(recorded) is None  # 22.05 does not say
    else:
        assert dialect.last_update(recorded) > 1_700_000_000


@sets(ALL)
def test_unchanged_update_time_answer(release, version):
    recorded = exchange(release, version, "jobs_not_modified")
    if version in ("v0.0.38", "v0.0.39"):
        assert recorded["status"] == 304 and not recorded["body"]
    else:
        # Never 304 from 23.11 on: 200 with no jobs (and last_update 0).
        assert recorded["status"] == 200 and recorded["body"]["jobs"] == []


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41"])
def test_v0040_and_v0041_take_update_time_only_in_the_relative_form(version):
    refused = exchange("24.11", version, "jobs_update_time_integer")
    assert refused["status"] == 422
    assert any("for timestamp failed" in text for text in errors_of(refused["body"]))
    assert "update_time=now-" in exchange("24.11", version, "jobs")["request"]["path"]
    assert dialect_for(version).update_time(1_795_000_000, 1_795_000_120) == "now-120"
    assert dialect_for("v0.0.42").update_time(1_795_000_000, 1_795_000_120) == "1795000000"


@sets(ALL)
def test_unknown_job_error_text(release, version):
    recorded = exchange(release, version, "job_unknown")
    assert recorded["status"] == (500 if version == "v0.0.38" else 404)
    assert any("Invalid job id specified" in text for text in errors_of(recorded["body"]))


@sets(REAL)
def test_a_refused_token_is_recognised(release, version):
    recorded = exchange(release, version, "jobs_bad_token")
    # 22.05: 500 "Unspecified error"; 24.11 and 26.05: 511 (error 1007), not 401.
    assert recorded["status"] == (500 if release == "22.05" else 511)
    assert dialect_for(version).auth_refused(recorded["status"], recorded["body"])
    # ... and a refusal for another reason is not taken for one.
    assert not dialect_for(version).auth_refused(
        exchange(release, version, "job_submit_bad_partition")["status"],
        answer(release, version, "job_submit_bad_partition"))


def test_v0041_job_resources_nodes_object_is_read():
    raw = answer("24.11", "v0.0.41", "job_running")["jobs"][0]
    raw = {k: v for k, v in raw.items() if k != "nodes"}
    (job,) = dialect_for("v0.0.41").jobs({"jobs": [raw]})
    assert job.nodes == answer("24.11", "v0.0.41", "node")["nodes"][0]["name"]


@sets(ALL)
def test_node_address(release, version):
    expected = "10.1.0.21" if release == "constructed" else "127.0.0.1"
    assert dialect_for(version).node_address(answer(release, version, "node")) == expected


@sets(ALL)
def test_detection_picks_the_newest_served(release, version):
    paths = answer(release, version, "openapi")["paths"]
    newest = version if release == "constructed" else RELEASES[release].api_version
    assert newest_served(paths) == newest


def test_detection_ignores_versions_aifactory_does_not_speak():
    assert newest_served(["/slurm/v0.0.46/jobs", "/slurm/v0.0.40/jobs", "/slurmdb/v0.0.44/jobs"]) == "v0.0.40"
    assert newest_served(["/slurm/v0.0.37/jobs"]) is None


@pytest.mark.parametrize("version", SUPPORTED)
def test_a_pending_jobs_start_time_is_slurms_expected_start(version):
    # Slurm's backfill scheduler sets start_time of a pending job to its estimate (seen on 22.05: squeue's START_TIME
    # and slurmrestd's start_time agree); each dialect writes it in its own number shape.
    answer = copy.deepcopy(recording(version, "jobs")["body"])
    raw = answer["jobs"][0]
    shape = raw.get("start_time")
    estimate = 1795988071
    raw["start_time"] = {"set": True, "infinite": False, "number": estimate} if isinstance(shape, dict) else estimate
    raw["job_state"] = ["PENDING"] if isinstance(raw.get("job_state"), list) else "PENDING"
    job = dialect_for(version).jobs(answer)[0]
    assert job.queued and job.expected_start == estimate


@sets(ALL)
def test_a_pending_jobs_start_time_is_slurms_expected_start(release, version):
    # Slurm's backfill scheduler sets start_time of a pending job to its estimate (seen on 22.05: squeue's START_TIME
    # and slurmrestd's start_time agree); each dialect writes it in its own number shape.
    recorded = copy.deepcopy(answer(release, version, "jobs"))
    raw = recorded["jobs"][0]
    shape = raw.get("start_time")
    estimate = 1795988071
    raw["start_time"] = {"set": True, "infinite": False, "number": estimate} if isinstance(shape, dict) else estimate
    raw["job_state"] = ["PENDING"] if isinstance(raw.get("job_state"), list) else "PENDING"
    job = dialect_for(version).jobs(recorded)[0]
    assert job.queued and job.expected_start == estimate
