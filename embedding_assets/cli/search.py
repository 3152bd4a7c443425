"""``embedding-assets search``: the serving model's index (or a named model's), one version of it
per search, with each hit's lineage on request."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedding_assets.cli.common import UsageError
from embedding_assets.config import Settings
from embedding_assets.core.services import check_settings_storage
from embedding_assets.index.fusion import DEFAULT_MODE

MAX_K = 1000


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k must be a whole number, not {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be between 1 and {MAX_K}, not {k}")
    return k


def check_search(snap: Any, table: Any, source: str | None, index_version: int | None) -> None:
    """The search's arguments against the index: :class:`UsageError` names what is wrong."""
    if snap is None:
        raise UsageError("the index is empty: run `embedding-assets sync` first")
    if source is not None:
        known = sorted(set(table.read(["source"])["source"].drop_nulls().to_list()))
        if source not in known:
            raise UsageError(f"unknown source {source!r}; the index holds: {', '.join(known) or 'none'}")


@dataclass(frozen=True)
class Searcher:
    """A model's embedder and one version of its table: what a search reads."""

    model: Any  # ModelSpec
    reader: Any  # IndexReader
    snap: Any  # Snapshot
    embedder: Any | None  # None for full-text only


def open_searcher(settings: Settings, model: str | None, index_version: int | None, mode: str) -> Searcher:
    """Read the registry once (the serving alias, unless ``model`` names another) and open that
    model's table once: a promote that lands meanwhile changes the next search, never this one."""
    from embedding_assets.core.lake import Lake
    from embedding_assets.embed.embedder import embedder_for
    from embedding_assets.embed.registry import Registry
    from embedding_assets.index.reader import IndexReader
    from embedding_assets.index.table import ChunkTable

    state = Registry(Lake(settings.lake_uri)).read()
    if model is None and state.serving is None:
        raise UsageError("the index is empty: run `embedding-assets sync` first")
    spec = state.get(model).spec if model else state.serving.spec  # type: ignore[union-attr]
    reader = IndexReader(ChunkTable(settings.lancedb_uri, spec.name, spec.dimension))
    if index_version is not None:
        latest = reader.table.version()
        if not 1 <= index_version <= latest:
            raise UsageError(
                f"--index-version must be between 1 and {latest} (the latest), not {index_version}"
            )
    snap = reader.snapshot(index_version)
    embedder = None if mode == "fts" else embedder_for(spec, settings.device, settings.batch_size)
    return Searcher(spec, reader, snap, embedder)


def run_search(
    settings: Settings,
    queries: list[str],
    k: int,
    mode: str,
    source: str | None,
    index_version: int | None = None,
    where: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """One result per query: the model and index version it read, and its hits."""
    from embedding_assets.index.filters import FilterError, search_filter

    found = open_searcher(settings, model, index_version, mode)
    check_search(found.snap, found.reader.table, source, index_version)
    try:
        sql = search_filter(source, where, [n for n in found.snap.table.schema.names if n != "vector"])
    except FilterError as exc:
        raise UsageError(str(exc)) from None
    vectors = found.embedder.encode(queries) if found.embedder is not None else [None] * len(queries)
    head = {
        "model": found.model.name,
        "model_id": found.model.model_id,
        "index_version": found.snap.version,
        "mode": mode,
    }
    try:
        return [
            {"query": q, **head, "hits": found.reader.search_snapshot(found.snap, q, v, k, mode, sql)}  # type: ignore[arg-type]
            for q, v in zip(queries, vectors, strict=True)
        ]
    except (ValueError, RuntimeError, OSError) as exc:
        if where is None:
            raise
        raise UsageError(f"--where {where!r} cannot be applied: {str(exc).splitlines()[0][:300]}") from None


HIT_KEYS = ("doc_id", "chunk_id", "source", "score", "text")


def cmd_search(args: argparse.Namespace) -> int:
    settings = check_settings_storage(Settings.from_env())
    if args.queries_file:
        queries = [q.strip() for q in Path(args.queries_file).read_text().splitlines() if q.strip()]
    elif args.query:
        queries = [args.query]
    else:
        raise UsageError("give a query or --queries-file")
    results = run_search(
        settings, queries, args.k, args.mode, args.source, args.index_version, args.where, args.model
    )
    if args.explain:
        from embedding_assets.defs.explain import explain_hits

        for result in results:
            explain_hits(settings, result["hits"])
    for result in results:
        if args.json:
            keys = (*HIT_KEYS, "lineage") if args.explain else HIT_KEYS
            hits = [{k: h[k] for k in keys} for h in result["hits"]]
            print(
                json.dumps(
                    {**{k: v for k, v in result.items() if k != "hits"}, "hits": hits},
                    ensure_ascii=False,
                    default=str,
                )
            )
            continue
        print(
            f"query: {result['query']}  ({args.mode}, k={args.k}; model {result['model']}, index version {result['index_version']})"
        )
        if not result["hits"]:
            print("  no hits")
        for rank, hit in enumerate(result["hits"], start=1):
            text = " ".join(hit["text"].split())
            print(f"{rank:>3}. {hit['score']:.4f}  {hit['source']:<9} {hit['chunk_id']}")
            print(f"     {text[:160]}{'…' if len(text) > 160 else ''}")
            if args.explain:
                print(f"     why: {render_lineage(hit['lineage'])}")
    return 0


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
    p.set_defaults(func=cmd_search)
