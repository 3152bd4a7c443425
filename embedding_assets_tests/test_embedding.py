from datetime import UTC, datetime

import numpy as np
import polars as pl

from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets.embed.encode import CACHE_SCHEMA, embed_chunks, vector_problems

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _chunks(texts: list[str]) -> pl.DataFrame:
    from embedding_assets.core.hashing import sha256_text

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


class Flaky(HashingEmbedder):
    """Fails the first ``transient`` calls, and always on texts containing ``poison``."""

    def __init__(self, transient: int = 0, poison: str = "\0", nan: str = "\0") -> None:
        super().__init__()
        self.transient, self.poison, self.nan, self.attempted = transient, poison, nan, 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.attempted += 1
        if self.attempted <= self.transient:
            raise TimeoutError("device busy")
        if any(self.poison in t for t in texts):
            raise ValueError("tokenizer exploded")
        out = super().encode(texts)
        out[[self.nan in t for t in texts]] = np.nan
        return out


def test_transient_failures_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    embedder = Flaky(transient=2)
    result = embed_chunks(
        _chunks(["a", "b", "c"]),
        pl.DataFrame(schema=CACHE_SCHEMA),
        embedder,
        batch="b",
        now=NOW,
        sleep=sleeps.append,
    )
    assert result.chunks_embedded == 3 and result.chunks_failed == 0 and result.retries == 2
    assert len(sleeps) == 2 and sleeps[0] <= 0.2 and sleeps[1] <= 0.4  # full jitter under 0.2 * 2**n


def test_poison_and_nan_chunks_are_dead_lettered_and_the_rest_carries_on() -> None:
    texts = [f"text {i}" for i in range(10)] + ["POISON pill", "NaN maker"]
    embedder = Flaky(poison="POISON", nan="NaN maker")
    empty = pl.DataFrame(schema=CACHE_SCHEMA)
    result = embed_chunks(_chunks(texts), empty, embedder, batch="b", now=NOW, sleep=lambda _: None)
    assert result.chunks_embedded == 10 and result.chunks_failed == 2
    assert sorted(result.frame["chunk_id"]) == sorted(f"d#{i}" for i in range(10))
    dead = {r["chunk_id"]: r for r in result.dead_letter.iter_rows(named=True)}
    assert dead["d#10"]["attempts"] == 3 and "tokenizer exploded" in dead["d#10"]["error"]
    assert dead["d#11"]["attempts"] == 1 and "non-finite" in dead["d#11"]["error"]
    assert vector_problems(result.frame, embedder.dimension) == []
    # A later run retries the dead letters and counts attempts on from the earlier ones.
    again = embed_chunks(
        _chunks(texts),
        empty,
        embedder,
        batch="b",
        now=NOW,
        previous_failures=result.dead_letter,
        sleep=lambda _: None,
    )
    assert {r["chunk_id"]: r["attempts"] for r in again.dead_letter.iter_rows(named=True)} == {
        "d#10": 6,
        "d#11": 2,
    }


def test_gpu_batches_fit_in_half_the_free_memory() -> None:
    from embedding_assets.embed.embedder import gpu_batch_size

    per_text = 16 * 256 * 384 * 2  # activations of one 256-token text, fp16
    assert gpu_batch_size(140 * 2**30, 256, 384) == 4096  # an idle H200: capped
    assert gpu_batch_size(8 * 2**30, 256, 384) == 1024  # 1,365 fit in 4 GiB
    assert gpu_batch_size(300 * per_text, 256, 384) == 128  # 150 fit: the power of two below
    assert gpu_batch_size(per_text, 256, 384) == 16  # nearly full: the floor
    for free in (2**28, 2**31, 2**34):
        size = gpu_batch_size(free, 512, 1024)
        assert size & (size - 1) == 0 and (size == 16 or size * 16 * 512 * 1024 * 2 <= free // 2)
