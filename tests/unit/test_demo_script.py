"""`make demo` run again on the same machine: the demo service an earlier run left, whose job ended when the stack
went down, is deleted first; applying the same manifest would change nothing and the demo would stop at once."""

from __future__ import annotations

from scripts.demo import ended_before


def service(phase: str | None, message: str | None = None) -> dict:
    return {"metadata": {"name": "demo-embeddings"}, "status": {"phase": phase, "message": message} if phase else {}}


def test_an_ended_service_from_an_earlier_run_is_cleared_with_its_reason():
    assert ended_before(service("cancelled", "The job was cancelled outside aifactory")) == \
        "cancelled: The job was cancelled outside aifactory"
    assert ended_before(service("failed")) == "failed: no message"
    assert ended_before(service("stopped", "stopped by its spec")) == "stopped: stopped by its spec"


def test_a_live_or_absent_service_is_left_alone():
    assert ended_before(None) is None
    for phase in ("pending", "starting", "running", None):
        assert ended_before(service(phase)) is None
