"""The shapes of silver and quarantine rows, and the kinds of row that do not reach silver."""

from __future__ import annotations

import polars as pl

SILVER_SCHEMA = pl.Schema(
    {
        "doc_id": pl.String(),
        "source": pl.String(),
        "source_id": pl.String(),
        "batch": pl.String(),
        "title": pl.String(),
        "text": pl.String(),
        "updated_at": pl.Datetime("us", "UTC"),
        "deleted": pl.Boolean(),
        "metadata": pl.String(),
        "content_hash": pl.String(),
        "near_duplicate_of": pl.String(),  # flagged, not dropped (the contract's near_duplicates.action)
        "_file": pl.String(),
        "_line": pl.Int64(),
    }
)


# Every row that did not become a silver row, and why: invalid rows (the quarantine proper) and the
# losers of deduplication. Rows read = silver rows + rows here, so nothing is dropped silently.
QUARANTINE_SCHEMA = pl.Schema(
    {
        "source": pl.String(),
        "batch": pl.String(),
        "_file": pl.String(),
        "_line": pl.Int64(),
        "kind": pl.String(),  # invalid | duplicate | near_duplicate | superseded
        "doc_id": pl.String(),
        "duplicate_of": pl.String(),  # the winner's file:line (duplicates) or doc id (near duplicates)
        "contract_version": pl.Int64(),  # detected version of the record, -1 when unreadable
        "raw": pl.String(),
        "reasons": pl.List(pl.String()),
        "reason": pl.String(),
    }
)


INVALID, DUPLICATE, NEAR_DUPLICATE, SUPERSEDED = "invalid", "duplicate", "near_duplicate", "superseded"


FIELD_PREFIX = "f_"  # silver carries every contract field, typed, as f_<name> (schema evolution)
