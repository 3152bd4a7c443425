"""Embed a batch's chunks, reusing vectors already computed for the same (chunk_hash, model_id).

Encoding runs in windows. A window that fails is retried with exponential backoff and jitter;
one that still fails is split in halves until the failing chunks are isolated. A chunk that fails
on its own after every attempt (or yields a non-finite vector) goes to the dead-letter table with
its error and attempt count, and the rest of the batch carries on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from embedding_assets.core.faults import fault_point
from embedding_assets.core.hashing import frame_hash
from embedding_assets.core.retry import DEFAULT_BACKOFF, Backoff, retry
from embedding_assets.core.stop import checkpoint
from embedding_assets.embed.embedder import Embedder
from embedding_assets.embed.failures import EmbedderUnavailable, RequestRejected

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


DEAD_LETTER_SCHEMA = pl.Schema(
    {
        "batch": pl.String(),
        "stage": pl.String(),
        "chunk_id": pl.String(),
        "chunk_hash": pl.String(),
        "model_id": pl.String(),
        "error": pl.String(),
        "attempts": pl.Int32(),
        "failed_at": pl.Datetime("us", "UTC"),
    }
)
ENCODE_WINDOW = 256  # texts per encode call: the unit of retry, and of stopping on a signal

FINAL = (EmbedderUnavailable, RequestRejected)  # errors another try of the same texts cannot mend


@dataclass(frozen=True)
class EncodeFailure:
    error: str
    attempts: int


@dataclass
class EncodeOutcome:
    vectors: np.ndarray  # one row per text; rows of failed texts are NaN
    failures: dict[int, EncodeFailure] = field(default_factory=dict)
    retries: int = 0


def encode_resilient(
    embedder: Embedder,
    texts: list[str],
    *,
    window: int = ENCODE_WINDOW,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> EncodeOutcome:
    """Encode ``texts`` window by window; isolate and record what fails permanently."""
    out = EncodeOutcome(np.full((len(texts), embedder.dimension), np.nan, dtype=np.float32))

    def call(part: list[str]) -> np.ndarray:
        fault_point("embed.encode", part)
        return embedder.encode(part)

    def attempt(lo: int, hi: int, policy: Backoff) -> None:
        try:
            vectors, attempts = retry(lambda: call(texts[lo:hi]), policy, give_up_on=FINAL, sleep=sleep)
            out.retries += attempts - 1
            out.vectors[lo:hi] = vectors
        except EmbedderUnavailable as error:  # not these texts' fault: the whole window waits
            out.failures.update(dict.fromkeys(range(lo, hi), _failure(error)))
        except Exception as error:
            out.retries += getattr(error, "attempts", 1) - 1
            if hi - lo == 1:
                out.failures[lo] = _failure(error)
                return
            # Split: a transient failure already had its retries; halves get one try each until
            # a single text is left, which gets the full retries again.
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                attempt(a, b, backoff if b - a == 1 else Backoff(attempts=1))

    for start in range(0, len(texts), window):
        checkpoint("the next encode window")
        attempt(start, min(start + window, len(texts)), backoff)
    bad = ~np.isfinite(out.vectors).all(axis=1)
    for row in np.flatnonzero(bad):
        out.failures.setdefault(int(row), EncodeFailure("non-finite vector (NaN or infinity)", 1))
    return out


def _failure(error: BaseException) -> EncodeFailure:
    return EncodeFailure(f"{type(error).__name__}: {error}", getattr(error, "attempts", 1))


@dataclass(frozen=True)
class EmbedResult:
    frame: pl.DataFrame
    chunks_total: int
    chunks_embedded: int
    chunks_reused: int
    dead_letter: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=DEAD_LETTER_SCHEMA))
    retries: int = 0
    encode_seconds: float = 0.0

    @property
    def chunks_failed(self) -> int:
        return self.dead_letter.height


def embed_chunks(
    chunks: pl.DataFrame,
    cache: pl.DataFrame,
    embedder: Embedder,
    *,
    batch: str,
    now: datetime,
    previous_failures: pl.DataFrame | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> EmbedResult:
    """Vectors for every chunk of the batch. ``cache`` holds known vectors of this model;
    ``previous_failures`` (dead-letter rows of earlier runs) carry their attempt counts forward."""
    known = cache.unique(subset=["chunk_hash"], keep="first")
    hits = chunks.select("chunk_id", "chunk_hash").join(known, on="chunk_hash", how="inner")
    misses = chunks.join(known.select("chunk_hash"), on="chunk_hash", how="anti")
    todo = _encode_order(misses)
    started = time.perf_counter()
    outcome = encode_resilient(embedder, todo["text"].to_list(), backoff=backoff, sleep=sleep)
    encode_seconds = time.perf_counter() - started
    fresh, failed = _split_outcome(todo, outcome, now)
    missed = misses.select("chunk_id", "chunk_hash")
    new_rows = missed.join(fresh, on="chunk_hash", how="inner")
    return EmbedResult(
        _embedding_rows(pl.concat([hits.select(new_rows.columns), new_rows]), batch, embedder.model_id),
        chunks_total=chunks.height,
        chunks_embedded=todo.height - failed.height,
        chunks_reused=chunks.height - todo.height,
        dead_letter=_dead_letter(missed, failed, previous_failures, batch, embedder.model_id, now),
        retries=outcome.retries,
        encode_seconds=encode_seconds,
    )


def _embedding_rows(rows: pl.DataFrame, batch: str, model_id: str) -> pl.DataFrame:
    """(chunk_id, chunk_hash, vector, embedded_at) rows as EMBEDDING_SCHEMA, by chunk_id."""
    return (
        rows.with_columns(pl.lit(batch).alias("batch"), pl.lit(model_id).alias("model_id"))
        .select(list(EMBEDDING_SCHEMA))
        .cast(EMBEDDING_SCHEMA)
        .sort("chunk_id")
    )


def _encode_order(misses: pl.DataFrame) -> pl.DataFrame:
    """The chunks to encode: identical chunk texts inside the batch once, longest first, so each
    encode batch pads to similar lengths (and an out-of-memory shows early)."""
    return (
        misses.unique(subset=["chunk_hash"], keep="first", maintain_order=True)
        .with_columns(pl.col("text").str.len_chars().alias("_len"))
        .sort("_len", "chunk_hash", descending=[True, False])
    )


def _split_outcome(
    todo: pl.DataFrame, outcome: EncodeOutcome, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(new cache rows for the chunk_hashes that encoded, (chunk_hash, error, attempts) of those
    that failed)."""
    failed_rows = sorted(outcome.failures)
    ok = np.ones(todo.height, dtype=bool)
    ok[failed_rows] = False
    fresh = pl.DataFrame(
        {
            "chunk_hash": todo["chunk_hash"].filter(pl.Series(ok)),
            "vector": pl.Series("vector", list(outcome.vectors[ok]), dtype=pl.List(pl.Float32)),
            "embedded_at": pl.Series([now] * int(ok.sum()), dtype=pl.Datetime("us", "UTC")),
        },
        schema=CACHE_SCHEMA,
    )
    failed = pl.DataFrame(
        {
            "chunk_hash": todo["chunk_hash"].gather(failed_rows),
            "error": [outcome.failures[r].error for r in failed_rows],
            "attempts": pl.Series([outcome.failures[r].attempts for r in failed_rows], dtype=pl.Int32),
        },
        schema={"chunk_hash": pl.String, "error": pl.String, "attempts": pl.Int32},
    )
    return fresh, failed


