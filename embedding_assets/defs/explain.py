"""``search --explain``: where each hit came from, so "why did this come back, and from which
delivery?" is answered without opening the lake. The index row carries its model, when its
vector was embedded and the gold/chunks version it was read from; silver gives the landing file
and line of the document's row; the Dagster instance gives the Delta versions its batch's
bronze, silver and gold/documents partitions were last written at (None when this instance
did not record them, e.g. a new instance over an old lake)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.config import Settings
from embedding_assets.core.lake import Lake
from embedding_assets.defs.keys import GOLD_DOCUMENTS, layer_key
from embedding_assets.defs.memo import previous_record
from embedding_assets.refine.tables import SILVER_SCHEMA


def landing_rows(lake: Lake, hits: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, int]]:
    """(doc_id, batch) -> (file, line) of each hit's document row in silver."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    wanted = {(h["source"], h["doc_id"], h["batch"]) for h in hits}
    for source in sorted({s for s, _, _ in wanted}):
        pairs = [(d, b) for s, d, b in wanted if s == source]
        frame = lake.read(
            f"silver/{source}", SILVER_SCHEMA,
            pl.col("doc_id").is_in([d for d, _ in pairs]) & pl.col("batch").is_in([b for _, b in pairs]),
        )  # fmt: skip
        for doc_id, batch, file, line in frame.select("doc_id", "batch", "_file", "_line").iter_rows():
            out[(doc_id, batch)] = (file, line)
    return out


def recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    record = previous_record(instance, key, partition)
    mat = record.asset_materialization if record is not None else None
    value = getattr(mat.metadata.get("delta_version"), "value", None) if mat is not None else None
    return int(value) if isinstance(value, int) else None


def explain_hits(settings: Settings, hits: list[dict[str, Any]]) -> None:
    """Add a ``lineage`` dict to each hit, in place."""
    from embedding_assets.defs.instance import local_instance

    rows = landing_rows(Lake(settings.lake_uri), hits)
    with local_instance(settings) as instance:
        for hit in hits:
            source, batch = hit["source"], hit["batch"]
            file, line = rows.get((hit["doc_id"], batch), (None, None))
            hit["lineage"] = {
                "landing_file": f"landing/{source}/{batch}/{file}" if file else None,
                "landing_line": line,
                "batch": batch,
                "bronze_version": recorded_version(instance, layer_key("bronze", source), batch),
                "silver_version": recorded_version(instance, layer_key("silver", source), batch),
                "gold_documents_version": recorded_version(instance, GOLD_DOCUMENTS, batch),
                "gold_chunks_version": hit.get("gold_version"),
                "model": hit.get("model"),
                "embedded_at": str(hit["embedded_at"]) if hit.get("embedded_at") is not None else None,
            }
