"""Reads of a model's chunk table: vector, full-text and hybrid search, past versions included.

A search reads one version of one table: the table is opened once and every query of the search
runs against that version, which the result reports (``index_version``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from embedding_assets.index.filters import search_filter
from embedding_assets.index.fusion import DEFAULT_MODE, FUSION_DEFAULTS, Fusion, SearchMode
from embedding_assets.index.table import ANN_DEFAULTS, FTS_COLUMNS, AnnSettings, ChunkTable, quote

MODES: tuple[SearchMode, ...] = ("vector", "fts", "hybrid")
__all__ = ["DEFAULT_MODE", "MODES", "IndexReader", "SearchMode", "Snapshot"]
HIT_COLUMNS = ["chunk_id", "doc_id", "source", "title", "text", "batch", "metadata"]
LINEAGE_COLUMNS = ["model", "embedded_at", "gold_version"]
BASE_COLUMNS = {"chunk_index", "chunk_hash", "updated_at", *LINEAGE_COLUMNS}  # in every row, not shown


def _score(row: dict[str, Any]) -> float:
    """BM25 (fts) or cosine similarity (vector)."""
    if "_score" in row:
        return float(row["_score"])
    return 1.0 - float(row.get("_distance", 1.0))


@dataclass
class Snapshot:
    """One version of the table, open for the queries of one search."""

    table: Any
    version: int
    columns: list[str]  # what a hit shows
    lineage: list[str]  # the lineage columns this table has


class IndexReader:
    def __init__(
        self, table: ChunkTable, ann: AnnSettings = ANN_DEFAULTS, fusion: Fusion = FUSION_DEFAULTS
    ) -> None:
        self.table = table
        self.ann = ann
        self.fusion = fusion

    def has_ann_index(self) -> bool:
        return self.table.exists() and any(
            idx.columns == ["vector"] for idx in self.table.open().list_indices()
        )

    def batch_fingerprint(self, batch: str) -> pl.DataFrame:
        """``chunk_id`` and ``chunk_hash`` of the rows the batch holds in the index."""
        return self.table.read(["chunk_id", "chunk_hash"], f"batch = {quote(batch)}").sort("chunk_id")

    def snapshot(self, version: int | None = None) -> Snapshot | None:
        """The table at ``version`` (default: the latest), or None when it does not exist."""
        if not self.table.exists():
            return None
        table = self.table.open()
        if version is not None:
            table.checkout(version)
        names = [n for n in table.schema.names if n != "vector"]
        shown = HIT_COLUMNS + [n for n in names if n not in HIT_COLUMNS and n not in BASE_COLUMNS]
        return Snapshot(table, int(table.version), shown, [c for c in LINEAGE_COLUMNS if c in names])

    def _query(
        self, snap: Snapshot, mode: str, query: str, vector: np.ndarray | None, sql: str | None, limit: int
    ) -> list[dict[str, Any]]:
        if mode == "fts":
            fts = [c for c in FTS_COLUMNS if c in snap.table.schema.names]
            builder = snap.table.search(query, query_type="fts", fts_columns=fts)
        else:
            builder = self.ann.apply(
                snap.table.search(vector, vector_column_name="vector").distance_type("cosine")
            )
        if sql:
            builder = builder.where(sql, prefilter=True)
        return builder.select(snap.columns + snap.lineage).limit(limit).to_list()  # type: ignore[no-any-return]

    def search_snapshot(
        self, snap: Snapshot, query: str, vector: np.ndarray | None, k: int, mode: SearchMode, sql: str | None
    ) -> list[dict[str, Any]]:
        """Top ``k`` chunks of one query on one snapshot. Hybrid fuses the two rankings (see
        :class:`Fusion`); its score is the fused score."""
        started = time.perf_counter()
        if mode != "hybrid":
            rows = self._query(snap, mode, query, vector, sql, k)
            scored = [(row, _score(row)) for row in rows]
        else:
            depth = max(k, self.fusion.depth)
            by_id: dict[str, dict[str, Any]] = {}
            ranked = []
            for side in ("vector", "fts"):
                rows = self._query(snap, side, query, vector, sql, depth)
                by_id.update({r["chunk_id"]: r for r in rows if r["chunk_id"] not in by_id})
                ranked.append([r["chunk_id"] for r in rows])
            scored = [(by_id[c], s) for c, s in self.fusion.fuse(ranked[0], ranked[1])[:k]]
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            {
                **{c: row.get(c) for c in snap.columns + snap.lineage},
                "score": round(score, 6),
                "latency_ms": elapsed_ms,
            }
            for row, score in scored
        ]

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        k: int = 10,
        mode: SearchMode = "hybrid",
        source: str | None = None,
        version: int | None = None,
        where: str | None = None,
    ) -> list[dict[str, Any]]:
        """Top ``k`` chunks; ``version`` searches the table as it was at that LanceDB version
        (the ``lancedb_version`` a past ``vector_index`` materialisation recorded). ``where`` is a
        SQL filter on any column, metadata columns included (``priority = 'high'``)."""
        snap = self.snapshot(version)
        if snap is None:
            return []
        sql = search_filter(source, where, [n for n in snap.table.schema.names if n != "vector"])
        return self.search_snapshot(snap, query, query_vector, k, mode, sql)
