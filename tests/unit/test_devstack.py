import pytest

from aifactory.devstack import stack


def test_dev_up_as_non_root_says_what_needs_root(monkeypatch):
    monkeypatch.setattr(stack.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="needs root.*munged, slurmctld and slurmd"):
        stack.up()
