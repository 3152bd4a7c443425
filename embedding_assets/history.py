"""Gold as it was at a moment, read by Delta time travel: the Python side of ``search --as-of``.

    >>> from datetime import UTC, datetime
    >>> from embedding_assets.history import documents_as_of
    >>> documents_as_of(datetime(2026, 11, 8, tzinfo=UTC))  # every live document then, newest version of each

Each table is read at its newest version committed at or before the moment. ``lake_maintenance``
vacuums files older than its retention (``EA_MODEL_RETENTION_H``, 48 h by default), so a moment
before that window can no longer be read: the error says so.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from embedding_assets.config import Settings
from embedding_assets.core.lake import Lake
from embedding_assets.gold.documents import latest_documents


class HistoryError(ValueError):
    """A moment the lake cannot answer for: the message says why and what to do."""


def documents_as_of(when: datetime, lake_uri: str | None = None, *, deleted: bool = False) -> pl.DataFrame:
    """Every document as search saw it at ``when``: the newest version of each across batches,
    with every column gold had then; deleted documents are left out (``deleted=True`` keeps their
    tombstones)."""
    documents = latest_documents(_table_as_of(_lake(lake_uri), "gold/documents", when))
    return documents if deleted else documents.filter(~pl.col("deleted"))


def chunks_as_of(when: datetime, model: str, lake_uri: str | None = None) -> pl.DataFrame:
    """The chunks one model's index held at ``when``: those of each live document's newest version."""
    lake = _lake(lake_uri)
    live = documents_as_of(when, lake.root_uri).select("doc_id", "batch")
    chunks = _table_as_of(lake, "gold/chunks", when).filter(pl.col("model") == model)
    return chunks.join(live, on=["doc_id", "batch"], how="semi").sort("doc_id", "chunk_index")


def _lake(lake_uri: str | None) -> Lake:
    return Lake(lake_uri or Settings.from_env().lake_uri)


def _table_as_of(lake: Lake, table: str, when: datetime) -> pl.DataFrame:
    if when.tzinfo is None:
        raise HistoryError(
            f"give the moment with its time zone (e.g. {when.isoformat()}+00:00), not a naive time"
        )
    version = lake.version_at(table, when)
    if version is None:
        raise HistoryError(f"{table} did not exist yet at {when.isoformat()}: its first commit is later")
    scan = lake.scan(table, version)
    assert scan is not None  # a version was found, so the table exists
    try:
        return scan.collect()
    except (OSError, pl.exceptions.ComputeError) as exc:  # files vacuumed since
        raise HistoryError(
            f"{table} at {when.isoformat()} (version {version}) is no longer readable: lake_maintenance "
            f"vacuumed its files after EA_MODEL_RETENTION_H ({str(exc).splitlines()[0][:200]})"
        ) from None
