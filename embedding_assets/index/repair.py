"""Reconciliation of the index against gold, and repair of what drifted, from stored vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from embedding_assets.index.table import ChunkTable, commit, in_list
from embedding_assets.index.writer import IndexWriter


@dataclass(frozen=True)
class ExpectedIndex:
    """The chunks the index should hold (``chunk_id``, ``chunk_hash`` at least), and how many live
    chunks are knowingly absent because they are in the dead-letter table."""

    live: pl.DataFrame
    dead_lettered: int = 0
    unchunked: int = 0  # live documents this model has no chunks for (its partitions not built yet)


@dataclass(frozen=True)
class Reconciliation:
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]
    stale: list[str]
    dead_lettered: int = 0
    unchunked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.stale)

    @property
    def complete(self) -> bool:
        """The index holds every live document of gold, exactly (what a promotion needs)."""
        return self.ok and self.unchunked == 0 and self.expected > 0

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


def reconcile(table: ChunkTable, expected: ExpectedIndex) -> Reconciliation:
    """Compare the index with the chunks that should be live: ids and chunk hashes."""
    actual = table.read(["chunk_id", "chunk_hash"])
    exp = expected.live.select("chunk_id", "chunk_hash")
    joined = exp.join(actual, on="chunk_id", how="full", suffix="_actual", coalesce=True)
    indexed, wanted = pl.col("chunk_hash_actual"), pl.col("chunk_hash")
    missing = joined.filter(indexed.is_null())["chunk_id"].to_list()
    extra = joined.filter(wanted.is_null())["chunk_id"].to_list()
    stale = joined.filter(wanted.is_not_null() & indexed.is_not_null() & (wanted != indexed))[
        "chunk_id"
    ].to_list()
    return Reconciliation(
        exp.height,
        actual.height,
        sorted(missing),
        sorted(extra),
        sorted(stale),
        expected.dead_lettered,
        expected.unchunked,
    )


@dataclass(frozen=True)
class RepairResult:
    before: Reconciliation
    upserted: int
    deleted: int
    table_version: int


def repair(
    writer: IndexWriter, expected: ExpectedIndex, rows: pl.DataFrame, before: Reconciliation | None = None
) -> RepairResult:
    """Make the index equal ``expected``: write the missing and stale chunks from ``rows``
    (expected chunks with their vectors, from the embeddings table: nothing is re-embedded)
    and delete the extra ones, in one commit. ``before``: the reconciliation already made."""
    before = before or reconcile(writer.table, expected)
    if before.ok:
        return RepairResult(before, 0, 0, writer.table.version())
    table = writer.writable()
    wanted = rows.filter(pl.col("chunk_id").is_in(before.missing + before.stale))

    def write() -> Any:
        merge = table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
        if before.extra:
            merge = merge.when_not_matched_by_source_delete(in_list("chunk_id", before.extra))
        return merge.execute(writer.table.to_arrow_rows(wanted))

    result = commit(write)
    writer.ensure_indexes()
    return RepairResult(before, wanted.height, int(result.num_deleted_rows), writer.table.version())
