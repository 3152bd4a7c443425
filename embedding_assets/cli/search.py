"""``embedding-assets search``: the serving model's index (or a named model's), one version of it
per search, with each hit's lineage on request."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedding_assets.cli.common import UsageError
from embedding_assets.config import Settings
from embedding_assets.core.services import check_settings_storage
from embedding_assets.index.fusion import DEFAULT_MODE
from embedding_assets.index.searcher import MAX_K, result_json, run_search


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a whole number, not {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be between 1 and {MAX_K}, not {k}")
    return k


def _moment(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; a time without one is UTC), as an aware datetime."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--as-of must be an ISO 8601 time such as 2026-11-08T00:00:00Z, not {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def cmd_search(args: argparse.Namespace) -> int:
    settings = check_settings_storage(Settings.from_env())
    if args.queries_file:
        queries = [q.strip() for q in Path(args.queries_file).read_text().splitlines() if q.strip()]
    elif args.query:
        queries = [args.query]
    else:
        raise UsageError("give a query or --queries-file")
    results = run_search(
        settings,
        queries,
        args.k,
        args.mode,
        args.source,
        args.index_version,
        args.where,
        args.model,
        args.as_of,
    )
    if args.explain:
        from embedding_assets.defs.explain import explain_hits

        for result in results:
            explain_hits(settings, result["hits"])
    for result in results:
        if args.json:
            print(json.dumps(result_json(result, args.explain), ensure_ascii=False, default=str))
            continue
        print(_heading(result, args))
        if not result["hits"]:
            print("  no hits")
        for rank, hit in enumerate(result["hits"], start=1):
            text = " ".join(hit["text"].split())
            print(f"{rank:>3}. {hit['score']:.4f}  {hit['source']:<9} {hit['chunk_id']}")
            print(f"     {text[:160]}{'…' if len(text) > 160 else ''}")
            if args.explain:
                print(f"     why: {render_lineage(hit['lineage'])}")
    return 0


def _heading(result: dict[str, Any], args: argparse.Namespace) -> str:
    when = f", as of {args.as_of.isoformat()}" if args.as_of else ""
    return (
        f"query: {result['query']}  ({args.mode}, k={args.k}; model {result['model']}, "
        f"index version {result['index_version']}{when})"
    )


def render_lineage(lineage: dict[str, Any]) -> str:
    shown = [f"{lineage.get('landing_file')}:{lineage.get('landing_line')}", f"batch {lineage.get('batch')}"]
    shown += [
        f"{t} v{lineage.get(t + '_version')}" for t in ("bronze", "silver", "gold_documents", "gold_chunks")
    ]
    shown += [f"model {lineage.get('model')}", f"embedded {lineage.get('embedded_at')}"]
    return ", ".join(shown)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("search", help="search the index of the serving model")
    p.add_argument("query", nargs="?")
    p.add_argument("-k", type=_k, default=10, help=f"hits per query, 1 to {MAX_K} (default 10)")
    p.add_argument("--mode", choices=["vector", "fts", "hybrid"], default=DEFAULT_MODE)
    p.add_argument("--source")
    p.add_argument("--where", help="SQL filter on any column, e.g. \"priority = 'high'\"")
    p.add_argument("--json", action="store_true")
    p.add_argument("--queries-file")
    p.add_argument("--model", help="search this registered model's index instead of the serving one")
    p.add_argument(
        "--explain",
        action="store_true",
        help="each hit's lineage: landing file and line, batch, table versions, model",
    )
    p.add_argument(
        "--index-version",
        type=int,
        help="search the index as it was at this LanceDB version (a vector_index run's lancedb_version)",
    )
    p.add_argument(
        "--as-of",
        type=_moment,
        help="search as of this time (ISO 8601, e.g. 2026-11-08T00:00:00Z): the model serving then, "
        "its index as it was then",
    )
    p.set_defaults(func=cmd_search)
