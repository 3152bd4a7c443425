"""gold/documents: every source's silver rows of a batch, snapshot tombstones, and newest-version views."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from embedding_assets.contracts.model import FieldSpec, MetadataField
from embedding_assets.core.hashing import sha256_text
from embedding_assets.refine.parse import as_text, typed_expr
from embedding_assets.refine.tables import SILVER_SCHEMA

GOLD_DOCUMENT_COLUMNS = [c for c in SILVER_SCHEMA if not c.startswith("_") and c != "near_duplicate_of"]
# An entity's document says where each field came from (JSON: field -> source, batch, row hash and
# update time); a source's own document has none.
GOLD_DOC_SCHEMA = pl.Schema(
    {**{c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS}, "provenance": pl.String()}
)


def union_documents(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """gold/documents for one batch: every source's silver rows and every entity's fused rows, ids
    already namespaced by source or entity."""
    found = [
        f.select(
            pl.col(c) if c in f.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in GOLD_DOC_SCHEMA.items()
        )
        for f in frames
        if f.height
    ]
    if not found:
        return pl.DataFrame(schema=GOLD_DOC_SCHEMA)
    return pl.concat(found, how="vertical_relaxed").cast(GOLD_DOC_SCHEMA).sort("doc_id")  # type: ignore[arg-type]


def with_metadata_columns(frame: pl.DataFrame, fields: Mapping[str, MetadataField]) -> pl.DataFrame:
    """Every metadata field as a typed column of its own (decoded from the ``metadata`` JSON), so
    gold and the index can filter on it. A field a row lacks gets the field's default."""
    if not fields:
        return frame
    struct = pl.Struct({name: pl.String() for name in fields})
    decoded = frame.select(
        pl.col("metadata").fill_null("{}").str.json_decode(struct).struct.unnest()
    ) if frame.height else pl.DataFrame(schema={name: pl.String() for name in fields})  # fmt: skip
    columns = []
    for name, spec in fields.items():
        text = decoded[name] if name in decoded.columns else pl.Series(name, [None] * frame.height, pl.String)
        if spec.default is not None:
            text = text.fill_null(as_text(spec.default))
        typed = pl.DataFrame({name: text}).select(
            typed_expr(name, FieldSpec(name, spec.type)).cast(spec.dtype).alias(name)
        )
        columns.append(typed[name])
    return frame.with_columns(columns)


def snapshot_tombstones(current: pl.DataFrame, earlier: pl.DataFrame, batch: str) -> pl.DataFrame:
    """Deletions implied by a full-snapshot batch: every document whose newest version in earlier
    batches is live but that this batch's snapshot lacks. A batch that delivered nothing for the
    source (``current`` empty) implies nothing. Each tombstone keeps the document's last
    ``updated_at``, so it wins over that version by batch order and loses to any later edit."""
    columns = {c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS}
    if current.height == 0 or earlier.height == 0:
        return pl.DataFrame(schema=columns)
    gone = (
        latest_documents(earlier.filter(pl.col("batch") < batch))
        .filter(~pl.col("deleted"))
        .join(current.select("doc_id"), on="doc_id", how="anti")
    )
    return (
        gone.with_columns(
            pl.lit(batch).alias("batch"),
            pl.lit("").alias("text"),
            pl.lit(True).alias("deleted"),
            pl.lit("{}").alias("metadata"),
            pl.lit(None, dtype=pl.String).alias("title"),
            pl.lit(sha256_text("snapshot-tombstone")).alias("content_hash"),
        )
        .select(list(columns))
        .cast(columns)  # type: ignore[arg-type]
        .sort("doc_id")
    )


def latest_documents(documents: pl.DataFrame) -> pl.DataFrame:
    """Newest version of every document across batches: updated_at, then batch order, wins."""
    return (
        documents.sort(["doc_id", "updated_at", "batch"], nulls_last=False)
        .unique(subset=["doc_id"], keep="last", maintain_order=True)
        .sort("doc_id")
    )


def expected_live_chunks(documents: pl.DataFrame, chunks: pl.DataFrame) -> pl.DataFrame:
    """The chunks the index should hold: those of each document's newest, non-deleted version."""
    winners = latest_documents(documents).filter(~pl.col("deleted")).select("doc_id", "batch")
    return chunks.join(winners, on=["doc_id", "batch"], how="semi").select(
        "chunk_id", "chunk_hash", "doc_id", "batch"
    )
