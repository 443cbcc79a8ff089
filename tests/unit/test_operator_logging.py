"""The operator's log says which object each of kopf's lines is about: without it, a deletion that hangs cannot
be told from the others around it."""

from __future__ import annotations

import logging

import pytest

from aifactory.cli import configure_operator_logging


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("asyncio").propagate,
             logging.getLogger("asyncio").handlers[:])
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("asyncio").propagate, logging.getLogger("asyncio").handlers[:] = saved[2], saved[3]


def test_kopfs_lines_name_their_object_and_the_level_is_kept(root_logging, capsys):
    configure_operator_logging("warning")
    # As kopf's object loggers log: the object's reference travels in the record's extra fields.
    logging.getLogger("kopf.objects").warning("Handler 'aiservice_delete' failed temporarily.",
                                              extra={"k8s_ref": {"namespace": "tenant-a", "name": "echo-1"},
                                                     "k8s_skip": True})
    logging.getLogger("aifactory.operator").info("not at this level")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("WARNING kopf.objects: [tenant-a/echo-1] Handler 'aiservice_delete' failed temporarily.")
    assert lines[1].endswith("ERROR asyncio: Task exception was never retrieved") and len(lines) == 2
