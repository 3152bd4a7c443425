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
        summary = sync(instance, PipelineResource(), options=options)
    print(summary.render())
    print(f"sync finished in {time.perf_counter() - started:.1f}s: {'ok' if summary.ok else 'FAILED'}")
    return 0 if summary.ok else 1


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
    from embedding_assets.defs.instance import local_instance
    from embedding_assets.defs.repair import repair_index
    from embedding_assets.defs.resources import PipelineResource

    with local_instance(Settings.from_env()) as instance:
        report = repair_index(instance, PipelineResource())
    print(report.render())
    return 0 if report.after.ok else 1


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


def run_search(
    settings: Settings,
    queries: list[str],
    k: int,
    mode: str,
    source: str | None,
    index_version: int | None = None,
    where: str | None = None,
) -> list[dict[str, Any]]:
    from embedding_assets.contracts.load import load_contracts
    from embedding_assets.contracts.model import metadata_fields
    from embedding_assets.embed.embedder import build_embedder
    from embedding_assets.index.reader import IndexReader
    from embedding_assets.index.table import ChunkTable

    embedder = build_embedder(settings.embedder, settings.model, settings.device, settings.batch_size)
    table = ChunkTable(
        settings.lancedb_uri,
        embedder.model_id,
        embedder.dimension,
        metadata_fields(load_contracts(settings.contracts_dir)),
    )
    store = IndexReader(table)
    vectors = embedder.encode(queries) if mode != "fts" else [None] * len(queries)
    return [
        {
            "query": q,
            "hits": store.search(
                q,
                v,
                k=k,
                mode=mode,  # type: ignore[arg-type]
                source=source,
                version=index_version,
                where=where,
            ),
        }
        for q, v in zip(queries, vectors, strict=True)
    ]


def cmd_search(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.queries_file:
        queries = [q.strip() for q in Path(args.queries_file).read_text().splitlines() if q.strip()]
    elif args.query:
        queries = [args.query]
    else:
        print("give a query or --queries-file", file=sys.stderr)
        return 2
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
            print("  no hits: has `embedding-assets sync` run?")
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
    p.set_defaults(func=cmd_repair)


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
    p.add_argument("-k", type=int, default=10)
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
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
