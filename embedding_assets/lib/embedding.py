"""Embed a batch's chunks, reusing vectors already computed for the same (chunk_hash, model_id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from embedding_assets.lib.embedder import Embedder
from embedding_assets.lib.hashing import frame_hash

EMBEDDING_SCHEMA = pl.Schema(
    {
        "batch": pl.String(),
        "chunk_id": pl.String(),
        "chunk_hash": pl.String(),
        "model_id": pl.String(),
        "vector": pl.List(pl.Float32()),
        "embedded_at": pl.Datetime("us", "UTC"),
    }
)
CACHE_SCHEMA = pl.Schema(
    {
        "chunk_hash": pl.String(),
        "vector": pl.List(pl.Float32()),
        "embedded_at": pl.Datetime("us", "UTC"),
    }
)


@dataclass(frozen=True)
class EmbedResult:
    frame: pl.DataFrame
    chunks_total: int
    chunks_embedded: int
    chunks_reused: int


def embed_chunks(
    chunks: pl.DataFrame, cache: pl.DataFrame, embedder: Embedder, *, batch: str, now: datetime
) -> EmbedResult:
    """Vectors for every chunk of the batch. ``cache`` holds known vectors of this model."""
    known = cache.unique(subset=["chunk_hash"], keep="first")
    hits = chunks.select("chunk_id", "chunk_hash").join(known, on="chunk_hash", how="inner")
    misses = chunks.join(known.select("chunk_hash"), on="chunk_hash", how="anti")
    # Identical chunk texts inside the batch are embedded once.
    # Longest first, so each encode batch pads to similar lengths (and an out-of-memory shows early).
    todo = (
        misses.unique(subset=["chunk_hash"], keep="first", maintain_order=True)
        .with_columns(pl.col("text").str.len_chars().alias("_len"))
        .sort("_len", "chunk_hash", descending=[True, False])
    )
    vectors = embedder.encode(todo["text"].to_list())
    fresh = pl.DataFrame(
        {
            "chunk_hash": todo["chunk_hash"],
            "vector": pl.Series("vector", list(vectors), dtype=pl.List(pl.Float32)),
            "embedded_at": pl.Series([now] * todo.height, dtype=pl.Datetime("us", "UTC")),
        },
        schema=CACHE_SCHEMA,
    )
    new_rows = misses.select("chunk_id", "chunk_hash").join(fresh, on="chunk_hash", how="left")
    frame = (
        pl.concat([hits.select(new_rows.columns), new_rows], how="vertical")
        .with_columns(pl.lit(batch).alias("batch"), pl.lit(embedder.model_id).alias("model_id"))
        .select(list(EMBEDDING_SCHEMA))
        .cast(EMBEDDING_SCHEMA)
        .sort("chunk_id")
    )
    return EmbedResult(frame, chunks.height, todo.height, chunks.height - todo.height)


def vector_problems(frame: pl.DataFrame, dimension: int, tolerance: float = 1e-2) -> list[str]:
    """Why these vectors must not reach the index; empty when they are finite, of the model's
    dimension and unit-normalised."""
    if frame.height == 0:
        return []
    vectors = frame["vector"].cast(pl.List(pl.Float32))
    lengths = vectors.list.len()
    wrong = int((lengths != dimension).sum())
    if wrong:
        return [f"{wrong} vectors do not have the model's dimension {dimension}"]
    matrix = np.asarray(vectors.to_list(), dtype=np.float32)
    problems = []
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        problems.append(f"{int((~finite).sum())} vectors contain NaN or infinity")
    norms = np.linalg.norm(np.where(np.isfinite(matrix), matrix, 0), axis=1)
    off = np.abs(norms - 1.0) > tolerance
    if off.any():
        problems.append(f"{int(off.sum())} vectors have a norm outside 1 ± {tolerance}")
    return problems


def embeddings_version(frame: pl.DataFrame) -> str:
    return frame_hash(frame, ["chunk_id", "chunk_hash", "model_id"], sort_by=["chunk_id"])
