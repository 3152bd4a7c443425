from datetime import UTC, datetime

import numpy as np
import polars as pl

from embedding_assets.lib.embedder import HashingEmbedder
from embedding_assets.lib.embedding import CACHE_SCHEMA, embed_chunks, vector_problems

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _chunks(texts: list[str]) -> pl.DataFrame:
    from embedding_assets.lib.hashing import sha256_text

    return pl.DataFrame(
        {
            "chunk_id": [f"d#{i}" for i in range(len(texts))],
            "chunk_hash": [sha256_text(t) for t in texts],
            "text": texts,
        }
    )


def test_only_misses_are_embedded_and_hits_reused() -> None:
    embedder = HashingEmbedder()
    first = embed_chunks(
        _chunks(["alpha", "beta", "beta"]), pl.DataFrame(schema=CACHE_SCHEMA), embedder, batch="b1", now=NOW
    )
    assert (first.chunks_total, first.chunks_embedded, first.chunks_reused) == (3, 2, 1)
    assert embedder.calls == 2
    cache = first.frame.select("chunk_hash", "vector", "embedded_at")
    second = embed_chunks(_chunks(["alpha", "gamma"]), cache, embedder, batch="b2", now=NOW)
    assert (second.chunks_embedded, second.chunks_reused) == (1, 1)
    assert embedder.calls == 3
    assert second.frame["model_id"].unique().to_list() == ["hashing-embedder-v1"]
    assert vector_problems(second.frame, 384) == []


def test_vector_problems_catch_nan_wrong_dimension_and_norm() -> None:
    good = np.eye(4, dtype=np.float32)[:2]
    frame = pl.DataFrame(
        {
            "vector": pl.Series(
                [*good, np.array([np.nan, 0, 0, 1], np.float32), np.array([2, 0, 0, 0], np.float32)],
                dtype=pl.List(pl.Float32),
            )
        }
    )
    problems = vector_problems(frame, 4)
    assert any("NaN" in p for p in problems)
    assert any("norm" in p for p in problems)
    assert vector_problems(frame, 8) == ["4 vectors do not have the model's dimension 8"]
