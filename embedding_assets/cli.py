"""``embedding-assets``: sync the landing zone into the index, and search it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from embedding_assets.config import Settings


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCEDB_LOG", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")


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
    """Register the landing zone's batches as partitions (idempotent), and observe their files."""
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.keys import BATCHES
    from embedding_assets.defs.resources import PipelineResource
    from embedding_assets.defs.sources import landing_events
    from embedding_assets.defs.sync import register
    from embedding_assets.ingest.landing import scan_landing

    settings = Settings.from_env()
    scan = scan_landing(settings.landing_dir, PipelineResource().contracts())
    with local_instance(settings) as instance:
        new = register(instance, scan)
        for event in (e for b in scan.batches for e in landing_events(b, b.content_hash())):
            instance.report_runless_asset_event(event)
        known = instance.get_dynamic_partitions(BATCHES)
    if args.json:
        print(json.dumps({"registered": new, "batches": sorted(known), "refused": list(scan.rejected)}))
    else:
        print("\n".join([f"registered: {', '.join(new) or 'nothing new'}", f"batches: {len(known)}"]))
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
        try:
            report = repair_index(instance, PipelineResource(), force=args.force, dry_run=args.dry_run)
        except RepairRefused as exc:
            raise UsageError(str(exc)) from None
    print(report.render())
    return 0 if report.plan or report.after.ok else 1


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


class UsageError(ValueError):
    """A bad argument: one line on stderr, exit code 2."""


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a whole number, not {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be between 1 and {MAX_K}, not {k}")
    return k


MAX_K = 1000


def check_search(store: Any, source: str | None, index_version: int | None) -> None:
    """The search's arguments against the index: :class:`UsageError` names what is wrong."""
    if not store.table.exists():
        raise UsageError("the index is empty: run `embedding-assets sync` first")
    if source is not None:
        known = sorted(set(store.table.read(["source"])["source"].drop_nulls().to_list()))
        if source not in known:
            raise UsageError(f"unknown source {source!r}; the index holds: {', '.join(known) or 'none'}")
    if index_version is not None:
        latest = store.table.version()
        if not 1 <= index_version <= latest:
            raise UsageError(
                f"--index-version must be between 1 and {latest} (the latest), not {index_version}"
            )


def run_search(
    settings: Settings,
    queries: list[str],
    k: int,
    mode: str,
    source: str | None,
    index_version: int | None = None,
    where: str | None = None,
) -> list[dict[str, Any]]:
    from embedding_assets.embed.embedder import build_embedder
    from embedding_assets.index.filters import FilterError
    from embedding_assets.index.reader import IndexReader
    from embedding_assets.index.table import ChunkTable

    embedder = build_embedder(settings.embedder, settings.model, settings.device, settings.batch_size)
    store = IndexReader(ChunkTable(settings.lancedb_uri, embedder.model_id, embedder.dimension))
    check_search(store, source, index_version)
    vectors = embedder.encode(queries) if mode != "fts" else [None] * len(queries)
    try:
        return [
            {"query": q, "hits": store.search(q, v, k, mode, source, index_version, where)}  # type: ignore[arg-type]
            for q, v in zip(queries, vectors, strict=True)
        ]
    except FilterError as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, RuntimeError, OSError) as exc:
        if where is None:
            raise
        raise UsageError(f"--where {where!r} cannot be applied: {str(exc).splitlines()[0][:300]}") from None


def cmd_search(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.queries_file:
        queries = [q.strip() for q in Path(args.queries_file).read_text().splitlines() if q.strip()]
    elif args.query:
        queries = [args.query]
    else:
        raise UsageError("give a query or --queries-file")
    results = run_search(settings, queries, args.k, args.mode, args.source, args.index_version, args.where)
    for result in results:
        if args.json:
            hits = [
                {k: h[k] for k in ("doc_id", "chunk_id", "source", "score", "text")} for h in result["hits"]
            ]
            print(json.dumps({"query": result["query"], "hits": hits}, ensure_ascii=False))
            continue
        print(f"query: {result['query']}  ({args.mode}, k={args.k})")
        if not result["hits"]:
            print("  no hits")
        for rank, hit in enumerate(result["hits"], start=1):
            text = " ".join(hit["text"].split())
            print(f"{rank:>3}. {hit['score']:.4f}  {hit['source']:<9} {hit['chunk_id']}")
            print(f"     {text[:160]}{'…' if len(text) > 160 else ''}")
    return 0


def _sync_parser(sub: Any) -> None:
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
    p.add_argument(
        "--jobs", type=int, default=1, help="batches run at once, each in its own process (default 1)"
    )
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("register", help="register the landing zone's batches as partitions (for CI)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_register)
    p = sub.add_parser("repair", help="make the index equal gold's live chunks (missing, extra, stale rows)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what it would write and delete; change nothing"
    )
    p.add_argument("--force", action="store_true", help="delete even more than 5%% of the index")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("restore", help="recover a damaged lake table from its last intact version")
    p.add_argument("table", help="the lake table, as sync names it (e.g. gold/documents)")
    p.add_argument("--version", type=int, help="this version instead of the last intact one")
    p.set_defaults(func=cmd_restore)


def _read_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "quality", help="the per-batch quality report: rows, quarantine by rule, outliers, drift"
    )
    p.add_argument("--batch", help="only this batch (default: every batch)")
    p.add_argument("--source", help="only this source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("search", help="search the index")
    p.add_argument("query", nargs="?")
    p.add_argument("-k", type=_k, default=10, help=f"hits per query, 1 to {MAX_K} (default 10)")
    p.add_argument("--mode", choices=["vector", "fts", "hybrid"], default="hybrid")
    p.add_argument("--source")
    p.add_argument("--where", help="SQL filter on any column, e.g. \"priority = 'high'\"")
    p.add_argument("--json", action="store_true")
    p.add_argument("--queries-file")
    p.add_argument(
        "--index-version",
        type=int,
        help="search the index as it was at this LanceDB version (a vector_index run's lancedb_version)",
    )
    p.set_defaults(func=cmd_search)


def main(argv: list[str] | None = None) -> int:
    _quiet()
    parser = argparse.ArgumentParser(prog="embedding-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _sync_parser(sub)
    _read_parsers(sub)
    args = parser.parse_args(argv)
    from embedding_assets.contracts.model import ContractError

    try:
        return int(args.func(args))
    except (UsageError, ContractError) as exc:
        print(f"embedding-assets {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
