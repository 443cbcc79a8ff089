"""How the operator sets kopf up. Its own module (no handlers registered here), so a test can run a small kopf
operator with the same settings."""

from __future__ import annotations

import logging

import kopf


def tune(settings: kopf.OperatorSettings) -> None:
    # One replica (Recreate): no peering resources needed.
    settings.peering.standalone = True
    # Keep kopf's bookkeeping out of .status, which is ours and schema-checked.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="aifactory.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="aifactory.io", key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # A deleted resource keeps its finalizer until its timer has exited. A timer caught mid-tick (a probe, a
    # Slurm call) ends its tick a moment later, but kopf looks again only after cancellation_polling, 60 s by
    # default: services took a minute to go. Wait briefly for the tick, then look again every second.
    settings.background.instant_exit_timeout = 0.1
    settings.background.cancellation_polling = 1.0
