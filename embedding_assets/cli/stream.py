"""``embedding-assets consume``: streamed sources' micro-batches into the landing zone, for a
deployment without the Dagster daemon (whose stream_sensor does the same), each followed by a sync
on request."""

from __future__ import annotations

import argparse
import time
from typing import Any

from embedding_assets.cli.common import UsageError
from embedding_assets.config import Settings


def cmd_consume(args: argparse.Namespace) -> int:
    from embedding_assets.core import stop
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.stream import consume, describe
    from embedding_assets.defs.sync import sync

    pipeline = PipelineResource()
    streamed = {s: c for s, c in pipeline.contracts().items() if c.stream and args.source in (None, s)}
    if not streamed:
        raise UsageError(
            f"no contract{' ' + repr(args.source) if args.source else ''} reads a stream (stream: in its YAML)"
        )
    stop.install()
    with local_instance(Settings.from_env()) as instance:
        while True:
            landed = {s: consume(pipeline, c) for s, c in streamed.items()}
            for source, result in landed.items():
                print(describe(source, result), flush=True)
            if args.sync and any(r.batch for r in landed.values()):
                print(sync(instance, pipeline).render(), flush=True)
            if args.once or stop.requested():
                return 0
            if not any(r.batch for r in landed.values()):
                time.sleep(args.idle_s)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("consume", help="take streamed sources' micro-batches into the landing zone")
    p.add_argument("--source", help="only this source (default: every one whose contract reads a stream)")
    p.add_argument("--once", action="store_true", help="one micro-batch per source, then exit")
    p.add_argument("--sync", action="store_true", help="sync after each micro-batch that landed")
    p.add_argument("--idle-s", type=float, default=1.0, help="wait this long when nothing came (default 1)")
    p.set_defaults(func=cmd_consume)
