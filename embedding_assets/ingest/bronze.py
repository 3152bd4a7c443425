"""Bronze: an exact, append-only copy of every landing delivery, with lineage columns.

A batch delivered again with different bytes is appended as a new delivery; the previous one
stays. Re-running the same delivery appends nothing, so bronze is idempotent.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from embedding_assets.core.hashing import sha256_bytes, sha256_text

BRONZE_SCHEMA = pl.Schema(
    {
        "batch": pl.String(),
        "_source": pl.String(),
        "_delivery": pl.String(),  # sha256 of the batch's landing files
        "_delivery_seq": pl.Int32(),
        "_file": pl.String(),
        "_line": pl.Int64(),
        "_format": pl.String(),
        "_raw": pl.Binary(),
        "_header": pl.Binary(),
        "_raw_hash": pl.String(),
        "_ingested_at": pl.Datetime("us", "UTC"),
    }
)


BRONZE_KEYS = ["batch", "_delivery", "_delivery_seq", "_file", "_line"]


def latest_delivery(bronze: pl.DataFrame) -> pl.DataFrame:
    """The rows of the newest delivery (highest sequence; two racing writers that picked the same
    sequence for different deliveries are told apart by ingestion time, then delivery hash)."""
    if bronze.height == 0:
        return bronze
    seq, delivery = (
        bronze.select("_delivery_seq", "_ingested_at", "_delivery")
        .sort("_delivery_seq", "_ingested_at", "_delivery")
        .row(-1)[0::2]
    )
    return bronze.filter((pl.col("_delivery_seq") == seq) & (pl.col("_delivery") == delivery)).sort(
        "_file", "_line"
    )


def _raw_hashes(raw: pl.Series) -> pl.Series:
    """sha256 of each record's bytes, in one comprehension (a Python call per row either way, but
    without ``map_elements``' per-row conversions)."""
    return pl.Series([sha256_bytes(b) for b in raw.to_list()], dtype=pl.String)


def new_delivery(
    raw: pl.DataFrame,
    *,
    source: str,
    batch: str,
    fmt: str,
    delivery: str,
    existing: pl.DataFrame,
    now: datetime,
) -> pl.DataFrame | None:
    """Rows to append for this delivery, or None when it is already the latest one in bronze."""
    current = latest_delivery(existing)
    if current.height and current["_delivery"][0] == delivery:
        return None
    if raw.height == 0:
        # Nothing landed (or the folder went away): keep what bronze has. Removing documents
        # takes an explicit deletion marker, so nothing disappears because a folder did.
        return None
    seq = int(existing["_delivery_seq"].max()) + 1 if existing.height else 1  # type: ignore[arg-type]
    return raw.select(
        pl.lit(batch).alias("batch"),
        pl.lit(source).alias("_source"),
        pl.lit(delivery).alias("_delivery"),
        pl.lit(seq, dtype=pl.Int32).alias("_delivery_seq"),
        pl.col("file").alias("_file"),
        pl.col("line").alias("_line"),
        pl.lit(fmt).alias("_format"),
        pl.col("raw").alias("_raw"),
        pl.col("header").alias("_header"),
        _raw_hashes(raw["raw"]).alias("_raw_hash"),
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("_ingested_at"),
    ).cast(BRONZE_SCHEMA)


BRONZE_FORMAT = "bronze-1"  # how landing bytes become bronze rows; a new one re-versions bronze


def bronze_version(delivery: str) -> str:
    """The data version of a batch's bronze partition: its latest delivery, an exact copy of the
    landing files whose sha256 is ``delivery``. So the landing hash alone tells whether bronze
    already holds a delivery, without reading the lake."""
    return sha256_text(BRONZE_FORMAT, delivery)


def latest_delivery_hash(bronze: pl.DataFrame) -> str | None:
    latest = latest_delivery(bronze)
    return str(latest["_delivery"][0]) if latest.height else None


def as_raw_records(rows: pl.DataFrame) -> pl.DataFrame:
    """The latest delivery in the shape the silver parser reads."""
    return rows.select(
        pl.col("_file").alias("file"),
        pl.col("_line").alias("line"),
        pl.col("_raw").alias("raw"),
        pl.col("_header").alias("header"),
    )
