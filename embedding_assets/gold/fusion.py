"""Field-level fusion: the rows several sources hold about one entity (a product in the PIM export
and in the web shop's feed) become one gold document, each field taken by its own rule, with the
source, batch, row hash and update time it came from.

Rules, per entity field (sources in the entity's priority order unless the field names its own):

- ``priority``: the highest-priority source that has a live row for the entity gives the value,
  null included: an update in a lower-priority source never overrides it;
- ``first_non_null``: the first source in priority order whose live row has a value;
- ``recency``: the value of the live row updated last (ties: priority order).

A deletion in one source (its deletion marker, or a snapshot that no longer lists the entity)
removes that source's row and so only its fields; the entity is deleted when no source has a live
row left. Each source's row is its newest version (``updated_at``, then batch) up to the batch being
built, so a batch's fused row is the entity as every source knew it then.
"""

from __future__ import annotations

import polars as pl

from embedding_assets.contracts.model import Entity
from embedding_assets.refine.silver import content_hashes, metadata_json
from embedding_assets.refine.tables import FIELD_PREFIX

PROVENANCE = ["source", "batch", "row_hash", "updated_at"]


def member_rows(entity: Entity, source: str, silver: pl.DataFrame) -> pl.DataFrame:
    """One source's silver rows in the entity's terms: ``key``, the provenance columns and
    ``deleted``, and a ``v::<field>`` column per entity field (null where the source lacks it).
    ``silver`` holds the source's newest row per document, with its ``f_<field>`` columns."""
    member = entity.members[source]
    key = pl.col("source_id")
    key = {"upper": key.str.to_uppercase(), "lower": key.str.to_lowercase()}.get(member.key_case, key)
    values = [
        (pl.col(f"{FIELD_PREFIX}{member.fields[f]}") if f in member.fields else pl.lit(None)).alias(f"v::{f}")
        for f in entity.fields
    ]
    return silver.select(
        key.alias("key"), pl.lit(source).alias("source"), "batch", pl.col("content_hash").alias("row_hash"),
        "updated_at", "deleted", *values,
    )  # fmt: skip


def fuse(entity: Entity, rows: pl.DataFrame, batch: str) -> pl.DataFrame:
    """One gold document per entity key of ``rows`` (every member's current row, from
    :func:`member_rows`): gold's columns, each metadata field as a column, and ``provenance``."""
    keys = rows.group_by("key").agg(
        pl.col("updated_at").max().alias("updated_at"), (~pl.col("deleted")).any().alias("_live")
    )
    fused = keys
    for field in entity.fields:
        fused = fused.join(_chosen(entity, rows, field), on="key", how="left")
    return _documents(entity, fused, batch)


def _chosen(entity: Entity, rows: pl.DataFrame, field: str) -> pl.DataFrame:
    """Per key, the value of ``field`` its rule picks and where it came from (``p::<field>``)."""
    order = entity.order(field)
    rule = entity.fields[field].rule
    rank = pl.col("source").replace_strict(
        {s: i for i, s in enumerate(order)}, default=None, return_dtype=pl.Int32
    )
    value = pl.col(f"v::{field}")
    live = (
        rows.filter(~pl.col("deleted"))
        .with_columns(rank.alias("_rank"))
        .filter(pl.col("_rank").is_not_null())
    )
    if rule == "priority":
        picked = live.sort("_rank").group_by("key", maintain_order=True).first()
    elif rule == "first_non_null":
        picked = live.filter(value.is_not_null()).sort("_rank").group_by("key", maintain_order=True).first()
    else:  # recency
        ordered = live.filter(value.is_not_null()).sort(
            ["updated_at", "_rank"], descending=[True, False], nulls_last=True
        )
        picked = ordered.group_by("key", maintain_order=True).first()
    provenance = pl.when(value.is_not_null()).then(pl.struct(*PROVENANCE))
    return picked.select("key", value.alias(f"f::{field}"), provenance.alias(f"p::{field}"))


def _documents(entity: Entity, fused: pl.DataFrame, batch: str) -> pl.DataFrame:
    live = pl.col("_live")
    title = (
        pl.col(f"f::{entity.title}").cast(pl.String).str.strip_chars()
        if entity.title
        else pl.lit(None, pl.String)
    )
    parts = [pl.col(f"f::{f}").cast(pl.String).str.strip_chars() for f in entity.text]
    text = pl.concat_str(parts, separator="\n\n", ignore_nulls=True).str.strip_chars()
    metadata = (
        metadata_json(fused.select(pl.col(f"f::{m}").alias(m) for m in entity.metadata))
        if entity.metadata
        else pl.lit("{}")
    )
    out = fused.with_columns(metadata.alias("_metadata")).select(
        (pl.lit(f"{entity.name}:") + pl.col("key")).alias("doc_id"),
        pl.lit(entity.name).alias("source"),
        pl.col("key").alias("source_id"),
        pl.lit(batch).alias("batch"),
        pl.when(live).then(title).alias("title"),
        pl.when(live).then(text).otherwise(pl.lit("")).alias("text"),
        "updated_at",
        (~live).alias("deleted"),
        pl.when(live).then(pl.col("_metadata")).otherwise(pl.lit("{}")).alias("metadata"),
        pl.struct([pl.col(f"p::{f}").alias(f) for f in entity.fields])
        .struct.json_encode()
        .alias("provenance"),
        *(pl.col(f"f::{m}").alias(m) for m in entity.metadata),
    )
    return out.with_columns(content_hashes(out)).sort("doc_id")
