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


def test_saved_state_of_another_cluster_name_is_set_aside_before_slurmctld_starts(tmp_path, monkeypatch):
    # The same folder used with another port offset held the state of another cluster name, and slurmctld refused
    # to start ("CLUSTER NAME MISMATCH"), even with -c.
    from aifactory.devstack.slurm import LocalSlurm

    monkeypatch.setenv("AIFACTORY_DEV_DIR", str(tmp_path))
    slurm = LocalSlurm("22.05", base_dir=tmp_path / "slurm")
    state = tmp_path / "slurm" / "state"
    state.mkdir(parents=True)
    (state / "clustername").write_text("aifactory600\n")
    (state / "job_state").write_text("jobs of the other cluster")
    said = []
    slurm._forget_another_clusters_state(said.append)
    assert not (state / "job_state").exists() and not (state / "clustername").exists()
    assert state.is_dir() and any("aifactory600" in line for line in said)
    (state / "clustername").write_text(slurm.cluster_name + "\n")
    (state / "job_state").write_text("our jobs")
    slurm._forget_another_clusters_state(said.append)
    assert (state / "job_state").read_text() == "our jobs"  # this cluster's own state is kept
