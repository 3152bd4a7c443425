"""What a sync would do to one partition, computed in memory with the assets' own pure functions.

Nothing is written. ``sync --dry-run`` uses it to say which assets would run (a changed landing
file whose rows are the same stops at silver here too) and how many chunks would be embedded
rather than reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from embedding_assets.contracts.model import Contract
from embedding_assets.core.lake import Lake
from embedding_assets.embed.encode import CACHE_SCHEMA, embeddings_version
from embedding_assets.gold.chunking import Chunker, chunk_documents, chunks_version
from embedding_assets.gold.documents import snapshot_tombstones, union_documents
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import read_raw_batch
from embedding_assets.refine.silver import bronze_to_silver, documents_version, quarantine_version
from embedding_assets.refine.tables import SILVER_SCHEMA


@dataclass(frozen=True)
class PartitionForecast:
    versions: dict[str, str]  # predicted data version per asset key
    documents: int
    chunks_total: int
    chunks_to_embed: int
    hashes_to_embed: frozenset[str] = frozenset()

    @property
    def chunks_reused(self) -> int:
        return self.chunks_total - self.chunks_to_embed


def forecast_partition(
    contracts: dict[str, Contract],
    landing_dir: Path,
    lake: Lake,
    chunker: Chunker,
    model_id: str,
    batch: str,
    pending: frozenset[str] = frozenset(),
) -> PartitionForecast:
    """``pending``: chunk hashes that partitions forecast before this one will embed first."""
    versions: dict[str, str] = {}
    silvers: dict[str, pl.DataFrame] = {}
    now = datetime.now(UTC)
    for source, contract in contracts.items():
        landed = read_raw_batch(contract, landing_dir / source / batch)
        existing = lake.read_batch(f"bronze/{source}", batch, bronze_lib.BRONZE_SCHEMA)
        rows = bronze_lib.new_delivery(
            landed.records,
            source=source,
            batch=batch,
            fmt=contract.format,
            delivery=landed.content_hash,
            existing=existing,
            now=now,
        )
        latest = bronze_lib.latest_delivery(rows if rows is not None else existing)
        versions[f"bronze/{source}"] = bronze_lib.bronze_version(latest)
        result = bronze_to_silver(contract, bronze_lib.as_raw_records(latest), batch)
        versions[f"silver/{source}"] = documents_version(result.silver)
        versions[f"quarantine/{source}"] = quarantine_version(result.rejected)
        silvers[source] = result.silver
    tombstones = [
        snapshot_tombstones(
            silvers[s], lake.read(f"silver/{s}", SILVER_SCHEMA, pl.col("batch") < batch), batch
        )
        for s, c in contracts.items()
        if c.snapshot
    ]
    documents = union_documents([*silvers.values(), *tombstones])
    versions["gold/documents"] = documents_version(documents)
    chunks = chunk_documents(documents, chunker)
    versions["gold/chunks"] = chunks_version(chunks)
    cache = lake.read(
        "embeddings",
        CACHE_SCHEMA,
        (pl.col("model_id") == model_id) & pl.col("chunk_hash").is_in(chunks["chunk_hash"].implode()),
    )
    to_embed = set(
        chunks.select("chunk_hash").unique().join(cache, on="chunk_hash", how="anti")["chunk_hash"]
    )
    to_embed -= pending
    versions["embeddings"] = embeddings_version(
        chunks.select("chunk_id", "chunk_hash").with_columns(pl.lit(model_id).alias("model_id"))
    )
    return PartitionForecast(versions, documents.height, chunks.height, len(to_embed), frozenset(to_embed))