def _dead_letter(
    misses: pl.DataFrame,
    failed: pl.DataFrame,
    previous_failures: pl.DataFrame | None,
    batch: str,
    model_id: str,
    now: datetime,
) -> pl.DataFrame:
    """DEAD_LETTER_SCHEMA rows for every chunk whose text failed, attempts of earlier runs added."""
    before = (
        previous_failures.group_by("chunk_hash").agg(pl.col("attempts").max().alias("_before"))
        if previous_failures is not None and previous_failures.height
        else pl.DataFrame(schema={"chunk_hash": pl.String, "_before": pl.Int32})
    )
    return (
        misses.join(failed, on="chunk_hash", how="inner")
        .join(before, on="chunk_hash", how="left")
        .with_columns(
            (pl.col("attempts") + pl.col("_before").fill_null(0)).alias("attempts"),
            pl.lit(batch).alias("batch"),
            pl.lit("embed").alias("stage"),
            pl.lit(model_id).alias("model_id"),
            pl.lit(now).alias("failed_at"),
        )
        .select(list(DEAD_LETTER_SCHEMA))
        .cast(DEAD_LETTER_SCHEMA)
        .sort("chunk_id")
    )


def vector_matrix(vectors: pl.Series, dimension: int) -> np.ndarray:
    """A List/Array column of vectors as an (n, dimension) float32 matrix, without Python lists."""
    if not len(vectors):
        return np.zeros((0, dimension), dtype=np.float32)
    if isinstance(vectors.dtype, pl.List):
        vectors = vectors.list.to_array(dimension)
    return np.ascontiguousarray(vectors.cast(pl.Array(pl.Float32, dimension)).to_numpy(), dtype=np.float32)


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
    problems = []
    missing = int(vectors.is_null().sum())
    if missing:
        return [f"{missing} vectors are missing"]
    matrix = vector_matrix(vectors, dimension)
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
