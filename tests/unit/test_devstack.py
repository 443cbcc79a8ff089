import pytest

from aifactory.devstack import stack


def test_dev_up_as_non_root_says_what_needs_root(monkeypatch):
    monkeypatch.setattr(stack.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="needs root.*munged, slurmctld and slurmd"):
        stack.up()


def test_leftovers_are_the_processes_of_this_stack_only_not_of_a_stack_whose_folder_shares_its_name(
        tmp_path, monkeypatch):
    import subprocess
    import sys

    from aifactory.devstack import stack

    ours, theirs = tmp_path / "dev", tmp_path / "dev-other"
    monkeypatch.setenv("AIFACTORY_DEV_DIR", str(ours))
    sleeper = "import time; time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", sleeper, f"{folder}/slurm.conf"]) for folder in (ours, theirs)]
    try:
        found = [pid for pid, _ in stack.leftover_processes()]
        assert procs[0].pid in found and procs[1].pid not in found
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
