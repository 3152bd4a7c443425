"""``embedding-assets repair``: make the index equal gold's live chunks again, whatever happened to it."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl

from embedding_assets.defs.assets import VECTOR_INDEX, expected_index
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.encode import EMBEDDING_SCHEMA
from embedding_assets.gold.chunking import CHUNK_SCHEMA
from embedding_assets.index.repair import Reconciliation, reconcile, repair


@dataclass(frozen=True)
class RepairReport:
    before: Reconciliation
    after: Reconciliation
    upserted: int
    deleted: int
    embedded: int
    table_version: int

    def render(self) -> str:
        return "\n".join(
            [
                f"before: {self.before.render()}",
                f"repaired: {self.upserted} chunks written, {self.deleted} deleted, "
                f"{self.embedded} embedded (vectors come from the embeddings table)",
                f"after:  {self.after.render()}",
                f"LanceDB table version {self.table_version}",
            ]
        )


def repair_index(instance: dg.DagsterInstance | None, pipeline: PipelineResource) -> RepairReport:
    lake, embedder = pipeline.lake(), pipeline.embedder()
    writer = pipeline.index_writer(embedder)
    expected = expected_index(lake, embedder.model_id)
    keys = ["batch", "chunk_id"]
    chunks = lake.read("gold/chunks", CHUNK_SCHEMA).join(expected.live.select(keys), on=keys, how="semi")
    vectors = lake.read("embeddings", EMBEDDING_SCHEMA, pl.col("model_id") == embedder.model_id)
    rows = chunks.join(vectors.select(*keys, "vector"), on=keys, how="left")
    # A vector missing from the embeddings table (lost behind the pipeline's back) is re-embedded.
    lacking = rows.filter(pl.col("vector").is_null())
    if lacking.height:
        fresh = embedder.encode(lacking["text"].to_list())
        patched = lacking.with_columns(
            pl.Series("vector", list(np.asarray(fresh)), dtype=pl.List(pl.Float32))
        )
        rows = pl.concat([rows.filter(pl.col("vector").is_not_null()), patched])
    result = repair(writer, expected, rows)
    after = reconcile(writer.table, expected)
    report = RepairReport(
        result.before, after, result.upserted, result.deleted, lacking.height, result.table_version
    )
    if instance is not None and not result.before.ok:
        instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=VECTOR_INDEX,
                metadata={
                    "repair": "embedding-assets repair",
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
