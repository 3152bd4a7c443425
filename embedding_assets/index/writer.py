"""Writes to a model's chunk table: newer-wins upserts of a batch, deletions, metadata columns,
and the full-text, ANN and scalar indexes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import polars as pl
import pyarrow as pa

from embedding_assets.core.faults import fault_point
from embedding_assets.core.stop import checkpoint
from embedding_assets.index.table import (
    ANN_DEFAULTS,
    ARROW_TYPES,
    EPOCH,
    FTS_COLUMNS,
    LINEAGE,
    AnnSettings,
    ChunkTable,
    chunked,
    commit,
    in_list,
)

# The columns that make an indexed chunk row what it is (the vector follows from chunk_hash).
SAME_ROW = [
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
SAME_ROW_SCHEMA = pl.Schema(
    {**{c: pl.String() for c in SAME_ROW}, "chunk_index": pl.Int32(), "updated_at": pl.Datetime("us", "UTC")}
)
SCALAR_INDEXED = ("chunk_id", "source", "doc_id", "batch")


@dataclass(frozen=True)
class ApplyResult:
    docs_written: int
    docs_skipped_older: int
    docs_unchanged: int  # already indexed exactly as given: nothing rewritten
    docs_deleted: int
    chunks_upserted: int
    chunks_deleted: int
    table_version: int

    @property
    def committed(self) -> bool:
        return self.docs_written + self.docs_deleted > 0


def indexed_rows(table: ChunkTable, doc_ids: list[str]) -> pl.DataFrame:
    """The index's chunk rows of these documents, over :data:`SAME_ROW`."""
    if not doc_ids or not table.exists():
        return pl.DataFrame(schema=SAME_ROW_SCHEMA)
    parts = [table.read(SAME_ROW, in_list("doc_id", part)) for part in chunked(doc_ids)]
    return pl.concat(parts, how="vertical_relaxed")


def newer_or_equal(documents: pl.DataFrame, indexed: pl.DataFrame) -> pl.DataFrame:
    """The documents whose (updated_at, batch) is at least that of every indexed row of theirs:
    an out-of-order (older) batch never overwrites what a newer one wrote."""
    newest = (
        indexed.sort("updated_at", "batch")
        .group_by("doc_id")
        .agg(pl.col("updated_at").last().alias("_at"), pl.col("batch").last().alias("_batch"))
    )
    at, batch = pl.col("updated_at"), pl.col("batch")
    return (
        documents.join(newest, on="doc_id", how="left")
        .filter(
            pl.col("_at").is_null()
            | (at > pl.col("_at"))
            | ((at == pl.col("_at")) & (batch >= pl.col("_batch")))
        )
        .drop("_at", "_batch")
    )


