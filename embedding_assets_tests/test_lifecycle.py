"""The model lifecycle through the CLI's functions, on real Delta, LanceDB and Dagster runs (the test
embedder; the real model's lifecycle is in test_model_e2e): refusals change nothing, a candidate
of another dimension gets its own table, the canary gate and its errors, rollback re-embeds
nothing, the shadow build is a Dagster backfill, training data leaves out the canary."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from embedding_assets.cli import main
from embedding_assets.defs.lifecycle import (
    ModelLoadError,
    add_model,
    evaluate,
    promote,
    rollback,
    shadow_runs,
)
from embedding_assets.defs.models import list_models
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets.defs.training import TRIPLES_TABLE, export_training
from embedding_assets.embed.registry import RegistryError
from embedding_assets_tests.conftest import SAMPLE, make_pipeline, materialization_count

pytestmark = pytest.mark.slow
HASHING = "hashing-embedder-v1"


def _quiet(_: str) -> None:
    pass


@pytest.fixture
def canary(root: Path) -> Path:
    shutil.copytree(SAMPLE / "canary", root / "canary")
    return root / "canary"


@pytest.fixture
def synced(root: Path, canary: Path, instance: dg.DagsterInstance) -> PipelineResource:
    pipeline = make_pipeline(root, canary_dir=str(canary))
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    return pipeline


def _registry_version(pipeline: PipelineResource) -> int:
    return pipeline.registry_state().version


def test_refused_changes_say_why_and_change_nothing(
    root: Path, synced: PipelineResource, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    before = _registry_version(synced)
    with pytest.raises(RegistryError, match="unknown model 'nope'; registered: hashing-embedder-v1"):
        promote(instance, synced, "nope")
    with pytest.raises(RegistryError, match="nothing to roll back to: no model served before"):
        rollback(synced)
    # A model path that does not load fails at add, before anything is registered.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    st = make_pipeline(root, embedder_kind="sentence-transformers")
    with pytest.raises(ModelLoadError, match="broken-model"):
        add_model(instance, st, str(broken), echo=_quiet)
    assert _registry_version(synced) == before
    assert instance.get_dynamic_partitions("models") == [HASHING]
    # An added candidate whose shadow is not built yet cannot be promoted.
    add_model(instance, synced, "other", build=False, echo=_quiet)
    after_add = _registry_version(synced)
    with pytest.raises(RegistryError, match="refused, nothing changed: its shadow index is not complete"):
        promote(instance, synced, "hashing-other")
    assert _registry_version(synced) == after_add
    assert synced.registry_state().serving.name == HASHING  # type: ignore[union-attr]


def test_cli_refusals_exit_2_with_one_line(
    synced: PipelineResource, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    monkeypatch.setenv("EA_DATA_DIR", str(root))
    monkeypatch.setenv("EA_EMBEDDER", "hashing")
    monkeypatch.setenv("DAGSTER_HOME", str(root.parent / "dagster"))
    (root.parent / "dagster").mkdir(exist_ok=True)
    assert main(["model", "rollback", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "embedding-assets model: nothing to roll back to: no model served before the current one"
    assert main(["model", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["role"], r["dimension"], r["complete"]) for r in rows] == [
        (HASHING, "serving", 384, True)
    ]
    assert {"name", "role", "dimension", "max_seq_length", "complete"} <= set(rows[0])


def test_a_candidate_of_another_dimension_is_built_evaluated_promoted_and_rolled_back(
    root: Path, synced: PipelineResource, instance: dg.DagsterInstance
) -> None:
    embedded_before = materialization_count(instance, "embeddings")
    added = add_model(instance, synced, "small@128", echo=_quiet)
    build = added.build
    assert build is not None and not build.failed and not build.by_daemon
    # The shadow build is a Dagster backfill (the UI's Backfills page lists it) with its runs.
    backfill = instance.get_backfill(build.backfill_id)
    assert backfill is not None and backfill.status == BulkActionStatus.COMPLETED_SUCCESS
    assert backfill.tags["ea/shadow"] == "hashing-small-128"
    runs = shadow_runs(instance, build.backfill_id)
    assert len(runs) == 3 and all(r.is_success for r in runs)  # two batches, then its evaluation
    table = lancedb.connect(str(root / "lancedb")).open_table("chunks__hashing_small_128")
    assert table.schema.field("vector").type.list_size == 128
    rows = {r.name: r for r in list_models(synced)}
    assert rows["hashing-small-128"].complete and rows["hashing-small-128"].dimension == 128
    evaluated = {e.name: e for e in evaluate(instance, synced)}
    assert set(evaluated) == {HASHING, "hashing-small-128"}
    assert {"vector/recall@10", "fts/mrr@10", "hybrid/ndcg@10"} <= set(evaluated[HASHING].figures)
    # fts does not depend on the model: the same figures for both
    assert (
        evaluated[HASHING].figures["fts/recall@10"] == evaluated["hashing-small-128"].figures["fts/recall@10"]
    )
    done = promote(instance, synced, "hashing-small-128", force=True)
    assert synced.registry_state().serving.name == "hashing-small-128"  # type: ignore[union-attr]
    assert done.previous == HASHING
    _searches_during_rollback_and_promote_never_mix_models(root, instance, synced)
    embedded = materialization_count(instance, "embeddings")
    assert rollback(synced) == (HASHING, "hashing-small-128")
    assert materialization_count(instance, "embeddings") == embedded  # instant: nothing re-embedded
    state = synced.registry_state()
    assert state.get("hashing-small-128").role == "candidate" and state.serving.name == HASHING  # type: ignore[union-attr]
    assert embedded > embedded_before
    # A new batch reaches every active model.
    (root / "landing" / "helpdesk" / "2026-11-15").mkdir()
    (root / "landing" / "helpdesk" / "2026-11-15" / "t.jsonl").write_text(
        json.dumps({"ticket_id": "T-7001", "subject": "Kettle: lid", "body": "The lid sticks on my kettle.",
                    "product": "kettle", "priority": "low", "status": "open", "modified": "2026-11-14T10:00:00Z"}) + "\n"
    )  # fmt: skip
    summary = sync(instance, synced, echo=_quiet)
    assert summary.ok, summary.render()
    assert {r.name: r.complete for r in list_models(synced)} == {HASHING: True, "hashing-small-128": True}


def _searches_during_rollback_and_promote_never_mix_models(
    root: Path, instance: dg.DagsterInstance, synced: PipelineResource
) -> None:
    """Searches run while another thread flips the serving model back and forth. Each answers
    from one model: its query vector fits that model's table (384 against 128 dimensions would
    fail), and every hit is a chunk of that model's table, with that table's text."""
    from embedding_assets.index.searcher import run_search

    tables = {
        name: pl.from_arrow(lancedb.connect(str(root / "lancedb")).open_table(f"chunks__{slug}").to_arrow())
        for name, slug in ((HASHING, "hashing_embedder_v1"), ("hashing-small-128", "hashing_small_128"))
    }
    texts = {name: dict(zip(t["chunk_id"], t["text"], strict=True)) for name, t in tables.items()}
    done, errors = threading.Event(), list[BaseException]()

    def flip() -> None:
        try:
            for _ in range(2):
                rollback(synced)
                promote(instance, synced, "hashing-small-128", force=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen: set[str] = set()
    while not done.is_set() or not seen:
        for result in run_search(
            synced.settings(), ["kettle lid sticks", "thermostat schedule"], 5, "hybrid", None
        ):
            seen.add(result["model"])
            for hit in result["hits"]:
                assert texts[result["model"]].get(hit["chunk_id"]) == hit["text"], (result["model"], hit)
    flipper.join()
    assert not errors, errors
    # Both served in turn (each promote evaluates for seconds while the rolled-back model serves).
    assert seen == {HASHING, "hashing-small-128"}


def test_a_canary_naming_unknown_documents_is_an_error_naming_its_line(
    synced: PipelineResource, instance: dg.DagsterInstance, canary: Path
) -> None:
    with (canary / "helpdesk.jsonl").open("a") as out:
        out.write(json.dumps({"query": "ghost", "relevant": ["helpdesk:T-0000"], "kind": "plain"}) + "\n")
    lines = (canary / "helpdesk.jsonl").read_text().count("\n")
    with pytest.raises(
        RegistryError, match=rf"helpdesk.jsonl:{lines}: helpdesk:T-0000\. Fix the canary file"
    ):
        evaluate(instance, synced)


def test_training_export_is_versioned_split_by_document_and_leaves_out_the_canary(
    root: Path, synced: PipelineResource, canary: Path
) -> None:
    first = export_training(synced)
    assert first.committed and first.train > 0 and first.dev > 0
    triples = pl.read_delta(str(root / "lake" / TRIPLES_TABLE))
    held_out = {
        d
        for f in canary.glob("*.jsonl")
        for line in f.read_text().splitlines()
        for d in json.loads(line)["relevant"]
    }
    assert not held_out & (set(triples["doc_id"]) | set(triples["negative_doc_id"]))
    assert (triples["doc_id"] != triples["negative_doc_id"]).all()
    assert triples.group_by("doc_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert triples["gold_version"].unique().to_list() == [first.gold_version]
    again = export_training(synced)
    assert (
        not again.committed and again.delta_version == first.delta_version
    )  # unchanged gold: no new version
