import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aifactory.jobscript import render_job_script, shell_word
from aifactory.models import Recipe


def test_shell_word_quotes_everything_but_the_placeholders():
    assert shell_word("--port={port}") == '--port="$AIFACTORY_PORT"'
    assert shell_word("{host}") == '"$AIFACTORY_BIND_ADDRESS"'
    assert shell_word("$(touch x)") == "'$(touch x)'"
    assert shell_word("") == "''"


HOSTILE = {
    "SUBST": "$(touch {marker})",
    "QUOTE": "'; touch {marker} #",
    "BACKTICK": "`touch {marker}`",
    "NEWLINE": "line1\ntouch {marker}\n",
    "DOLLAR": "${{HOME}} $HOME",
}


@pytest.fixture
def fake_scontrol(tmp_path):
    """A test double for scontrol: records the comment updates the job publishes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.calls\n')
    script.chmod(0o755)
    return bin_dir


def test_native_script_runs_with_hostile_env_literally(tmp_path, fake_scontrol):
    marker = tmp_path / "pwned"
    dump = tmp_path / "env.json"
    recipe = Recipe(name="probe", category="test", runtime="native",
                    command=[sys.executable, "-c",
                             "import json, os, sys; json.dump({'env': dict(os.environ), 'argv': sys.argv[1:]},"
                             f" open({str(dump)!r}, 'w'))",
                             "--port", "{port}", "--literal", "$(touch " + str(marker) + ")"])
    script = tmp_path / "job.sh"
    script.write_text(render_job_script(recipe, "test job"))
    env = {k: v.format(marker=marker) for k, v in HOSTILE.items()}
    env.update({"PATH": f"{fake_scontrol}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
                "AIFACTORY_SERVICE_UID": "uid-1", "AIFACTORY_BIND_ADDRESS": "127.0.0.1"})
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(dump.read_text())
    for key, value in HOSTILE.items():
        assert seen["env"][key] == value.format(marker=marker)
    assert not marker.exists(), "a value was run by a shell"
    port = seen["env"]["AIFACTORY_PORT"]
    assert port.isdigit() and seen["argv"][:2] == ["--port", port]
    assert seen["argv"][2:] == ["--literal", f"$(touch {marker})"]
    calls = (tmp_path / "scontrol.calls").read_text()
    assert f"Comment=aifactory uid=uid-1 stage=starting port={port}" in calls


# --- runtime apptainer, through the apptainer test double (tests/doubles/apptainer) ---

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"
DUMP_ENV = ("import json, os, sys; json.dump({'env': dict(os.environ), 'argv': sys.argv[1:], 'cwd': os.getcwd()},"
            " open(os.environ['DUMP_TO'], 'w'))")


def container_recipe(**fields) -> Recipe:
    spec = {"name": "probe", "category": "test", "runtime": "apptainer", "image": "docker://example.invalid/probe:1",
            "command": [sys.executable, "-c", DUMP_ENV, "--port", "{port}", "--model", "{env:MODEL}"]}
    return Recipe(**{**spec, **fields})


def run_job(tmp_path, fake_scontrol, script: str, env: dict[str, str], job_id: str = "42"):
    path = tmp_path / f"job-{job_id}.sh"
    path.write_text(script)
    full = {"PATH": f"{DOUBLES}:{fake_scontrol}:{os.environ['PATH']}", "SLURM_JOB_ID": job_id,
            "AIFACTORY_SERVICE_UID": "uid-1", "AIFACTORY_BIND_ADDRESS": "127.0.0.1", "HOME": str(tmp_path / "home"),
            "AIFACTORY_TEST_APPTAINER_RECORD": str(tmp_path / "apptainer.calls"),
            "AIFACTORY_TEST_APPTAINER_PULL_SECONDS": "0.2", "DUMP_TO": str(tmp_path / "seen.json"), **env}
    return subprocess.Popen(["bash", str(path)], env=full, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def calls(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "apptainer.calls").read_text().splitlines()]


def test_apptainer_job_pulls_once_then_runs_with_hostile_env_literally(tmp_path, fake_scontrol):
    marker = tmp_path / "pwned"
    env = {k: v.format(marker=marker) for k, v in HOSTILE.items()}
    env["MODEL"] = "'; touch " + str(marker) + " #"
    recipe = container_recipe()
    script = render_job_script(recipe, "test job", env_names=[*env, "PATH", "DUMP_TO"])
    finish(run_job(tmp_path, fake_scontrol, script, env))

    seen = json.loads((tmp_path / "seen.json").read_text())
    for key, value in env.items():
        assert seen["env"][key] == value, key
    assert not marker.exists(), "a value was run by a shell"
    port = seen["env"]["AIFACTORY_PORT"]
    assert seen["argv"] == ["--port", port, "--model", env["MODEL"]]
    # --cleanenv: the job's own variables stay outside the container.
    assert "SLURM_JOB_ID" not in seen["env"] and "AIFACTORY_SERVICE_UID" not in seen["env"]

    pull, run = calls(tmp_path)
    assert pull["subcommand"] == "pull" and pull["positionals"][1] == "docker://example.invalid/probe:1"
    assert pull["positionals"][0].startswith(str(tmp_path / "home" / ".cache" / "aifactory" / "sif"))
    assert run["subcommand"] == "exec"
    flags = [name for name, _ in run["flags"]]
    assert flags[:2] == ["--cleanenv", "--no-eval"] and "--nv" not in flags
    binds = [value for name, value in run["flags"] if name == "--bind"]
    assert binds == [f"{tmp_path}/home/.cache/aifactory/models:/models", f"{tmp_path}/workspaces/uid-1:/workspace"]
    assert "APPTAINERENV_PATH" not in run["injected"] and "APPTAINERENV_SUBST" in run["injected"]
    stages = (tmp_path / "scontrol.calls").read_text().splitlines()
    assert [s.split("stage=")[1] for s in stages] == ["building", f"starting port={port}"]

    # A second job finds the image in the cache: no pull, no building stage.
    (tmp_path / "scontrol.calls").unlink()
    finish(run_job(tmp_path, fake_scontrol, script, env, job_id="43"))
    assert [c["subcommand"] for c in calls(tmp_path)] == ["pull", "exec", "exec"]
    assert "stage=building" not in (tmp_path / "scontrol.calls").read_text()


def test_the_double_evaluates_injected_values_without_no_eval(tmp_path):
    # What --no-eval protects against: Apptainer's injection script evaluates APPTAINERENV_ values.
    marker = tmp_path / "pwned"
    image = tmp_path / "fake.sif"
    image.write_text("fake")
    env = {**os.environ, "APPTAINERENV_X": f"$(touch {marker})"}
    run = subprocess.run([str(DOUBLES / "apptainer"), "exec", "--cleanenv", str(image), "true"], env=env,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert marker.exists()


def test_the_double_rejects_flags_apptainer_does_not_document(tmp_path):
    run = subprocess.run([str(DOUBLES / "apptainer"), "exec", "--no-such-flag", "x.sif", "true"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 255 and "unknown flag: --no-such-flag" in run.stderr


def test_two_jobs_share_one_pull(tmp_path, fake_scontrol):
    script = render_job_script(container_recipe(), "test job", env_names=["MODEL", "DUMP_TO"])
    env = {"MODEL": "m", "AIFACTORY_TEST_APPTAINER_PULL_SECONDS": "1"}
    first = run_job(tmp_path, fake_scontrol, script, {**env, "DUMP_TO": str(tmp_path / "a.json")}, job_id="1")
    second = run_job(tmp_path, fake_scontrol, script, {**env, "DUMP_TO": str(tmp_path / "b.json")}, job_id="2")
    finish(first)
    finish(second)
    assert [c["subcommand"] for c in calls(tmp_path)].count("pull") == 1
    assert (tmp_path / "a.json").exists() and (tmp_path / "b.json").exists()
    assert not list((tmp_path / "home" / ".cache" / "aifactory" / "sif").glob("*.partial.*"))


def test_a_failed_pull_fails_the_job_with_apptainers_words(tmp_path, fake_scontrol):
    script = render_job_script(container_recipe(), "test job", env_names=["MODEL", "DUMP_TO"])
    failing = {"MODEL": "m", "AIFACTORY_TEST_APPTAINER_PULL_FAILS": "manifest unknown"}
    proc = run_job(tmp_path, fake_scontrol, script, failing)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "manifest unknown" in err and "could not pull the image (apptainer pull exited with 255)" in err
    assert [c["subcommand"] for c in calls(tmp_path)] == ["pull"]
    cache = tmp_path / "home" / ".cache" / "aifactory" / "sif"
    assert not list(cache.glob("*.sif")) and not list(cache.glob("*.partial.*"))  # nothing half-pulled is reused


def test_gpus_workdir_binds_and_build(tmp_path, fake_scontrol):
    recipe = container_recipe(image=None, build="Bootstrap: docker\nFrom: python:3.11-slim\n", workdir="/workspace",
                              binds=[f"{tmp_path}:/data:ro"])
    script = render_job_script(recipe, "test job", env_names=["MODEL", "DUMP_TO"], gpus=2)
    finish(run_job(tmp_path, fake_scontrol, script, {"MODEL": "m"}))
    build, run = calls(tmp_path)
    assert build["subcommand"] == "build" and build["positionals"][1].endswith(".def")
    assert Path(build["positionals"][1]).read_text() == recipe.build + "\n"
    assert ("--nv", None) in [tuple(f) for f in run["flags"]]
    assert ["--bind", f"{tmp_path}:/data:ro"] in run["flags"] and ["--pwd", "/workspace"] in run["flags"]
    assert json.loads((tmp_path / "seen.json").read_text())["cwd"] == str(tmp_path / "workspaces" / "uid-1")


def test_sif_path_images_are_used_in_place_and_singularity_sites_get_singularity():
    recipe = container_recipe(image="/images/probe.sif", command=[], args=["--port", "{port}"])
    script = render_job_script(recipe, "t", env_names=["MODEL", "DUMP_TO"], container_command="singularity")
    assert "sif=/images/probe.sif" in script and "pull" not in script
    assert 'export "SINGULARITYENV_$name=${!name}"' in script
    assert "exec singularity run --cleanenv --no-eval" in script
    with pytest.raises(ValueError, match="podman"):
        render_job_script(recipe, "t", container_command="podman")


def test_env_placeholders_become_quoted_expansions_and_names_are_checked():
    assert shell_word("--model={env:VLLM_MODEL}") == '--model="$VLLM_MODEL"'
    assert shell_word("{env:not a name}") == "'{env:not a name}'"
    with pytest.raises(ValueError, match="command"):
        Recipe(name="x", category="y", runtime="native", command=["serve", "{env:1X}"])


def test_job_request_hands_recipe_and_service_env_names_and_gpus_to_the_script():
    from aifactory.lifecycle import ServiceRef, job_request
    from aifactory.models import AIServiceSpec, SlurmClusterSpec

    cluster = SlurmClusterSpec(url="http://slurm", working_directory="/jobs", job_environment={"SITE_ONLY": "1"})
    recipe = container_recipe(environment={"MODEL": "default"})
    spec = AIServiceSpec(recipe="test/probe", env={"HF_TOKEN": "secret", "PATH": "/opt/bin:/usr/bin"},
                         resources={"gpu": 1})
    request = job_request(ServiceRef("ns", "svc", "uid-1"), spec, recipe, cluster)
    loop = next(line for line in request.script.splitlines() if line.startswith("for name in"))
    assert loop == "for name in AIFACTORY_PORT HF_TOKEN MODEL; do"
    assert "--nv" in request.script and request.gpus_per_node == 1
    assert "secret" not in request.script  # values travel in the job's environment only
    assert request.environment["PATH"] == "/opt/bin:/usr/bin" and request.environment["SITE_ONLY"] == "1"


def test_the_gpus_slurm_gives_the_job_are_the_ones_the_container_sees(tmp_path, fake_scontrol):
    # --cleanenv keeps Slurm's CUDA_VISIBLE_DEVICES out of the container (and --nv adds nothing for it): the
    # service would see every GPU of the node. Apptainer's GPU guide: set APPTAINERENV_CUDA_VISIBLE_DEVICES.
    script = render_job_script(container_recipe(), "test job", env_names=["MODEL", "DUMP_TO"], gpus=1)
    finish(run_job(tmp_path, fake_scontrol, script, {"MODEL": "m", "CUDA_VISIBLE_DEVICES": "1",
                                                     "ROCR_VISIBLE_DEVICES": "1"}))
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "1" and seen["env"]["ROCR_VISIBLE_DEVICES"] == "1"
    # Without GPUs from Slurm nothing is invented.
    finish(run_job(tmp_path, fake_scontrol, script, {"MODEL": "m"}, job_id="43"))
    assert "CUDA_VISIBLE_DEVICES" not in json.loads((tmp_path / "seen.json").read_text())["env"]


def test_the_port_is_chosen_after_the_image_is_ready():
    # A pull may take minutes; a port picked before it may be taken by then.
    script = render_job_script(container_recipe(), "test job", env_names=["MODEL"])
    lines = script.splitlines()
    pull = next(i for i, line in enumerate(lines) if line.startswith('aifactory_image "$sif"'))
    port = next(i for i, line in enumerate(lines) if line.startswith("AIFACTORY_PORT="))
    start = next(i for i, line in enumerate(lines) if line.startswith("aifactory_publish starting"))
    assert pull < port < start
