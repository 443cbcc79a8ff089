"""The pure core of training runs (job request, states, the tenant's limit, session ids, the trainer's files),
the registry's names, the trainer itself on small data, and files on this side's filesystem."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from aifactory.lifecycle import ServiceRef, SpecError
from aifactory.models import Recipe, SlurmClusterSpec, TenantSpec, TrainingRunSpec, TrainingState
from aifactory.recipes import builtin_recipes
from aifactory.slurm.files import LocalFiles, TooLarge
from aifactory.slurm.jobs import SlurmJob
from aifactory.storage import InvalidName, checked_name, dataset_of, model_name_of, partial_name
from aifactory.trainer import CONFIG_VAR, load_dataset, split, train
from aifactory.training import (
    Slot, admitted, job_request, last_error, log_entries, observe, parse_metrics, run_name, session_id,
)

CLUSTER = SlurmClusterSpec.model_validate({"url": "http://slurm:6820", "workingDirectory": "/scratch/jobs",
                                           "account": "site", "storage": {"path": "/shared/aif"}})
SPEC = TrainingRunSpec.model_validate({"architecture": "mlp", "dataset": "digits", "hyperparameters": {
    "learningRate": 0.01, "batchSize": 16, "epochs": 3, "optimizer": "sgd"}})
RUN = ServiceRef("team-a", "sess-0123456789ab", "uid-1")


def recipe() -> Recipe:
    return builtin_recipes()["training/pytorch"]


def test_session_ids_map_one_to_one_to_names():
    assert session_id("sess-0123456789ab") == "sess_0123456789ab"
    assert run_name("sess_0123456789ab") == "sess-0123456789ab"
    assert session_id("my-run-2") == "my_run_2" and run_name("my_run_2") == "my-run-2"
    for bad in ("sess-0123", "UPPER", "../x", "", "a_", "_a"):
        assert run_name(bad) is None, bad


def test_job_request_carries_the_settings_charges_the_tenant_and_binds_its_area():
    tenant = TenantSpec.model_validate({"slurm": {"account": "acct-a"}})
    request = job_request(RUN, SPEC, recipe(), CLUSTER, tenant)
    settings = json.loads(request.environment[CONFIG_VAR])
    assert settings == {
        "sessionId": "sess_0123456789ab", "architecture": "mlp", "dataset": "digits",
        "hyperparameters": {"learning_rate": 0.01, "batch_size": 16, "epochs": 3, "optimizer": "sgd",
                            "loss_function": "cross_entropy"},
        "modelName": "mlp_digits_sess_0123456789ab",
        "modelPath": "/shared/aif/team-a/models/mlp_digits_sess_0123456789ab.pth",
        "datasetDir": "/shared/aif/team-a/datasets"}
    assert request.name == "trn-team-a-sess-0123456789ab" and request.account == "acct-a"
    assert request.working_directory == "/scratch/jobs" and "uid=uid-1" in request.comment
    assert "# aifactory training team-a/sess-0123456789ab (recipe training/pytorch)" in request.script
    assert "exec python3 -m aifactory.trainer" in request.script
    assert request.cpus_per_task == 1 and request.memory_per_node_mb == 2048
    container = recipe().model_copy(update={"runtime": "apptainer", "image": "docker://pytorch/pytorch:2.5.0"})
    assert "--bind /shared/aif/team-a" in job_request(RUN, SPEC, container, CLUSTER).script


def test_job_request_refuses_what_cannot_run():
    with pytest.raises(SpecError, match="has no storage"):
        job_request(RUN, SPEC, recipe(), CLUSTER.model_copy(update={"storage": None}))
    with pytest.raises(SpecError, match="Architecture 'gpt9' not found"):
        job_request(RUN, SPEC.model_copy(update={"architecture": "gpt9"}), recipe(), CLUSTER)
    with pytest.raises(SpecError, match="account"):
        job_request(RUN, SPEC.model_copy(update={"account": "other"}), recipe(), CLUSTER,
                    TenantSpec.model_validate({"slurm": {"account": "acct-a"}}))


@pytest.mark.parametrize(("job", "state", "words"), [
    (SlurmJob("1", state="PENDING", reason="Resources"), TrainingState.queued, "Queued by Slurm: Resources"),
    (SlurmJob("1", state="PENDING", reason="None"), TrainingState.queued, "waiting to be scheduled"),
    (SlurmJob("1", state="RUNNING", batch_host="n1", start_time=1700000000), TrainingState.running, "Training on n1"),
    (SlurmJob("1", state="COMPLETED", end_time=1700000100), TrainingState.completed, "Training completed"),
    (SlurmJob("1", state="CANCELLED"), TrainingState.stopped, "cancelled"),
    (SlurmJob("1", state="FAILED", exit_code=1), TrainingState.failed, "exit code 1"),
    (SlurmJob("1", state="TIMEOUT"), TrainingState.failed, "time limit"),
    (SlurmJob("1", state="OUT_OF_MEMORY"), TrainingState.failed, "out of memory"),
    (SlurmJob("1", state="RUNNING", vanished=True), TrainingState.failed, "no longer knows"),
])
def test_observe(job, state, words):
    seen = observe(job)
    assert seen.state is state and words in seen.message, seen
    if state is TrainingState.running:
        assert seen.start_time == "2023-11-14T22:13:20Z" and seen.end_time is None


def test_a_failed_run_reports_the_trainers_words():
    seen = observe(SlurmJob("1", state="FAILED", exit_code=1), "Dataset 'x' not found in the registry")
    assert seen.message == "Dataset 'x' not found in the registry"
    parts = [("stdout", "2026-01-01T00:00:00Z INFO Starting\n2026-01-01T00:00:01Z ERROR first\n"
                        "2026-01-01T00:00:02Z ERROR the last one\n"), ("stderr", "Traceback ...\n")]
    assert last_error(parts) == "the last one"


def test_admission_keeps_the_order_and_the_limit():
    slots = [Slot("a", "2026-01-01T00:00:00Z 1.0", holding=True, waiting=False),
             Slot("b", "2026-01-01T00:00:01Z 2.5", holding=False, waiting=True),
             Slot("c", "2026-01-01T00:00:01Z 2.4", holding=False, waiting=True),
             Slot("d", "2026-01-01T00:00:00Z 0.1", holding=False, waiting=False)]  # ended
    assert admitted("b", slots, None) == (True, "")
    ok, why = admitted("c", slots, 1)
    assert not ok and "1 of the tenant's 1" in why and "0 queued ahead" in why
    assert admitted("c", slots, 2)[0] and not admitted("b", slots, 2)[0]  # c asked first (within the second)
    assert admitted("b", slots, 3)[0]
    assert admitted("a", slots, 1)[0]  # its own job is not in its way


def test_metrics_and_log_lines():
    text = '{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "timestamp": "t"}\n{"ep'
    assert [m.epoch for m in parse_metrics(text)] == [1] and parse_metrics(None) == []
    entries = log_entries([("stdout", "aifactory: job 1 on n1\n2026-01-01T00:00:02Z INFO Epoch 1/3 completed\n"),
                           ("stderr", "a warning\n")], "2026-01-01T00:00:01Z")
    assert [(e.timestamp, e.level, e.message) for e in entries] == [
        ("2026-01-01T00:00:01Z", "INFO", "aifactory: job 1 on n1"),
        ("2026-01-01T00:00:01Z", "ERROR", "a warning"),
        ("2026-01-01T00:00:02Z", "INFO", "Epoch 1/3 completed")]


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", ".hidden", "-dash", "a..b", "", "x" * 129, "a\\b",
                                  "a\0b", "a b", "x.partial-1"])
def test_names_that_could_leave_the_area_are_refused(name):
    with pytest.raises(InvalidName):
        checked_name(name)


def test_only_complete_entries_are_listed():
    assert model_name_of("m.pth") == "m" and model_name_of(".m.pth.partial-ab12") is None
    assert model_name_of("notes.txt") is None
    assert dataset_of("d.csv") == ("d", "csv") and dataset_of("d.csv.json") is None
    assert dataset_of(partial_name("/a/d.npz", "ff").rsplit("/", 1)[-1]) is None


@pytest.mark.parametrize(("architecture", "loss", "optimizer"), [
    ("cnn", "cross_entropy", "adam"), ("mlp", "mse", "rmsprop"), ("mlp", "bce", "adamw"), ("mlp", "mae", "sgd")])
def test_the_trainer_trains_writes_metrics_and_saves_torchscript(tmp_path, architecture, loss, optimizer):
    import torch

    config = {"sessionId": "sess_x", "architecture": architecture, "dataset": "digits",
              "hyperparameters": {"learning_rate": 0.01, "batch_size": 64, "epochs": 2, "optimizer": optimizer,
                                  "loss_function": loss},
              "modelPath": str(tmp_path / "models" / "m.pth"), "modelName": "m"}
    last = train(config, tmp_path / "metrics.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and lines[-1] == last
    assert set(last) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "timestamp"}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m.pth"]  # no partial file left
    model = torch.jit.load(str(tmp_path / "models" / "m.pth"))
    data = load_dataset("digits", None)
    _, validation = split(len(data.x))
    out = model(torch.from_numpy(data.x[validation]))
    assert out.shape == (len(validation), 10)
    assert abs(float((out.argmax(1).numpy() == data.y[validation]).mean()) - last["val_accuracy"]) < 1e-6


def test_the_trainer_reads_registry_datasets(tmp_path):
    rows = np.random.default_rng(1).normal(size=(40, 3))
    labels = (rows[:, 0] > 0).astype(int) + 5  # any labels: they are renumbered
    (tmp_path / "t.csv").write_text("a,b,c,y\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{y}\n" for r, y in zip(rows, labels)))
    data = load_dataset("t", str(tmp_path))
    assert data.x.shape == (40, 3) and set(data.y) == {0, 1} and data.image_shape is None
    np.savez(tmp_path / "i.npz", x=np.zeros((10, 6, 6)), y=np.arange(10) % 2)
    images = load_dataset("i", str(tmp_path))
    assert images.image_shape == (1, 6, 6) and images.classes == 2
    from aifactory.trainer import TrainingError
    with pytest.raises(TrainingError, match="Dataset 'nope' not found"):
        load_dataset("nope", str(tmp_path))
    with pytest.raises(TrainingError, match="needs image-shaped samples"):
        from aifactory.trainer import build_model
        build_model("cnn", data)


def test_local_files_write_whole_or_not_at_all(tmp_path):
    files = LocalFiles()

    async def chunks(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ConnectionError("the client went away")
            yield b"x" * 1000

    async def scenario():
        target = str(tmp_path / "area" / "f.bin")
        assert await files.write(target, chunks(3)) == 3000
        with pytest.raises(TooLarge):
            await files.write(str(tmp_path / "area" / "big.bin"), chunks(5), limit=4500)
        with pytest.raises(ConnectionError):
            await files.write(str(tmp_path / "area" / "cut.bin"), chunks(5, fail_at=2))
        assert [f.name for f in await files.list(str(tmp_path / "area"))] == ["f.bin"]
        assert b"".join([c async for c in files.read(target, chunk=700)]) == b"x" * 3000
        assert (await files.disk_usage(str(tmp_path / "not" / "yet"))).total > 0
        assert await files.remove(target) and await files.stat(target) is None

    asyncio.run(scenario())
