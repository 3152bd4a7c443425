"""The LanceDB chunk index: one table per model, newer-wins upserts, deletions, ANN + FTS, search."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import lancedb
import numpy as np
import polars as pl
import pyarrow as pa

from embedding_assets.lib.contracts import MetadataField
from embedding_assets.lib.embedder import model_slug
from embedding_assets.lib.embedding import vector_matrix
from embedding_assets.lib.faults import fault_point
from embedding_assets.lib.retry import Backoff, retry
from embedding_assets.lib.transforms import with_metadata_columns

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


ARROW_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class AnnSettings:
    """How the ANN index is built and searched, chosen by ``make bench`` (section 4: 1M x 384
    clustered vectors, 2 cores): the best recall@10 with p99 under 10 ms was IVF_HNSW_SQ with 4,096
    rows per IVF partition, 5 probes and ef 100 (0.989; p50 6.2 ms, p99 8.4 ms). Larger partitions
    (16,384 rows) lost recall at every latency; IVF_PQ needs a refine step to pass 0.95, which
    puts its p99 over 10 ms. See ``bench/FINDINGS.md``."""

    rows_per_partition: int = 4096  # IVF partitions = rows / this, at least 1
    nprobes: int = 5
    ef: int | None = 100  # HNSW candidate list per partition (None: LanceDB chooses)
    refine_factor: int | None = None  # re-rank k * this candidates with full vectors

    def apply(self, builder: Any) -> Any:
        """The search settings on a vector or hybrid query builder (ignored without an ANN index)."""
        builder = builder.nprobes(self.nprobes)
        if self.ef is not None:
            builder = builder.ef(self.ef)
        if self.refine_factor is not None:
            builder = builder.refine_factor(self.refine_factor)
        return builder

    def partitions(self, rows: int) -> int:
        return max(1, rows // self.rows_per_partition)

    def index_config(self, rows: int) -> Any:
        from lancedb.index import IvfHnswSq

        return IvfHnswSq(distance_type="cosine", num_partitions=self.partitions(rows))


ANN_DEFAULTS = AnnSettings()


def _in_list(column: str, values: list[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def _chunked(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _is_conflict(error: Exception) -> bool:
    text = str(error).lower()
    return "conflict" in text or "retryable" in text or "concurrent" in text


COMMIT_BACKOFF = Backoff(attempts=8, base_s=0.05, max_s=2.0)


def _commit(fn: Any) -> Any:
    """Run one LanceDB write, retrying commit conflicts with another writer (backoff + jitter)."""

    def once() -> Any:
        try:
            return fn()
        except Exception as error:
            if _is_conflict(error):
                raise _Conflict(str(error)) from error
            raise

    return retry(once, COMMIT_BACKOFF, retry_on=(_Conflict,))[0]


class _Conflict(RuntimeError):
    pass


@dataclass(frozen=True)
class ApplyResult:
    docs_written: int
    docs_skipped_older: int
    docs_unchanged: int  # already indexed exactly as given: nothing rewritten
    docs_deleted: int
    chunks_upserted: int
    chunks_deleted: int
    table_version: int


@dataclass(frozen=True)
class ExpectedIndex:
    """The chunks the index should hold (``chunk_id``, ``chunk_hash`` at least), and how many live
    chunks are knowingly absent because they are in the dead-letter table."""

    live: pl.DataFrame
    dead_lettered: int = 0


@dataclass(frozen=True)
class Reconciliation:
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]
    stale: list[str]
    dead_lettered: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.stale)

    def metadata(self) -> dict[str, int | str]:
        return {
            "expected": self.expected,
            "actual": self.actual,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "stale": len(self.stale),
            "dead_lettered": self.dead_lettered,
            "examples": ", ".join((self.missing + self.extra + self.stale)[:10]) or "none",
        }

    def render(self) -> str:
        return (
            f"{'ok' if self.ok else 'DRIFT'} (expected {self.expected}, actual {self.actual}, "
            f"missing {len(self.missing)}, extra {len(self.extra)}, stale {len(self.stale)}, "
            f"dead-lettered {self.dead_lettered})"
        )


@dataclass(frozen=True)
class RepairResult:
    before: Reconciliation
    upserted: int
    deleted: int
    table_version: int


# The columns that make an indexed chunk row what it is (the vector follows from chunk_hash).
_SAME_ROW = [
    "doc_id",
    "chunk_id",
    "source",
    "batch",
    "chunk_index",
    "title",
    "chunk_hash",
    "updated_at",
    "metadata",
]


_SAME_ROW_SCHEMA = pl.Schema(
    {
        **{c: pl.String() for c in _SAME_ROW},
        "chunk_index": pl.Int32(),
        "updated_at": pl.Datetime("us", "UTC"),
    }
)


def _doc_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Per document, its chunk rows over :data:`_SAME_ROW` as one sorted list of strings."""
    row = pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in _SAME_ROW], separator="\x1f")
    return frame.group_by("doc_id").agg(row.sort().alias("rows"))


