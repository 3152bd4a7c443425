"""The LanceDB chunk index: one table per model, newer-wins upserts, deletions, ANN + FTS, search."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import lancedb
import numpy as np
import polars as pl
import pyarrow as pa

from embedding_assets.lib.embedder import model_slug

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SearchMode = Literal["vector", "fts", "hybrid"]
INDEX_COLUMNS = [
    "chunk_id",
    "doc_id",
    "source",
    "batch",
    "chunk_index",
    "title",
    "text",
    "chunk_hash",
    "updated_at",
    "metadata",
]


def _in_list(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def _chunked(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


@dataclass(frozen=True)
class ApplyResult:
    docs_written: int
    docs_skipped_older: int
    docs_deleted: int
    chunks_upserted: int
    chunks_deleted: int
    table_version: int


@dataclass(frozen=True)
class Reconciliation:
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]
    stale: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.stale)


class VectorStore:
    def __init__(self, uri: str, model_id: str, dimension: int, ann_min_rows: int = 5000) -> None:
        self.uri = uri
        self.model_id = model_id
        self.dimension = dimension
        self.ann_min_rows = ann_min_rows
        self.table_name = f"chunks__{model_slug(model_id)}"
        self._db = lancedb.connect(uri)

    # ------------------------------------------------------------------ schema and table

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                pa.field("chunk_id", pa.string(), nullable=False),
                pa.field("doc_id", pa.string()),
                pa.field("source", pa.string()),
                pa.field("batch", pa.string()),
                pa.field("chunk_index", pa.int32()),
                pa.field("title", pa.string()),
                pa.field("text", pa.string()),
                pa.field("chunk_hash", pa.string()),
                pa.field("updated_at", pa.timestamp("us", tz="UTC")),
                pa.field("metadata", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), self.dimension)),
            ]
        )

    def exists(self) -> bool:
        return self.table_name in self._db.list_tables().tables

    def table(self) -> Any:
        if not self.exists():
            try:
                return self._db.create_table(self.table_name, schema=self.schema())
            except ValueError:  # created by a concurrent writer in between
                pass
        return self._db.open_table(self.table_name)

    def to_arrow_rows(self, chunks: pl.DataFrame) -> pa.Table:
        frame = chunks.with_columns(pl.col("updated_at").fill_null(EPOCH)).select([*INDEX_COLUMNS, "vector"])
        vectors = np.asarray(frame["vector"].to_list(), dtype=np.float32).reshape(-1, self.dimension)
        columns = {c: frame[c].to_arrow() for c in INDEX_COLUMNS}
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dimension)
        return pa.table(columns).cast(self.schema())

    def read(self, columns: list[str], where: str | None = None) -> pl.DataFrame:
        if not self.exists():
            return pl.DataFrame(schema={c: pl.String for c in columns})
        table = self.table()
        dataset = table.to_lance()
        return pl.from_arrow(dataset.to_table(columns=columns, filter=where))  # type: ignore[return-value]

    # ------------------------------------------------------------------ writes

    def current_versions(self, doc_ids: list[str]) -> dict[str, tuple[datetime, str]]:
        """For each doc already indexed: the (updated_at, batch) of its indexed version."""
        found: dict[str, tuple[datetime, str]] = {}
        if not doc_ids or not self.exists():
            return found
        for part in _chunked(doc_ids):
            rows = self.read(["doc_id", "updated_at", "batch"], _in_list("doc_id", part))
            for doc_id, updated_at, batch in rows.iter_rows():
                key = (updated_at, batch)
                if doc_id not in found or key > found[doc_id]:
                    found[doc_id] = key
        return found

    def apply_batch(self, chunks: pl.DataFrame, documents: pl.DataFrame) -> ApplyResult:
        """Upsert one batch: for each document whose version is newer than (or equal to) the indexed
        one, replace its chunks; delete chunks of deleted documents and chunks beyond the new count.
        Older versions (out-of-order backfills) are skipped and never overwrite newer content.
        """
        table = self.table()
        docs = documents.with_columns(pl.col("updated_at").fill_null(EPOCH))
        existing = self.current_versions(docs["doc_id"].to_list())
        winners = (
            docs.filter(
                pl.struct("doc_id", "updated_at", "batch").map_elements(
                    lambda d: (
                        d["doc_id"] not in existing or (d["updated_at"], d["batch"]) >= existing[d["doc_id"]]
                    ),
                    return_dtype=pl.Boolean,
                )
            )
            if docs.height
            else docs
        )
        counts = chunks.group_by("doc_id").agg(pl.len().cast(pl.Int32).alias("n"))
        live = (
            winners.filter(~pl.col("deleted"))
            .join(counts, on="doc_id", how="left")
            .with_columns(pl.col("n").fill_null(0))
        )
        gone = winners.filter(pl.col("deleted"))["doc_id"].to_list()
        deleted_before = table.count_rows()
        for part in _chunked(gone):
            table.delete(_in_list("doc_id", part))
        for (n,), group in live.group_by("n"):
            for part in _chunked(group["doc_id"].to_list()):
                table.delete(f"{_in_list('doc_id', part)} AND chunk_index >= {int(n)}")  # type: ignore[arg-type]
        chunks_deleted = deleted_before - table.count_rows()
        upserts = chunks.join(live.select("doc_id"), on="doc_id", how="semi")
        if upserts.height:
            (
                table.merge_insert("chunk_id")
                .when_matched_update_all(
                    where="target.updated_at < source.updated_at OR "
                    "(target.updated_at = source.updated_at AND target.batch <= source.batch)"
                )
                .when_not_matched_insert_all()
                .execute(self.to_arrow_rows(upserts))
            )
        return ApplyResult(
            docs_written=live.height,
            docs_skipped_older=docs.height - winners.height,
            docs_deleted=len(gone),
            chunks_upserted=upserts.height,
            chunks_deleted=chunks_deleted,
            table_version=int(table.version),
        )

    def ensure_indexes(self) -> list[str]:
        """Full-text index always; an ANN index once the table passes ``ann_min_rows``.

        ``optimize`` folds rows written since the last build into the existing indexes.
        """
        from lancedb.index import FTS, IvfHnswSq

        table = self.table()
        built: list[str] = []
        indexed = {col for idx in table.list_indices() for col in idx.columns}
        rows = table.count_rows()
        if indexed:
            table.optimize()  # fold new rows into the existing indexes, compact small fragments
        if rows and "text" not in indexed:
            table.create_index("text", config=FTS(), replace=True)
            built.append("fts")
        if rows >= self.ann_min_rows and "vector" not in indexed:
            partitions = max(1, int(math.sqrt(rows) / 4))
            table.create_index("vector", config=IvfHnswSq(distance_type="cosine", num_partitions=partitions))
            built.append("ann")
        for name in ("source", "doc_id", "batch"):
            if rows and name not in indexed:
                table.create_scalar_index(name, replace=True)
        return built

    def has_ann_index(self) -> bool:
        return self.exists() and any(idx.columns == ["vector"] for idx in self.table().list_indices())

    # ------------------------------------------------------------------ reads

    def batch_fingerprint(self, batch: str) -> pl.DataFrame:
        return self.read(["chunk_id", "chunk_hash"], f"batch = '{batch}'").sort("chunk_id")

    def reconcile(self, expected: pl.DataFrame) -> Reconciliation:
        """Compare the index with the chunks that should be live: ids and chunk hashes."""
        actual = (
            self.read(["chunk_id", "chunk_hash"])
            if self.exists()
            else pl.DataFrame(schema={"chunk_id": pl.String, "chunk_hash": pl.String})
        )
        exp = expected.select("chunk_id", "chunk_hash")
        joined = exp.join(actual, on="chunk_id", how="full", suffix="_actual", coalesce=True)
        missing = joined.filter(pl.col("chunk_hash_actual").is_null())["chunk_id"].to_list()
        extra = joined.filter(pl.col("chunk_hash").is_null())["chunk_id"].to_list()
        stale = joined.filter(
            pl.col("chunk_hash").is_not_null()
            & pl.col("chunk_hash_actual").is_not_null()
            & (pl.col("chunk_hash") != pl.col("chunk_hash_actual"))
        )["chunk_id"].to_list()
        return Reconciliation(exp.height, actual.height, sorted(missing), sorted(extra), sorted(stale))

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        k: int = 10,
        mode: SearchMode = "hybrid",
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        table = self.table()
        where = f"source = '{source.replace(chr(39), chr(39) * 2)}'" if source else None
        columns = ["chunk_id", "doc_id", "source", "title", "text", "batch", "metadata"]
        started = time.perf_counter()
        if mode == "fts":
            builder = table.search(query, query_type="fts")
        elif mode == "vector":
            builder = table.search(query_vector, vector_column_name="vector").distance_type("cosine")
        else:
            builder = (
                table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
                .vector(query_vector)
                .text(query)
            )
        if where:
            builder = builder.where(where, prefilter=True)
        rows = builder.select(columns).limit(k).to_list()
        elapsed_ms = (time.perf_counter() - started) * 1000
        hits = []
        for row in rows:
            if "_relevance_score" in row:
                score = float(row["_relevance_score"])
            elif "_score" in row:
                score = float(row["_score"])
            else:
                score = 1.0 - float(row.get("_distance", 1.0))
            hits.append({**{c: row[c] for c in columns}, "score": round(score, 6), "latency_ms": elapsed_ms})
        return hits
