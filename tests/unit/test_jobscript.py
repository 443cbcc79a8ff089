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