class VectorStore:
    def __init__(
        self,
        uri: str,
        model_id: str,
        dimension: int,
        ann_min_rows: int = 5000,
        metadata: Mapping[str, MetadataField] | None = None,
        ann: AnnSettings = ANN_DEFAULTS,
        refresh_share: float = 0.05,
    ) -> None:
        self.uri = uri
        self.ann = ann
        self.refresh_share = refresh_share  # see ensure_indexes
        self.model_id = model_id
        self.dimension = dimension
        self.ann_min_rows = ann_min_rows
        self.metadata = dict(metadata or {})  # typed metadata columns, filterable in search
        self.table_name = f"chunks__{model_slug(model_id)}"
        self._db = lancedb.connect(uri)
        self._columns_checked = False
        self.backfilled: list[str] = []

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
                *(pa.field(f.name, ARROW_TYPES[f.type]) for f in self.metadata.values()),
            ]
        )

    def ensure_metadata_columns(self, table: Any) -> list[str]:
        """Schema drift: a metadata field added to a contract becomes a column of the existing
        table, backfilled with the field's default, with no re-embedding. Idempotent: a crash
        between adding and backfilling is finished by the next call."""
        have = set(table.schema.names)
        added = [f.name for f in self.metadata.values() if f.name not in have]
        if added:
            _commit(
                lambda: table.add_columns([pa.field(n, ARROW_TYPES[self.metadata[n].type]) for n in added])
            )
        for f in self.metadata.values():
            if f.default is not None and table.count_rows(f"{f.name} IS NULL"):
                _commit(lambda f=f: table.update(where=f"{f.name} IS NULL", values={f.name: f.default}))
        return added

    def version(self) -> int:
        return int(self.table().version) if self.exists() else 0

    def exists(self) -> bool:
        return self.table_name in self._db.list_tables().tables

    def table(self) -> Any:
        if not self.exists():
            try:
                return self._db.create_table(self.table_name, schema=self.schema())
            except ValueError:  # created by a concurrent writer in between
                pass
        return self._db.open_table(self.table_name)

    def writable_table(self) -> Any:
        """The table, with its metadata columns brought up to the contracts' (writes only)."""
        table = self.table()
        if not self._columns_checked:
            self.backfilled = self.ensure_metadata_columns(table)
            self._columns_checked = True
        return table

    def to_arrow_rows(self, chunks: pl.DataFrame) -> pa.Table:
        frame = with_metadata_columns(
            chunks.with_columns(pl.col("updated_at").fill_null(EPOCH)), self.metadata
        )
        vectors = vector_matrix(frame["vector"], self.dimension)
        schema = self.table().schema if self.exists() else self.schema()
        columns = {
            f.name: frame[f.name].to_arrow() if f.name in frame.columns else pa.nulls(frame.height, f.type)
            for f in schema
            if f.name != "vector"
        }
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dimension)
        return pa.table({f.name: columns[f.name] for f in schema}).cast(schema)

    def read(self, columns: list[str], where: str | None = None) -> pl.DataFrame:
        if not self.exists():
            return pl.DataFrame(schema={c: pl.String for c in columns})
        table = self.table()
        dataset = table.to_lance()
        return pl.from_arrow(dataset.to_table(columns=columns, filter=where))  # type: ignore[return-value]

    # ------------------------------------------------------------------ writes

    def indexed_rows(self, doc_ids: list[str]) -> pl.DataFrame:
        """The index's chunk rows of these documents, over :data:`_SAME_ROW`."""
        if not doc_ids or not self.exists():
            return pl.DataFrame(schema=_SAME_ROW_SCHEMA)
        parts = [self.read(_SAME_ROW, _in_list("doc_id", part)) for part in _chunked(doc_ids)]
        return pl.concat(parts, how="vertical_relaxed")

    @staticmethod
    def current_versions(indexed: pl.DataFrame) -> dict[str, tuple[datetime, str]]:
        """For each doc in ``indexed`` (see :meth:`indexed_rows`): the greatest (updated_at, batch)
        of its indexed rows."""
        newest = (
            indexed.sort("updated_at", "batch")
            .group_by("doc_id")
            .agg(pl.col("updated_at").last(), pl.col("batch").last())
        )
        return {doc_id: (updated_at, batch) for doc_id, updated_at, batch in newest.iter_rows()}

    @staticmethod
    def unchanged_docs(chunks: pl.DataFrame, indexed: pl.DataFrame) -> pl.DataFrame:
        """``doc_id`` of the documents whose indexed chunks (``indexed``, see :meth:`indexed_rows`)
        are exactly ``chunks``' (same ids, text hashes, positions, titles, metadata, versions and
        batch). Their vectors are the same too: the table is per model and a vector is a function
        of the chunk's text. Rewriting them would only cost a merge and an index refresh, so a
        re-run of a batch with 1% edited writes 1%."""
        if not chunks.height or not indexed.height:
            return pl.DataFrame(schema={"doc_id": pl.String})
        incoming = _doc_rows(chunks.with_columns(pl.col("updated_at").fill_null(EPOCH)))
        return (
            incoming.join(_doc_rows(indexed), on="doc_id", suffix="_indexed")
            .filter(pl.col("rows") == pl.col("rows_indexed"))
            .select("doc_id")
        )

    def apply_batch(
        self, chunks: pl.DataFrame, documents: pl.DataFrame, latest: pl.DataFrame | None = None
    ) -> ApplyResult:
        """Upsert one batch: for each document whose version is newer than (or equal to) the indexed
        one, replace its chunks; delete chunks of deleted documents and chunks beyond the new count.
        Older versions (out-of-order backfills) are skipped and never overwrite newer content.

        ``latest`` (``doc_id``, ``batch``: where each document's newest version lives, deletions
        included) lets a late older batch lose to a deletion the index has no row left to remember.
        """
        table = self.writable_table()
        docs = documents.with_columns(pl.col("updated_at").fill_null(EPOCH))
        if latest is not None:
            newest_here = docs.join(latest.select("doc_id", "batch"), on=["doc_id", "batch"], how="semi")
            superseded = docs.height - newest_here.height
            docs = newest_here
        else:
            superseded = 0
        indexed = self.indexed_rows(docs["doc_id"].to_list())
        existing = self.current_versions(indexed)
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
        live = winners.filter(~pl.col("deleted"))
        gone = winners.filter(pl.col("deleted"))["doc_id"].to_list()
        upserts = chunks.join(live.select("doc_id"), on="doc_id", how="semi")
        unchanged = self.unchanged_docs(upserts, indexed)
        upserts = upserts.join(unchanged, on="doc_id", how="anti")
        touched = winners.join(unchanged, on="doc_id", how="anti")["doc_id"].to_list()
        fault_point("index.before_merge")
        # One commit: upsert the winners' chunks and delete every other chunk of a winning document
        # (all chunks of a deleted one, surplus chunks of a shorter one). A reader, or a process
        # killed mid-way, sees the batch applied entirely or not at all.
        chunks_deleted, version = 0, int(table.version)
        if touched:
            result = _commit(
                lambda: (
                    table.merge_insert("chunk_id")
                    .when_matched_update_all(
                        where="target.updated_at < source.updated_at OR "
                        "(target.updated_at = source.updated_at AND target.batch <= source.batch)"
                    )
                    .when_not_matched_insert_all()
                    .when_not_matched_by_source_delete(_in_list("doc_id", touched))
                    .execute(self.to_arrow_rows(upserts))
                )
            )
            chunks_deleted, version = int(result.num_deleted_rows), int(result.version)
        fault_point("index.after_merge")
        return ApplyResult(
            docs_written=live.height - unchanged.height,
            docs_unchanged=unchanged.height,
            docs_skipped_older=superseded + docs.height - winners.height,
            docs_deleted=len(gone),
            chunks_upserted=upserts.height,
            chunks_deleted=chunks_deleted,
            table_version=version,
        )

    def unindexed_rows(self, table: Any = None, indices: list[Any] | None = None) -> int:
        """Rows written since the indexes were last refreshed (the most any index lacks)."""
        table = table if table is not None else self.table()
        indices = indices if indices is not None else table.list_indices()
        stats = [table.index_stats(idx.name) for idx in indices]
        return max((int(s.num_unindexed_rows) for s in stats if s is not None), default=0)

    def ensure_indexes(self) -> list[str]:
        """Full-text index always; an ANN index once the table passes ``ann_min_rows``.

        Rows written since the last refresh are searched exactly (LanceDB scans what its indexes
        do not cover, for vector and full-text queries alike), so they are found at once; ``optimize``
        folds them into the indexes and compacts small fragments once they pass ``refresh_share``
        of the table. Refreshing after every batch cost ~1.7 s per run at 10k rows, whatever the
        edit's size. Returns what it built, ``"refresh"`` included."""
        from lancedb.index import FTS

        table = self.table()
        built: list[str] = []
        indices = table.list_indices()
        indexed = {col for idx in indices for col in idx.columns}
        rows = table.count_rows()
        if indexed and self.unindexed_rows(table, indices) > self.refresh_share * rows:
            fault_point("index.build")
            _commit(table.optimize)
            built.append("refresh")
        if rows and "text" not in indexed:
            fault_point("index.build")
            _commit(lambda: table.create_index("text", config=FTS(), replace=True))
            built.append("fts")
        if rows >= self.ann_min_rows and "vector" not in indexed:
            fault_point("index.build")
            _commit(lambda: table.create_index("vector", config=self.ann.index_config(rows)))
            built.append("ann")
        for name in ("chunk_id", "source", "doc_id", "batch"):
            if rows and name not in indexed:
                _commit(lambda name=name: table.create_scalar_index(name, replace=True))
        fault_point("index.after_build")
        return built

    def has_ann_index(self) -> bool:
        return self.exists() and any(idx.columns == ["vector"] for idx in self.table().list_indices())

    # ------------------------------------------------------------------ reads

    def batch_fingerprint(self, batch: str) -> pl.DataFrame:
        return self.read(["chunk_id", "chunk_hash"], f"batch = '{batch}'").sort("chunk_id")

    def reconcile(self, expected: ExpectedIndex) -> Reconciliation:
        """Compare the index with the chunks that should be live: ids and chunk hashes."""
        actual = (
            self.read(["chunk_id", "chunk_hash"])
            if self.exists()
            else pl.DataFrame(schema={"chunk_id": pl.String, "chunk_hash": pl.String})
        )
        exp = expected.live.select("chunk_id", "chunk_hash")
        joined = exp.join(actual, on="chunk_id", how="full", suffix="_actual", coalesce=True)
        missing = joined.filter(pl.col("chunk_hash_actual").is_null())["chunk_id"].to_list()
        extra = joined.filter(pl.col("chunk_hash").is_null())["chunk_id"].to_list()
        stale = joined.filter(
            pl.col("chunk_hash").is_not_null()
            & pl.col("chunk_hash_actual").is_not_null()
            & (pl.col("chunk_hash") != pl.col("chunk_hash_actual"))
        )["chunk_id"].to_list()
        return Reconciliation(
            exp.height, actual.height, sorted(missing), sorted(extra), sorted(stale), expected.dead_lettered
        )

    def repair(self, expected: ExpectedIndex, rows: pl.DataFrame) -> RepairResult:
        """Make the index equal ``expected``: write the missing and stale chunks from ``rows``
        (expected chunks with their vectors, from the embeddings table: nothing is re-embedded)
        and delete the extra ones, in one commit."""
        before = self.reconcile(expected)
        if before.ok:
            return RepairResult(before, 0, 0, self.version())
        table = self.writable_table()
        wanted = rows.filter(pl.col("chunk_id").is_in(before.missing + before.stale))
        extra = before.extra

        def write() -> Any:
            merge = table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
            if extra:
                merge = merge.when_not_matched_by_source_delete(_in_list("chunk_id", extra))
            return merge.execute(self.to_arrow_rows(wanted))

        result = _commit(write)
        self.ensure_indexes()
        return RepairResult(before, wanted.height, int(result.num_deleted_rows), self.version())

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
        if not self.exists():
            return []
        table = self.table()
        if version is not None:
            table.checkout(version)
        filters = [f"source = '{source.replace(chr(39), chr(39) * 2)}'"] if source else []
        filters += [f"({where})"] if where else []
        where = " AND ".join(filters) or None
        have = set(table.schema.names)
        columns = ["chunk_id", "doc_id", "source", "title", "text", "batch", "metadata"]
        columns += [m for m in self.metadata if m in have]
        started = time.perf_counter()
        if mode == "fts":
            builder = table.search(query, query_type="fts")
        elif mode == "vector":
            builder = self.ann.apply(
                table.search(query_vector, vector_column_name="vector").distance_type("cosine")
            )
        else:
            builder = self.ann.apply(
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
