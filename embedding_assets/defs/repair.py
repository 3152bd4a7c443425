"""``embedding-assets repair``: make the index equal gold's live chunks again, whatever happened to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import polars as pl

from embedding_assets.defs.index import expected_index
from embedding_assets.defs.keys import VECTOR_INDEX
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.encode import EMBEDDING_SCHEMA
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.gold.chunking import CHUNK_SCHEMA
from embedding_assets.index.repair import ExpectedIndex, Reconciliation, reconcile, repair


@dataclass(frozen=True)
class RepairReport:
    before: Reconciliation
    after: Reconciliation
    upserted: int
    deleted: int
    embedded: int
    table_version: int
    plan: str = ""  # set on a dry run, which writes nothing

    def render(self) -> str:
        if self.plan:
            return f"before: {self.before.render()}\ndry run: {self.plan}; nothing was changed"
        return "\n".join(
            [
                f"before: {self.before.render()}",
                f"repaired: {self.upserted} chunks written, {self.deleted} deleted, "
                f"{self.embedded} embedded (vectors come from the embeddings table)",
                f"after:  {self.after.render()}",
                f"LanceDB table version {self.table_version}",
            ]
        )


def rows_to_write(
    pipeline: PipelineResource, expected: ExpectedIndex, spec: ModelSpec
) -> tuple[pl.DataFrame, int]:
    """The expected chunks with their vectors from the embeddings table; a vector lost from it
    (behind the pipeline's back) is embedded again. Returns the rows and how many were embedded."""
    lake, keys = pipeline.lake(), ["batch", "chunk_id"]
    gold_version = lake.version("gold/chunks")
    chunks = lake.read("gold/chunks", CHUNK_SCHEMA, pl.col("model") == spec.name, gold_version)
    chunks = chunks.join(expected.live.select(keys), on=keys, how="semi").with_columns(
        pl.lit(-1 if gold_version is None else gold_version, dtype=pl.Int64).alias("gold_version")
    )
    vectors = lake.read("embeddings", EMBEDDING_SCHEMA, pl.col("model_id") == spec.model_id)
    rows = chunks.join(vectors.select(*keys, "vector", "embedded_at"), on=keys, how="left")
    lacking = rows.filter(pl.col("vector").is_null())
    if not lacking.height:
        return rows, 0
    fresh = pipeline.embedder(spec).encode(lacking["text"].to_list())
    dtype = rows.schema["vector"]  # as the embeddings table stores it (a list or an array)
    patched = lacking.with_columns(
        pl.Series("vector", list(np.asarray(fresh)), dtype=pl.List(pl.Float32)).cast(dtype),
        pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("embedded_at"),
    )
    return pl.concat([rows.filter(pl.col("vector").is_not_null()), patched]), lacking.height


MAX_DELETE_SHARE = 0.05  # repair deletes at most this share of the index without --force


class RepairRefused(ValueError):
    """A repair that would delete too much of the index: the message says what and how to go on."""


def planned(before: Reconciliation, max_delete_share: float) -> str:
    """What a repair would do; raises :class:`RepairRefused` when it would delete too much."""
    plan = (
        f"would write {len(before.missing) + len(before.stale)} chunks and delete {len(before.extra)} "
        f"of {before.actual} in the index"
    )
    if len(before.extra) > max_delete_share * max(before.actual, 1):
        raise RepairRefused(
            f"repair refused: it {plan} (more than {max_delete_share:.0%}). Gold may be damaged rather "
            "than the index: `embedding-assets sync` checks the lake first. To delete anyway: "
            "`embedding-assets repair --force`; to see the plan: `--dry-run`"
        )
    return plan


def repair_index(
    instance: dg.DagsterInstance | None,
    pipeline: PipelineResource,
    spec: ModelSpec | None = None,
    *,
    max_delete_share: float = MAX_DELETE_SHARE,
    force: bool = False,
    dry_run: bool = False,
) -> RepairReport:
    """Repair one model's index (default: the serving model's)."""
    spec = spec or pipeline.spec()
    writer = pipeline.index_writer(spec)
    expected = expected_index(pipeline.lake(), spec)
    before = reconcile(writer.table, expected)
    if dry_run:
        plan = planned(before, 1.0)
        return RepairReport(before, before, 0, 0, 0, writer.table.version(), plan=plan)
    planned(before, 1.0 if force else max_delete_share)
    rows, embedded = rows_to_write(pipeline, expected, spec)
    result = repair(writer, expected, rows, before)
    after = reconcile(writer.table, expected)
    report = RepairReport(
        result.before, after, result.upserted, result.deleted, embedded, result.table_version
    )
    if instance is not None and not result.before.ok:
        instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=VECTOR_INDEX,
                metadata={
                    "repair": "embedding-assets repair",
                    "model": spec.name,
                    "missing_before": len(result.before.missing),
                    "extra_before": len(result.before.extra),
                    "stale_before": len(result.before.stale),
                    "chunks_written": result.upserted,
                    "chunks_deleted": result.deleted,
                    "lancedb_version": result.table_version,
                    "reconciliation_after": after.render(),
                },
            )
        )
    return report
