"""4. The vector index: ingest, index build, recall@10 against exact search, query latency.

Vectors are synthetic but clustered (Gaussian blobs around random unit centres, then normalised),
the shape real embeddings have; uniform noise would make every ANN index look bad."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from bench.common import percentile

DIM = 384
WORDS = [
    "boiler",
    "kettle",
    "thermostat",
    "lock",
    "sensor",
    "camera",
    "plug",
    "router",
    "schedule",
    "firmware",
    "battery",
    "filter",
]


def clustered(
    n: int, clusters: int = 1000, spread: float = 1.0, latent: int = 32, seed: int = 3
) -> np.ndarray:
    """Topics as cluster centres, and variation within a topic along a few shared directions
    (``latent`` of them) plus a little isotropic noise: sentence embeddings have a low intrinsic
    dimension. Two earlier shapes were useless for judging an ANN index: tight clusters (256
    centres, spread 0.35) put ~4,000 near-identical vectors per cluster, and isotropic noise in all
    384 dimensions has no neighbourhood structure to find; both gave recall@10 of 0.01-0.66."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.normal(size=(DIM, latent)))[0].T.astype(np.float32)  # latent x DIM, orthonormal
    labels = rng.integers(0, clusters, n)
    within = rng.normal(scale=spread / np.sqrt(latent), size=(n, latent)).astype(np.float32) @ basis
    noise = rng.normal(scale=0.05 / np.sqrt(DIM), size=(n, DIM)).astype(np.float32)
    vectors = centres[labels] + within + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _table(vectors: np.ndarray, start: int) -> pa.Table:
    n = len(vectors)
    ids = np.arange(start, start + n)
    text = [f"{WORDS[i % 12]} {WORDS[(i // 12) % 12]} note {i}" for i in ids]
    return pa.table(
        {
            "chunk_id": pa.array([f"c{i}" for i in ids]),
            "text": pa.array(text),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )


def _query(table: Any, q: np.ndarray, nprobes: int | None, ef: int | None, refine: int | None) -> list[int]:
    builder = table.search(q, vector_column_name="vector").distance_type("cosine").limit(10)
    if nprobes is None:
        builder = builder.bypass_vector_index()  # exact: a flat scan, the baseline
    else:
        builder = builder.nprobes(nprobes)
        if ef is not None:
            builder = builder.ef(ef)
        if refine is not None:
            builder = builder.refine_factor(refine)
    return [int(h["chunk_id"][1:]) for h in builder.select(["chunk_id"]).to_list()]


def _measure(
    table: Any,
    queries: np.ndarray,
    exact: np.ndarray,
    nprobes: int | None,
    ef: int | None,
    refine: int | None,
) -> dict[str, float]:
    _query(table, queries[0], nprobes, ef, refine)  # warm the index into the page cache
    found, latencies = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(_query(table, q, nprobes, ef, refine))
        latencies.append((time.perf_counter() - t0) * 1000)
    recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))
    return {
        "recall_at_10": round(recall, 4),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


# Search settings swept per index type: (nprobes, ef, refine_factor); ef applies to HNSW only.
SWEEP = {
    "ivf_hnsw_sq": [(p, ef, r) for p in (5, 10, 20, 40) for ef in (None, 100) for r in (None, 5)],
    "ivf_pq": [(p, None, r) for p in (10, 20, 40) for r in (None, 10, 40)],
}


def run(n: int, smoke: bool = False) -> dict[str, Any]:
    import lancedb
    from lancedb.index import FTS, IvfPq

    from embedding_assets.lib.vector_store import ANN_DEFAULTS

    n = 5_000 if smoke else n
    n_queries = 50 if smoke else 200
    # Queries are held-out draws from the corpus' own distribution (as real queries land near real
    # documents), not inserted: a query from other centres would have no meaningful neighbours.
    everything = clustered(n + n_queries)
    vectors, queries = everything[:n], everything[n:]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    out: dict[str, Any] = {"vectors": n, "dimension": DIM, "queries": n_queries}
    with tempfile.TemporaryDirectory() as tmp:
        db = lancedb.connect(tmp)
        started = time.perf_counter()
        table = db.create_table("chunks", data=_table(vectors[:100_000], 0))
        for start in range(100_000, n, 100_000):
            table.add(_table(vectors[start : start + 100_000], start))
        ingest_s = time.perf_counter() - started
        out["ingest_vectors_per_s"] = round(n / ingest_s)
        out["flat_scan"] = _measure(table, queries[:50], exact[:50], None, None, None)
        started = time.perf_counter()
        table.create_index("text", config=FTS())
        out["fts_build_s"] = round(time.perf_counter() - started, 2)
        # IVF_PQ first, so the default index is the one left for the FTS and hybrid figures below.
        indexes = {
            "ivf_pq": IvfPq(
                distance_type="cosine", num_partitions=max(1, int(np.sqrt(n))), num_sub_vectors=48
            ),
            "ivf_hnsw_sq": ANN_DEFAULTS.index_config(n),
        }
        for name, config in indexes.items():
            started = time.perf_counter()
            table.create_index("vector", config=config, replace=True)
            figures: dict[str, Any] = {"build_s": round(time.perf_counter() - started, 2), "settings": {}}
            for nprobes, ef, refine in SWEEP[name][:4] if smoke else SWEEP[name]:
                key = f"nprobes={nprobes} ef={ef} refine={refine}"
                figures["settings"][key] = _measure(table, queries, exact, nprobes, ef, refine)
            if name == "ivf_hnsw_sq":
                out["default_settings"] = (
                    f"rows/partition={ANN_DEFAULTS.rows_per_partition} nprobes={ANN_DEFAULTS.nprobes} "
                    f"ef={ANN_DEFAULTS.ef} refine={ANN_DEFAULTS.refine_factor}"
                )
                figures["default"] = _measure(
                    table, queries, exact, ANN_DEFAULTS.nprobes, ANN_DEFAULTS.ef, ANN_DEFAULTS.refine_factor
                )
            out[name] = figures
        # FTS and hybrid latency, hybrid with the default index and search settings
        for mode in ("fts", "hybrid"):
            latencies = []
            for i, q in enumerate(queries):
                words = f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]}"
                t0 = time.perf_counter()
                if mode == "fts":
                    table.search(words, query_type="fts").limit(10).select(["chunk_id"]).to_list()
                else:
                    ANN_DEFAULTS.apply(
                        table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
                        .vector(q).text(words)
                    ).limit(10).select(["chunk_id"]).to_list()  # fmt: skip
                latencies.append((time.perf_counter() - t0) * 1000)
            out[f"{mode}_p50_ms"] = round(percentile(latencies, 50), 2)
            out[f"{mode}_p99_ms"] = round(percentile(latencies, 99), 2)
    out["target"] = "recall@10 >= 0.95, vector p99 < 10 ms"
    return out
