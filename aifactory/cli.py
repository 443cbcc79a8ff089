"""The `aifactory` command: run the operator or the REST API, write the CRDs, drive the local stack."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


class _QuietTimers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Timer '") and text.endswith("succeeded."))


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from aifactory.operator import main as _registered  # noqa: F401  (registers the handlers)
    from aifactory.operator.config import config

    configure_operator_logging(args.log_level)
    # Every poll, probe and timer tick would otherwise be a line; keep the log about changes.
    for noisy in ("httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietTimers())
    # --namespace, else AIFACTORY_WATCH_NAMESPACES; the login sizes its connection pool by it.
    namespaces = config.watch_namespaces = args.namespace or config.watch_namespaces
    # On uvloop, as `kopf run` runs an operator and uvicorn the API, where it is installed.
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        runner.run(kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            liveness_endpoint=f"http://{args.liveness_host}:{args.liveness_port}/healthz",
        ))
    return 0


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_operator_logging(level: str) -> None:
    """kopf's formatter on the root logger, so that each line about an object says which one
    ("[namespace/name] Handler 'aiservice_delete' succeeded.")."""
    import kopf

    kopf.configure(log_format=LOG_FORMAT, log_prefix=True)
    logging.getLogger().setLevel(getattr(logging, level.upper()))
    logging.getLogger("asyncio").propagate = True  # kopf mutes it; a task's lost exception must still show


def _event_loop_factory():
    """uvloop's event loop where it is installed (a dependency, but not on every platform), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _crds(args: argparse.Namespace) -> int:
    from aifactory.crds import all_crds, render, write_crds

    out = Path(args.output)
    if args.check:
        stale = [name for name, crd in all_crds().items()
                 if not (out / name).exists() or (out / name).read_text() != render(crd)]
        if stale:
            print(f"stale CRDs in {out}: {', '.join(stale)}; run `aifactory crds`", file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    for path in write_crds(out):
        print(f"wrote {path}")
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from aifactory.api.app import create_app

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format=LOG_FORMAT)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from aifactory.api.identity.keys import new_key

    made = new_key()
    # The key goes to stdout only (for a password manager or a Secret); id and hash are what the cluster keeps.
    print(f"key:  {made.key}")
    print(f"id:   {made.id}")
    print(f"hash: {made.key_hash}")
    print(f"# helm: --set identity.bootstrapAdminKey.id={made.id} --set identity.bootstrapAdminKey.hash={made.key_hash}",
          file=sys.stderr)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from aifactory.devstack import stack

    return stack.command(args.action, args.slurm)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    op = sub.add_parser("operator", help="run the kopf operator")
    op.add_argument("--namespace", action="append", help="watch only this namespace (repeatable); default: all")
    op.add_argument("--liveness-host", default="0.0.0.0")
    op.add_argument("--liveness-port", type=int, default=8080)
    op.add_argument("--log-level", default="info")
    op.set_defaults(run=_operator)

    api = sub.add_parser("api", help="serve the REST API (AIFACTORY_API_* variables configure it)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8001)
    api.add_argument("--log-level", default="info")
    api.set_defaults(run=_api)

    crds = sub.add_parser("crds", help="write the CRDs generated from the models")
    crds.add_argument("--output", default="crds")
    crds.add_argument("--check", action="store_true", help="only check that the files are up to date")
    crds.set_defaults(run=_crds)

    keygen = sub.add_parser("keygen", help="make a new API key; print it with the id and hash the cluster stores")
    keygen.set_defaults(run=_keygen)

    dev = sub.add_parser("dev", help="the local stack: Kubernetes API, Slurm, operator, REST API")
    dev.add_argument("action", choices=["up", "down", "status", "env"])
    dev.add_argument("--slurm", action="append", metavar="RELEASE",
                     help="also a Slurm release from its Debian chroot: 24.11, 26.05 or all (repeatable); "
                          "the default cluster stays on the host's 22.05")
    dev.set_defaults(run=_dev)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.run(args))
