"""Each dialect against its slurmrestd answers: request bodies it builds and what it reads from the answers.

v0.0.38 answers were recorded from the real 22.05 slurmrestd; v0.0.39+ ones are constructed from the documented
shapes (see recordings/README.md).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from aifactory.slurm.dialects import SUPPORTED, dialect_for, errors_of, newest_served, warnings_of
from conftest import make_request

RECORDINGS = Path(__file__).parent / "recordings"
NEW = ["v0.0.39", "v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44"]
UID = "0f6b7a52-1111-4c1e-9f00-5e2a6f7e0c11"


def recording(version: str, name: str) -> dict:
    return json.loads((RECORDINGS / version / f"{name}.json").read_text())


def test_every_documented_version_has_an_adapter_and_recordings():
    assert set(SUPPORTED) == {"v0.0.38", *NEW}
    for version in SUPPORTED:
        assert dialect_for(version).version == version
        assert (RECORDINGS / version / "job_submit.json").exists()
    with pytest.raises(ValueError, match="v0.0.37 is not supported"):
        dialect_for("v0.0.37")


@pytest.mark.parametrize("version", NEW)
def test_submit_body_is_the_documented_shape(version):
    expected = recording(version, "job_submit")["request"]["body"]
    assert dialect_for(version).submit_body(make_request()) == expected


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


def test_v0038_submit_body_keeps_script_outside_and_environment_as_object():
    body = dialect_for("v0.0.38").submit_body(make_request())
    assert body["script"].startswith("#!/bin/bash") and "script" not in body["job"]
    assert body["job"]["environment"] == {"PATH": "/usr/bin:/bin", "GREETING": "a b=c 'q' $HOME"}
    assert body["job"]["time_limit"] == 60 and body["job"]["memory_per_node"] == 16384
    assert body["job"]["gres"] == "gpu:2" and body["job"]["nodes"] == 1


@pytest.mark.parametrize("version", SUPPORTED)
def test_an_empty_environment_is_never_sent(version):
    # slurmctld refuses a batch job without environment, in every version.
    job = dialect_for(version).submit_body(make_request(environment={}))["job"]
    assert job["environment"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_optional_fields_left_out_when_unset(version):
    request = make_request(partition=None, account=None, qos=None, cpus_per_task=None, memory_per_node_mb=None,
                               gpus_per_node=None, time_limit_minutes=None, nodes=None, comment="")
    job = dialect_for(version).submit_body(request)["job"]
    for name in ("partition", "account", "qos", "cpus_per_task", "memory_per_node", "time_limit", "nodes",
                 "minimum_nodes", "tres_per_node", "gres", "comment"):
        assert name not in job, name


@pytest.mark.parametrize("version", SUPPORTED)
def test_submit_answer_gives_the_job_id(version):
    answer = recording(version, "job_submit")["body"]
    expected = "18" if version == "v0.0.38" else "4242"
    assert dialect_for(version).submitted_job_id(answer) == expected
    if version >= "v0.0.40":
        assert isinstance(answer["step_id"], str)


def test_v0041_submit_answer_inside_result_only():
    answer = {"result": {"job_id": 77, "step_id": "batch"}, "errors": [], "warnings": []}
    assert dialect_for("v0.0.41").submitted_job_id(answer) == "77"


@pytest.mark.parametrize("version", SUPPORTED)
def test_rejected_submit_carries_slurms_words(version):
    exchange = recording(version, "job_submit_bad_partition")
    assert exchange["status"] == 500
    assert any("Invalid partition name specified" in text for text in errors_of(exchange["body"]))


@pytest.mark.parametrize("version", NEW)
def test_pending_job(version):
    (job,) = dialect_for(version).jobs(recording(version, "job_pending")["body"])
    assert (job.job_id, job.state, job.reason) == ("4242", "PENDING", "Resources")
    assert job.start_time is None and job.end_time is None and job.batch_host == ""
    assert job.submit_time == 1795439990
    assert not job.finished and job.tags.uid == UID


@pytest.mark.parametrize("version", NEW)
def test_running_job(version):
    (job,) = dialect_for(version).jobs(recording(version, "job_running")["body"])
    assert (job.state, job.batch_host, job.nodes) == ("RUNNING", "gpu-a01", "gpu-a01")
    assert job.start_time == 1795440000 and job.tags.port == 41231 and job.tags.stage == "running"
    assert job.exit_code in (None, 0) and job.signal is None
    assert job.standard_output == "/scratch/aifactory/aifactory-%j.out"
    assert job.working_directory == "/scratch/aifactory"


@pytest.mark.parametrize("version", SUPPORTED)
def test_failed_job_exit_code(version):
    (job,) = dialect_for(version).jobs(recording(version, "job_failed")["body"])
    assert job.state == "FAILED" and job.finished
    assert job.exit_code == 3 and job.signal is None  # 22.05 recorded: `exit 3`, raw status 768


@pytest.mark.parametrize("version", SUPPORTED)
def test_cancelled_job_signal(version):
    (job,) = dialect_for(version).jobs(recording(version, "job_cancelled")["body"])
    assert job.state == "CANCELLED" and job.signal == 15 and job.exit_code == 0


@pytest.mark.parametrize("version", SUPPORTED)
def test_jobs_list_and_last_update(version):
    dialect = dialect_for(version)
    answer = recording(version, "jobs")["body"]
    jobs = dialect.jobs(answer)
    assert jobs and all(j.job_id for j in jobs)
    if version == "v0.0.38":
        assert dialect.last_update(answer) is None  # 22.05 does not say
    else:
        assert dialect.last_update(answer) == 1795440100
        assert [j.state for j in jobs] == ["RUNNING", "FAILED"]


@pytest.mark.parametrize("version", ["v0.0.40", "v0.0.41", "v0.0.44"])
def test_job_state_list_gives_base_state_and_flags(version):
    running = dialect_for(version).jobs(recording(version, "jobs")["body"])[0]
    assert running.state == "RUNNING" and running.flags == ("REQUEUED",)


@pytest.mark.parametrize("version", SUPPORTED)
def test_unchanged_update_time_answer(version):
    exchange = recording(version, "jobs_not_modified")
    if version in ("v0.0.38", "v0.0.39"):
        assert exchange["status"] == 304 and not exchange["body"]
    else:
        body = exchange["body"]
        assert exchange["status"] == 200 and body["jobs"] == [] and warnings_of(body)


@pytest.mark.parametrize("version", SUPPORTED)
def test_unknown_job_error_text(version):
    exchange = recording(version, "job_unknown")
    assert exchange["status"] == (500 if version == "v0.0.38" else 404)
    assert any("Invalid job id specified" in text for text in errors_of(exchange["body"]))


def test_v0041_job_resources_nodes_object_is_read():
    raw = recording("v0.0.41", "job_running")["body"]["jobs"][0]
    raw = {k: v for k, v in raw.items() if k != "nodes"}
    (job,) = dialect_for("v0.0.41").jobs({"jobs": [raw]})
    assert job.nodes == "gpu-a01"


@pytest.mark.parametrize("version", SUPPORTED)
def test_node_address(version):
    expected = "127.0.0.1" if version == "v0.0.38" else "10.1.0.21"
    assert dialect_for(version).node_address(recording(version, "node")["body"]) == expected


@pytest.mark.parametrize("version", SUPPORTED)
def test_detection_picks_the_newest_served(version):
    paths = recording(version, "openapi")["body"]["paths"]
    assert newest_served(paths) == version


def test_detection_ignores_versions_aifactory_does_not_speak():
    assert newest_served(["/slurm/v0.0.45/jobs", "/slurm/v0.0.40/jobs", "/slurmdb/v0.0.44/jobs"]) == "v0.0.40"
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
