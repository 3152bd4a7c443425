"""One search: the serving model's table (or a named model's), opened at one version, and the
model that embeds the queries. The CLI opens one per command; ``serve`` keeps one warm
(:mod:`embedding_assets.index.service`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from embedding_assets.config import Settings

MAX_K = 1000


class SearchRefused(ValueError):
    """A search that cannot run as asked (an unknown source, a bad filter, an empty index): the
    message says why. The CLI exits 2 with it, ``serve`` answers 422 (503 for an empty index)."""


class IndexEmpty(SearchRefused):
    pass


@dataclass
class Searcher:
    """A model's embedder and one version of its table: what a search reads."""

    model: Any  # ModelSpec
    reader: Any  # IndexReader
    snap: Any  # Snapshot
    embedder: Any | None  # None for full-text only

    @cached_property
    def sources(self) -> list[str]:
        """The sources this version of the table holds (read once per searcher)."""
        column = self.snap.table.to_lance().to_table(columns=["source"]).column("source")
        return sorted(set(column.drop_null().unique().to_pylist()))

    def check(self, source: str | None, where: str | None) -> str | None:
        """The SQL filter of ``source`` and ``where``; :class:`SearchRefused` names what is wrong."""
        from embedding_assets.index.filters import FilterError, search_filter

        if source is not None and source not in self.sources:
            raise SearchRefused(
                f"unknown source {source!r}; the index holds: {', '.join(self.sources) or 'none'}"
            )
        try:
            return search_filter(source, where, [n for n in self.snap.table.schema.names if n != "vector"])
        except FilterError as exc:
            raise SearchRefused(str(exc)) from None

    def search(
        self, queries: list[str], k: int, mode: str, source: str | None = None, where: str | None = None
    ) -> list[dict[str, Any]]:
        """One result per query: the model and index version it read, and its hits."""
        sql = self.check(source, where)
        if mode != "fts" and self.embedder is None:
            raise SearchRefused(f"--mode {mode} needs the model, and this searcher was opened for fts only")
        vectors = self.embedder.encode(queries) if mode != "fts" else [None] * len(queries)  # type: ignore[union-attr]
        head = {
            "model": self.model.name,
            "model_id": self.model.model_id,
            "index_version": self.snap.version,
            "mode": mode,
        }
        try:
            return [
                {"query": q, **head, "hits": self.reader.search_snapshot(self.snap, q, v, k, mode, sql)}
                for q, v in zip(queries, vectors, strict=True)
            ]
        except (ValueError, RuntimeError, OSError) as exc:
            if where is None:
                raise
            raise SearchRefused(
                f"--where {where!r} cannot be applied: {str(exc).splitlines()[0][:300]}"
            ) from None


def open_searcher(
    settings: Settings, model: str | None, index_version: int | None, mode: str, as_of: datetime | None = None
) -> Searcher:
    """Read the registry once (the serving alias, unless ``model`` names another) and open that
    model's table once: a promote that lands meanwhile changes the next search, never this one.
    ``as_of`` reads both as they were at that moment (the model serving then, its index version
    then). Full-text search (``mode`` fts) loads no model."""
    from embedding_assets.core.lake import Lake
    from embedding_assets.embed.embedder import embedder_for
    from embedding_assets.embed.registry import Registry
    from embedding_assets.index.reader import IndexReader
    from embedding_assets.index.table import ChunkTable

    state = Registry(Lake(settings.lake_uri)).read(_registry_version(settings, as_of, index_version))
    if model is None and state.serving is None:
        raise IndexEmpty("the index is empty: run `embedding-assets sync` first")
    spec = state.get(model).spec if model else state.serving.spec  # type: ignore[union-attr]
    pinned = as_of is not None or index_version is not None
    reader = IndexReader(ChunkTable(settings.lancedb_uri, spec.name, spec.dimension, own_session=pinned))
    snap = reader.snapshot(_index_version(reader.table, spec.name, index_version, as_of))
    if snap is None:
        raise IndexEmpty("the index is empty: run `embedding-assets sync` first")
    embedder = None if mode == "fts" else embedder_for(spec, settings.device, settings.batch_size)
    return Searcher(spec, reader, snap, embedder)


def _registry_version(settings: Settings, as_of: datetime | None, index_version: int | None) -> int | None:
    """The registry's Delta version at ``as_of`` (None: the latest)."""
    if as_of is None:
        return None
    if index_version is not None:
        raise SearchRefused("give --as-of or --index-version, not both")
    from embedding_assets.core.lake import Lake
    from embedding_assets.embed.registry import REGISTRY_TABLE

    lake = Lake(settings.lake_uri)
    if lake.version(REGISTRY_TABLE) is None:
        raise IndexEmpty("the index is empty: run `embedding-assets sync` first")
    version = lake.version_at(REGISTRY_TABLE, as_of)
    if version is None:
        raise IndexEmpty(f"nothing was indexed at {as_of.isoformat()}: the first model was registered later")
    return version


def _index_version(table: Any, name: str, index_version: int | None, as_of: datetime | None) -> int | None:
    """The table version to search: the one asked for, the one current at ``as_of``, or the latest."""
    if as_of is not None:
        version = table.version_at(as_of)
        if version is None:
            raise IndexEmpty(
                f"the index of {name} had no version at {as_of.isoformat()} (not written yet, or its "
                "versions from then were cleaned up by lake_maintenance after EA_MODEL_RETENTION_H)"
            )
        return int(version)
    if index_version is not None:
        latest = table.version()
        if not 1 <= index_version <= latest:
            raise SearchRefused(
                f"--index-version must be between 1 and {latest} (the latest), not {index_version}"
            )
    return index_version


def run_search(
    settings: Settings,
    queries: list[str],
    k: int,
    mode: str,
    source: str | None,
    index_version: int | None = None,
    where: str | None = None,
    model: str | None = None,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """One result per query: the model and index version it read, and its hits."""
    return open_searcher(settings, model, index_version, mode, as_of).search(queries, k, mode, source, where)


HIT_KEYS = ("doc_id", "chunk_id", "source", "score", "text")


def result_json(result: dict[str, Any], explain: bool = False) -> dict[str, Any]:
    """A search result as ``search --json`` prints it (and ``serve`` answers it)."""
    keys = (*HIT_KEYS, "lineage") if explain else HIT_KEYS
    return {
        **{k: v for k, v in result.items() if k != "hits"},
        "hits": [{k: h[k] for k in keys} for h in result["hits"]],
    }
