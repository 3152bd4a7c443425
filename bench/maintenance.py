"""8. Lake maintenance: after many small batches (each one Delta commit per table and one LanceDB
upsert, as the pipeline writes them), the file counts and the search p99 before and after the
lake_maintenance job's work (Delta OPTIMIZE + VACUUM + checkpoint, LanceDB optimize)."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import percentile
from bench.index import WORDS as INDEX_WORDS
from embedding_assets.core.hashing import sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.table import ChunkTable
from embedding_assets.index.writer import IndexWriter

EMB = HashingEmbedder()
WORDS = INDEX_WORDS[:10]  # the ten words the section was measured with
CHUNKS = {
    "chunk_id": pl.String, "doc_id": pl.String, "source": pl.String, "batch": pl.String,
    "chunk_index": pl.Int32, "title": pl.String, "text": pl.String, "chunk_hash": pl.String,
    "updated_at": pl.Datetime("us", "UTC"), "metadata": pl.String, "vector": pl.List(pl.Float32),
}  # fmt: skip
DOCS = {
    "doc_id": pl.String,
    "updated_at": pl.Datetime("us", "UTC"),
    "batch": pl.String,
    "deleted": pl.Boolean,
}


def batch_frames(b: int, docs: int, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Batch ``b``: ``docs`` documents of two chunks; one in five revises an earlier document."""
    batch, ts = f"b{b:05d}", datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=b)
    chunk_rows, doc_rows = [], []
    revised = rng.choice(b * docs, min(docs // 5, b * docs), replace=False).tolist() if b else []
    for n in [*revised, *range(b * docs, b * docs + docs - len(revised))]:
        doc_id = f"helpdesk:{n}"
        doc_rows.append({"doc_id": doc_id, "updated_at": ts, "batch": batch, "deleted": False})
        for i in range(2):
            text = " ".join(rng.choice(WORDS, 12)) + f" ticket {n} part {i} rev {b}"
            chunk_rows.append({
                "chunk_id": f"{doc_id}#{i}", "doc_id": doc_id, "source": "helpdesk", "batch": batch,
                "chunk_index": i, "title": None, "text": text, "chunk_hash": sha256_text(text),
                "updated_at": ts, "metadata": "{}", "vector": EMB.encode([text])[0].tolist(),
            })  # fmt: skip
    return pl.DataFrame(chunk_rows, schema=CHUNKS), pl.DataFrame(doc_rows, schema=DOCS)


def on_disk(root: Path) -> dict[str, int]:
    return {
        "delta_data_files": sum(1 for p in (root / "lake").rglob("*.parquet") if "_delta_log" not in p.parts),
        "delta_log_files": sum(1 for p in (root / "lake").rglob("_delta_log/*") if p.is_file()),
        "lancedb_files": sum(1 for p in (root / "lancedb").rglob("*") if p.is_file()),
    }


def search_latency(reader: IndexReader, queries: list[str]) -> dict[str, float]:
    out: dict[str, list[float]] = {"vector": [], "hybrid": []}
    for mode in out:
        for q in queries:
            vector = EMB.encode([q])[0]
            started = time.perf_counter()
            reader.search(q, vector, k=10, mode=mode)  # type: ignore[arg-type]
            out[mode].append((time.perf_counter() - started) * 1000)
    return {f"{m}_p{p}_ms": round(percentile(v, p), 2) for m, v in out.items() for p in (50, 99)}


def run(smoke: bool) -> dict[str, Any]:
    batches, docs = (12, 5) if smoke else (200, 25)
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lake = Lake(str(root / "lake"))
        table = ChunkTable(str(root / "lancedb"), EMB.model_id, EMB.dimension)
        writer = IndexWriter(table, ann_min_rows=100 if smoke else 2000)
        started = time.perf_counter()
        for b in range(batches):
            chunks, documents = batch_frames(b, docs, rng)
            lake.overwrite_batch("gold/documents", documents, documents["batch"][0])
            lake.overwrite_batch("gold/chunks", chunks.drop("vector"), documents["batch"][0])
            lake.overwrite_batch(
                "embeddings", chunks.select("batch", "chunk_id", "vector"), documents["batch"][0]
            )
            writer.apply_batch(chunks, documents)
            writer.ensure_indexes()
            if b % 10 == 9:  # a batch delivered again, corrected: its files are rewritten
                lake.overwrite_batch(
                    "gold/documents",
                    documents.with_columns(pl.lit(True).alias("deleted")),
                    documents["batch"][0],
                )
        write_s = time.perf_counter() - started
        reader = IndexReader(table)
        queries = [" ".join(rng.choice(WORDS, 3)) for _ in range(30 if smoke else 200)]
        search_latency(reader, queries[:10])  # warm caches
        before = {
            **on_disk(root),
            "lancedb_versions": len(table.open().list_versions()),
            **search_latency(reader, queries),
        }
        started = time.perf_counter()
        # The job's own retention is the rollback window (48 h); 0 h shows the disk as it will be
        # once those 48 h have passed (the files only older versions need are gone).
        delta = [lake.maintain(t, 0.0) for t in ("gold/documents", "gold/chunks", "embeddings")]
        index = table.maintain(timedelta(0))
        maintain_s = time.perf_counter() - started
        reader = IndexReader(table)
        search_latency(reader, queries[:10])
        after = {
            **on_disk(root),
            "lancedb_versions": len(table.open().list_versions()),
            **search_latency(reader, queries),
        }
        return {
            "batches": batches,
            "chunks": batches * docs * 2,
            "write_s": round(write_s, 1),
            "maintain_s": round(maintain_s, 1),
            "before": before,
            "after": after,
            "delta_current_files": {m.table: [m.files_before, m.files_after] for m in delta if m},
            "lancedb_fragments": [index.fragments_before, index.fragments_after] if index else None,
            "hybrid_p99_after_over_before": round(after["hybrid_p99_ms"] / before["hybrid_p99_ms"], 2),
            "vector_p99_after_over_before": round(after["vector_p99_ms"] / before["vector_p99_ms"], 2),
        }