def _doc_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Per document, its chunk rows over :data:`SAME_ROW` as one sorted list of strings."""
    row = pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in SAME_ROW], separator="\x1f")
    return frame.group_by("doc_id").agg(row.sort().alias("rows"))


def unchanged_docs(chunks: pl.DataFrame, indexed: pl.DataFrame) -> pl.DataFrame:
    """``doc_id`` of the documents whose indexed chunks are exactly ``chunks``' (same ids, text
    hashes, positions, titles, metadata, versions and batch). Their vectors are the same too: the
    table is per model and a vector is a function of the chunk's text. Rewriting them would only
    cost a merge and an index refresh, so a re-run of a batch with 1% edited writes 1%."""
    if not chunks.height or not indexed.height:
        return pl.DataFrame(schema={"doc_id": pl.String})
    incoming = _doc_rows(chunks.with_columns(pl.col("updated_at").fill_null(EPOCH)))
    return (
        incoming.join(_doc_rows(indexed), on="doc_id", suffix="_indexed")
        .filter(pl.col("rows") == pl.col("rows_indexed"))
        .select("doc_id")
    )


@dataclass(frozen=True)
class _Plan:
    """What one batch changes in the index."""

    winners: pl.DataFrame  # documents of the batch that are (at least as) new as what is indexed
    upserts: pl.DataFrame  # their chunk rows that differ from the indexed ones
    touched: list[str]  # documents whose rows are rewritten or deleted
    unchanged: int
    skipped_older: int


def plan_batch(
    chunks: pl.DataFrame, documents: pl.DataFrame, indexed: pl.DataFrame, latest: pl.DataFrame | None
) -> _Plan:
    docs = documents.with_columns(pl.col("updated_at").fill_null(EPOCH))
    if latest is not None:
        docs = docs.join(latest.select("doc_id", "batch"), on=["doc_id", "batch"], how="semi")
    winners = newer_or_equal(docs, indexed)
    live = winners.filter(~pl.col("deleted")).select("doc_id")
    upserts = chunks.join(live, on="doc_id", how="semi")
    # Nothing to write for a document indexed exactly so, or deleted and already gone.
    settled = pl.concat(
        [
            unchanged_docs(upserts, indexed),
            winners.filter(pl.col("deleted")).join(indexed, on="doc_id", how="anti").select("doc_id"),
        ]
    )
    return _Plan(
        winners=winners,
        upserts=upserts.join(settled, on="doc_id", how="anti"),
        touched=winners.join(settled, on="doc_id", how="anti")["doc_id"].to_list(),
        unchanged=settled.height,
        skipped_older=documents.height - winners.height,
    )


class IndexWriter:
    """Applies batches to one model's chunk table and keeps its indexes current."""

    def __init__(
        self,
        table: ChunkTable,
        ann_min_rows: int = 5000,
        ann: AnnSettings = ANN_DEFAULTS,
        refresh_share: float = 0.05,
    ) -> None:
        self.table = table
        self.ann_min_rows = ann_min_rows
        self.ann = ann
        self.refresh_share = refresh_share  # see ensure_indexes
        self.backfilled: list[str] = []
        self._columns_checked = False

    def writable(self) -> Any:
        """The table, with its metadata columns brought up to the contracts' (writes only)."""
        table = self.table.open()
        if not self._columns_checked:
            self.backfilled = self.ensure_metadata_columns(table)
            self._columns_checked = True
        return table

    def ensure_metadata_columns(self, table: Any) -> list[str]:
        """Schema drift: a metadata field added to a contract becomes a column of the existing
        table, backfilled with the field's default, with no re-embedding. Idempotent: a crash
        between adding and backfilling is finished by the next call. A table written before rows
        carried their lineage gets those columns too (null in its older rows)."""
        fields = self.table.metadata
        names = set(table.schema.names)
        lineage = [f for f in LINEAGE if f.name not in names]
        if lineage:
            commit(lambda: table.add_columns(lineage))
        added = [f.name for f in fields.values() if f.name not in names]
        if added:
            commit(lambda: table.add_columns([pa.field(n, ARROW_TYPES[fields[n].type]) for n in added]))
        for f in fields.values():
            if f.default is not None and table.count_rows(f"{f.name} IS NULL"):
                commit(partial(table.update, where=f"{f.name} IS NULL", values={f.name: f.default}))
        return added

    def apply_batch(
        self, chunks: pl.DataFrame, documents: pl.DataFrame, latest: pl.DataFrame | None = None
    ) -> ApplyResult:
        """Upsert one batch: for each document whose version is newer than (or equal to) the indexed
        one, replace its chunks; delete chunks of deleted documents and chunks beyond the new count.
        Older versions (out-of-order backfills) are skipped and never overwrite newer content.

        ``latest`` (``doc_id``, ``batch``: where each document's newest version lives, deletions
        included) lets a late older batch lose to a deletion the index has no row left to remember.
        """
        table = self.writable()
        plan = plan_batch(chunks, documents, indexed_rows(self.table, documents["doc_id"].to_list()), latest)
        fault_point("index.before_merge")
        checkpoint("the index merge")
        deleted, version = self._merge(table, plan) if plan.touched else (0, int(table.version))
        fault_point("index.after_merge")
        touched = plan.winners.filter(pl.col("doc_id").is_in(plan.touched))
        written = touched.filter(~pl.col("deleted")).height
        return ApplyResult(
            docs_written=written,
            docs_unchanged=plan.unchanged,
            docs_skipped_older=plan.skipped_older,
            docs_deleted=touched.height - written,
            chunks_upserted=plan.upserts.height,
            chunks_deleted=deleted,
            table_version=version,
        )

    def _merge(self, table: Any, plan: _Plan) -> tuple[int, int]:
        """One commit: upsert the winners' chunks and delete every other chunk of a winning document
        (all chunks of a deleted one, surplus chunks of a shorter one). A reader, or a process
        killed mid-way, sees the batch applied entirely or not at all. Returns (deleted, version)."""
        result = commit(
            lambda: (
                table.merge_insert("chunk_id")
                .when_matched_update_all(
                    where="target.updated_at < source.updated_at OR "
                    "(target.updated_at = source.updated_at AND target.batch <= source.batch)"
                )
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(in_list("doc_id", plan.touched))
                .execute(self.table.to_arrow_rows(plan.upserts))
            )
        )
        return int(result.num_deleted_rows), int(result.version)

    def unindexed_rows(self, table: Any = None, indices: list[Any] | None = None) -> int:
        """Rows written since the indexes were last refreshed (the most any index lacks)."""
        table = table if table is not None else self.table.open()
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
        from lancedb.index import FTS, BTree

        table = self.table.open()
        indices = table.list_indices()
        fts = {col for idx in indices if idx.index_type == "FTS" for col in idx.columns}
        other = {col for idx in indices if idx.index_type != "FTS" for col in idx.columns}
        rows = table.count_rows()
        missing_fts = [c for c in FTS_COLUMNS if c not in fts]
        wanted = [
            ("refresh", bool(indices) and self.unindexed_rows(table, indices) > self.refresh_share * rows, table.optimize),
            ("fts", rows > 0 and bool(missing_fts), lambda: [table.create_index(c, config=FTS(), replace=True, name=f"{c}_fts") for c in missing_fts]),
            ("ann", rows >= self.ann_min_rows and "vector" not in other, lambda: table.create_index("vector", config=self.ann.index_config(rows))),
        ]  # fmt: skip
        built = []
        for name, needed, build in wanted:
            if needed:
                fault_point("index.build")
                commit(build)
                built.append(name)
        for name in SCALAR_INDEXED:
            if rows and name not in other:
                commit(partial(table.create_index, name, config=BTree(), replace=True, name=f"{name}_btree"))
        fault_point("index.after_build")
        return built
