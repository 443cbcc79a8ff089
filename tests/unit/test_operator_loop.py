"""The operator runs on uvloop where it is installed, as `kopf run` would run it (and uvicorn runs the API)."""

from __future__ import annotations

import asyncio
import sys

import kopf
import uvloop

from aifactory import cli


def test_the_operator_command_runs_kopf_on_uvloop(monkeypatch):
    ran_on = []

    async def operator(**kwargs):
        ran_on.append((type(asyncio.get_running_loop()), kwargs["standalone"]))

    monkeypatch.setattr(kopf, "operator", operator)
    args = cli.parser().parse_args(["operator", "--liveness-host", "127.0.0.1"])
    assert args.run(args) == 0
    assert ran_on == [(uvloop.Loop, True)]


def test_without_uvloop_the_operator_keeps_asyncio_s_own_loop(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert cli._event_loop_factory() is None
