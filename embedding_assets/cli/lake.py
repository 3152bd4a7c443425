"""Commands over the lake and the Dagster instance: sync, register, repair, restore, quality."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from embedding_assets.cli.common import UsageError
from embedding_assets.config import Settings


def cmd_sync(args: argparse.Namespace) -> int:
    from embedding_assets.core import stop
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.sync import Options, sync

    started = time.perf_counter()
    with local_instance(Settings.from_env()) as instance:
        if args.dry_run:
            from embedding_assets.defs.forecast import forecast

            print(forecast(instance, PipelineResource()).render())
            return 0
        options = Options(force=args.force, retry_dead_letters=args.retry_dead_letters, jobs=args.jobs)
        stop.install()  # SIGTERM/SIGINT: stop at the next safe point; a second one: at once
        summary = sync(instance, PipelineResource(), options=options)
    print(summary.render())
    print(f"sync finished in {time.perf_counter() - started:.1f}s: {'ok' if summary.ok else 'FAILED'}")
    if summary.stopped:
        return stop.exit_code()
    return 2 if summary.damage else 0 if summary.ok else 1


def cmd_register(args: argparse.Namespace) -> int:
    """Register the landing zone's batches and the registry's models as partitions (idempotent),
    and observe the landing files."""
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.keys import BATCHES, MODELS
    from embedding_assets.defs.models import register_models
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.sources import landing_events
    from embedding_assets.defs.sync import register
    from embedding_assets.ingest.landing import scan_landing

    settings, pipeline = Settings.from_env(), PipelineResource()
    scan = scan_landing(settings.landing_dir, pipeline.contracts())
    with local_instance(settings) as instance:
        new = register(instance, scan)
        new_models = register_models(instance, pipeline.ensure_registry())
        for event in (e for b in scan.batches for e in landing_events(b, b.content_hash())):
            instance.report_runless_asset_event(event)
        known, models = instance.get_dynamic_partitions(BATCHES), instance.get_dynamic_partitions(MODELS)
    if args.json:
        print(json.dumps({"registered": new, "batches": sorted(known), "models": sorted(models),
                          "registered_models": new_models, "refused": list(scan.rejected)}))  # fmt: skip
        return 0
    print(f"registered: {', '.join(new) or 'nothing new'}\nbatches: {len(known)}")
    print(f"models: {', '.join(sorted(models))}" + (f" (new: {', '.join(new_models)})" if new_models else ""))
    print("\n".join(f"refused: {line}" for line in scan.rejected))
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from embedding_assets.defs.health import damage_report, lake_damage
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.repair import RepairRefused, repair_index
    from embedding_assets.defs.resources import PipelineResource

    with local_instance(Settings.from_env()) as instance:
        if damage := lake_damage(instance, PipelineResource()):
            print(f"DAMAGED: repair stopped before changing the index\n{damage_report(damage)}")
            return 2
        pipeline = PipelineResource()
        specs = [pipeline.spec(args.model)] if args.model else pipeline.active_models()
        try:
            reports = [
                (s.name, repair_index(instance, pipeline, s, force=args.force, dry_run=args.dry_run))
                for s in specs
            ]
        except RepairRefused as exc:
            raise UsageError(str(exc)) from None
    for name, report in reports:
        print(f"model {name}:\n{report.render()}")
    return 0 if all(r.plan or r.after.ok for _, r in reports) else 1


def cmd_restore(args: argparse.Namespace) -> int:
    from embedding_assets.defs.health import restore
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.resources import PipelineResource

    with local_instance(Settings.from_env()) as instance:
        try:
            print(restore(instance, PipelineResource(), args.table, args.version))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from embedding_assets.core.lake import Lake
    from embedding_assets.refine.report import load_reports

    reports = load_reports(Lake(Settings.from_env().lake_uri), args.batch, args.source)
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in reports], indent=2, sort_keys=True))
    elif not reports:
        print("no quality reports: has `embedding-assets sync` run (for this batch)?")
    else:
        print("\n\n".join(r.markdown() for r in reports))
    blocked = [f"{r.source}/{r.batch}" for r in reports if r.blocked]
    if blocked and not args.json:
        print(f"\nblocked: {', '.join(blocked)}")
    return 1 if blocked else 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("sync", help="register new landing batches and run every batch that changed")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the batches, assets and chunks a sync would process, with an estimate; change nothing",
    )
    p.add_argument(
        "--force", action="store_true", help="rebuild every partition of every batch (run tag ea/force)"
    )
    p.add_argument(
        "--retry-dead-letters",
        action="store_true",
        help="also re-run embeddings for batches with dead-lettered chunks (only those chunks are re-tried)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (default 1)")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("register", help="register the landing zone's batches as partitions (for CI)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_register)
    p = sub.add_parser("repair", help="make the index equal gold's live chunks (missing, extra, stale rows)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what it would write and delete; change nothing"
    )
    p.add_argument("--force", action="store_true", help="delete even more than 5%% of the index")
    p.add_argument("--model", help="only this model's index (default: every active model's)")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("restore", help="recover a damaged lake table from its last intact version")
    p.add_argument("table", help="the lake table, as sync names it (e.g. gold/documents)")
    p.add_argument("--version", type=int, help="this version instead of the last intact one")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser(
        "quality", help="the per-batch quality report: rows, quarantine by rule, outliers, drift"
    )
    p.add_argument("--batch", help="only this batch (default: every batch)")
    p.add_argument("--source", help="only this source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_quality)
