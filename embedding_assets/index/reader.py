"""Reads of a model's chunk table: vector, full-text and hybrid search, past versions included."""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import polars as pl

from embedding_assets.index.filters import search_filter
from embedding_assets.index.table import ANN_DEFAULTS, AnnSettings, ChunkTable, quote

SearchMode = Literal["vector", "fts", "hybrid"]
HIT_COLUMNS = ["chunk_id", "doc_id", "source", "title", "text", "batch", "metadata"]
BASE_COLUMNS = {"chunk_index", "chunk_hash", "updated_at"}  # in every row, not shown in hits


def _score(row: dict[str, Any]) -> float:
    """Fused rank score (hybrid), BM25 (fts) or cosine similarity (vector)."""
    if "_relevance_score" in row:
        return float(row["_relevance_score"])
    if "_score" in row:
        return float(row["_score"])
    return 1.0 - float(row.get("_distance", 1.0))


class IndexReader:
    def __init__(self, table: ChunkTable, ann: AnnSettings = ANN_DEFAULTS) -> None:
        self.table = table
        self.ann = ann

    def has_ann_index(self) -> bool:
        return self.table.exists() and any(
            idx.columns == ["vector"] for idx in self.table.open().list_indices()
        )

    def batch_fingerprint(self, batch: str) -> pl.DataFrame:
        """``chunk_id`` and ``chunk_hash`` of the rows the batch holds in the index."""
        return self.table.read(["chunk_id", "chunk_hash"], f"batch = {quote(batch)}").sort("chunk_id")

    def _builder(self, table: Any, query: str, query_vector: np.ndarray | None, mode: SearchMode) -> Any:
        if mode == "fts":
            return table.search(query, query_type="fts")
        if mode == "vector":
            return self.ann.apply(
                table.search(query_vector, vector_column_name="vector").distance_type("cosine")
            )
        hybrid = table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
        return self.ann.apply(hybrid.vector(query_vector).text(query))

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
        if not self.table.exists():
            return []
        table = self.table.open()
        if version is not None:
            table.checkout(version)
        names = [n for n in table.schema.names if n != "vector"]
        sql = search_filter(source, where, names)
        columns = HIT_COLUMNS + [n for n in names if n not in HIT_COLUMNS and n not in BASE_COLUMNS]
        started = time.perf_counter()
        builder = self._builder(table, query, query_vector, mode)
        if sql:
            builder = builder.where(sql, prefilter=True)
        rows = builder.select(columns).limit(k).to_list()
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            {**{c: row[c] for c in columns}, "score": round(_score(row), 6), "latency_ms": elapsed_ms}
            for row in rows
        ]
