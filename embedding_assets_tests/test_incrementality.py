"""Only what changed is redone: counted from the Dagster event log, on real Delta, LanceDB and runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest

from embedding_assets.core import faults
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.forecast import forecast
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import Options, sync
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets_tests.conftest import (
    index_snapshot,
    make_pipeline,
    materialise_batch,
    materialization_count,
    open_index,
    partition_of,
)

pytestmark = pytest.mark.slow
B1, B2 = "2026-11-01", "2026-11-08"
ALL_ASSETS = [
    *(
        f"{layer}_{s}"
        for layer in ("bronze", "silver", "quarantine")
        for s in ("catalog", "guides", "helpdesk")
    ),
    "gold_documents",
    "gold_chunks",
    "embeddings",
    "vector_index",
]


def _quiet(_: str) -> None:
    pass


@pytest.fixture(autouse=True)
def _no_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()


def _counts(instance: dg.DagsterInstance, batch: str) -> dict[str, int]:
    return {k: materialization_count(instance, k, batch) for k in ALL_ASSETS}


def _embedded(instance: dg.DagsterInstance) -> list[int]:
    """chunks_embedded of every embeddings materialisation, oldest first."""
    records = instance.fetch_materializations(dg.AssetKey("embeddings"), limit=1000, ascending=True).records
    return [int(r.asset_materialization.metadata["chunks_embedded"].value) for r in records]  # type: ignore[union-attr,arg-type]


def _latest_metadata(instance: dg.DagsterInstance, key: str, batch: str) -> dict[str, object]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey.from_user_string(key), asset_partitions=[partition_of(key, batch)]
        ),
        limit=1,
        ascending=False,
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}  # type: ignore[union-attr]


def _gold_chunks(root: Path, batch: str) -> pl.DataFrame:
    return pl.read_delta(str(root / "lake" / "gold" / "chunks")).filter(pl.col("batch") == batch)


def test_one_edited_document_reembeds_exactly_its_changed_chunks(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    assert sync(instance, pipeline, echo=_quiet).ok
    before_b1, before_b2 = _counts(instance, B1), _counts(instance, B2)
    old_chunks = _gold_chunks(root, B2)
    guide = root / "landing" / "guides" / B2 / "guide-003.md"
    text = guide.read_text()
    guide.write_text(text.rstrip() + "\n\nAfter a firmware update, re-pair the remote before you test it.\n")
    summary = sync(instance, pipeline, echo=_quiet)
    # one run per shape: the batch to gold/documents, its model partition, the model's evaluation
    assert summary.ok and dict(summary.runs_by) == {"batch": 1, "batch_model": 1, "model": 1}
    new_chunks = _gold_chunks(root, B2)
    changed = new_chunks.join(old_chunks, on=["chunk_id", "chunk_hash"], how="anti").height
    assert changed >= 1
    assert summary.totals["chunks_embedded"] == changed
    assert _counts(instance, B1) == before_b1  # zero new materialisations in the other batch
    after_b2 = _counts(instance, B2)
    assert {k for k in ALL_ASSETS if after_b2[k] != before_b2[k]} == {
        "bronze_guides",
        "silver_guides",
        "quarantine_guides",
        "gold_documents",
        "gold_chunks",
        "embeddings",
        "vector_index",
    }


def test_snapshot_source_deletes_what_a_batch_no_longer_lists(
    root: Path, instance: dg.DagsterInstance
) -> None:
    (root / "contracts" / "stock.yaml").write_text(
        "source: stock\nowner: stock@example.com\nformat: jsonl\nid: sku\ntext: [name, note]\nsnapshot: true\n"
        "fields:\n  sku: {type: str, required: true}\n"
    )
    rows = {
        f"S{i}": {"sku": f"S{i}", "name": f"Part {i}", "note": f"spare part number {i} fits model {i}"}
        for i in range(6)
    }
    for batch, skus in ((B1, ["S0", "S1", "S2", "S3", "S4", "S5"]), (B2, ["S0", "S1", "S2", "S4", "S5"])):
        folder = root / "landing" / "stock" / batch
        folder.mkdir(parents=True)
        (folder / "stock.jsonl").write_text("".join(json.dumps(rows[s]) + "\n" for s in skus))
    pipeline = make_pipeline(root)
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    store = open_index(str(root / "lancedb"), HashingEmbedder().model_id, 384)
    docs = set(store.table.read(["doc_id"])["doc_id"])
    assert "stock:S3" not in docs and {"stock:S0", "stock:S5"} <= docs
    hits = store.reader.search("spare part number 3", None, k=20, mode="fts", source="stock")
    assert "stock:S3" not in {h["doc_id"] for h in hits}
    gold = pl.read_delta(str(root / "lake" / "gold" / "documents")).filter(pl.col("doc_id") == "stock:S3")
    assert gold.sort("batch")["deleted"].to_list() == [False, True]
    assert summary.reconciliation.startswith("ok")

    # A snapshot that would delete most of the source is held back by a blocking check.
    folder = root / "landing" / "stock" / "2026-11-15"
    folder.mkdir()
    (folder / "stock.jsonl").write_text(json.dumps(rows["S0"]) + "\n")
    held = sync(instance, pipeline, echo=_quiet)
    assert not held.ok and held.blocked["2026-11-15"][0].startswith("gold_documents: snapshot_deletions")
    assert {"stock:S1", "stock:S2"} <= set(store.table.read(["doc_id"])["doc_id"])


def test_out_of_order_backfill_never_overwrites_newer_content(
    root: Path, instance: dg.DagsterInstance
) -> None:
    held_back = root.parent / "held"
    sources = [f.name for f in (root / "landing").iterdir() if (f / B1).is_dir()]
    for source in sources:
        (held_back / source).mkdir(parents=True)
        shutil.move(root / "landing" / source / B1, held_back / source / B1)
    pipeline = make_pipeline(root)
    assert sync(instance, pipeline, echo=_quiet).ok  # the newer batch lands first
    newer = index_snapshot(root).filter(pl.col("doc_id") == "helpdesk:T-1007")
    for source in sources:
        shutil.move(held_back / source / B1, root / "landing" / source / B1)
    late = sync(instance, pipeline, echo=_quiet)  # then the older one arrives
    assert late.ok and late.new_batches == [B1]
    index = index_snapshot(root)
    t1007 = index.filter(pl.col("doc_id") == "helpdesk:T-1007")
    assert t1007.select("chunk_id", "batch", "text").equals(newer.select("chunk_id", "batch", "text"))
    assert "helpdesk:T-1013" not in set(index["doc_id"])  # deleted in the newer batch, stays deleted
    assert late.reconciliation.startswith("ok")
    # Re-materialising the older partition again changes nothing in the index, even forced.
    assert materialise_batch(pipeline, instance, B1, tags={"ea/force": "true"}).success
    assert index_snapshot(root).equals(index)


def test_a_new_model_is_a_candidate_built_as_a_shadow_in_its_own_table(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    from embedding_assets.defs.lifecycle import add_model
    from embedding_assets.defs.models import list_models

    assert sync(instance, pipeline, echo=_quiet).ok
    first = index_snapshot(root)
    # Setting EA_MODEL to another model switches nothing: sync says so and runs nothing.
    configured = sync(instance, make_pipeline(root, model="other-model"), echo=_quiet)
    assert configured.ok and configured.runs == 0
    assert any("EA_MODEL=other-model is not the serving model" in n for n in configured.notes)
    before = len(_embedded(instance))
    added = add_model(instance, pipeline, "other-model", echo=_quiet)
    assert added.spec.name == "hashing-other-model" and added.build is not None
    assert not added.build.failed and len(added.build.partitions) == 2
    assert sum(_embedded(instance)[before:]) == 378  # the shadow: every live chunk, for the new model
    db = lancedb.connect(str(root / "lancedb"))
    assert sorted(db.list_tables().tables) == ["chunks__hashing_embedder_v1", "chunks__hashing_other_model"]
    second = index_snapshot(root, "hashing-other-model")
    assert second["chunk_id"].to_list() == first["chunk_id"].to_list()
    assert not second["vector"].equals(first["vector"])  # never mixed: each table has its model's vectors
    assert index_snapshot(root).equals(first)  # search still reads the serving model's table
    rows = {r.name: r for r in list_models(pipeline)}
    assert rows["hashing-embedder-v1"].role == "serving" and rows["hashing-other-model"].role == "candidate"
    assert rows["hashing-other-model"].complete and rows["hashing-other-model"].rows == first.height
    again = sync(instance, pipeline, echo=_quiet)
    assert again.ok and again.runs == 0  # both models are built: nothing to do


def test_a_failed_run_in_an_older_partition_is_picked_up_again(
    pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an event that can be lost (data_version_changed after a failed run), and not only the
    newest partition (eager): the state comparison finds the stale older batch."""
    monkeypatch.setenv(faults.ENV, "gold.after_write=raise")  # fails every attempt, retries included
    failed = sync(instance, pipeline, echo=_quiet)
    assert not failed.ok and any("gold_documents" in f for f in failed.failed)
    assert materialization_count(instance, "gold_documents") == 0
    assert materialization_count(instance, "silver_helpdesk") == 2  # both batches got as far as silver
    monkeypatch.delenv(faults.ENV)
    healed = sync(instance, pipeline, echo=_quiet)
    assert healed.ok and healed.reconciliation.startswith("ok")
    assert materialization_count(instance, "gold_documents", B1) == 1
    assert materialization_count(instance, "silver_helpdesk", B1) == 1  # silver was not redone
    assert materialization_count(instance, "vector_index", B2) == 1


def test_transient_step_failure_is_retried_by_the_retry_policy(
    pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.ENV, "gold.after_write=raise*1,embed.encode=raise*1")
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    restarts = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_RESTARTED)
    )
    assert len(restarts) == 1  # gold/documents failed once and was re-run by Dagster's RetryPolicy
    meta = _latest_metadata(instance, "embeddings", B1)
    assert meta["retries"] == 1 and meta["chunks_failed"] == 0  # the encode call was retried in place


def test_a_poison_chunk_is_dead_lettered_and_the_batch_carries_on(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / "landing" / "helpdesk" / B1 / "tickets.jsonl"
    lines = path.read_text().splitlines()
    poisoned = json.loads(lines[3])
    poisoned["body"] += " POISON"
    lines[3] = json.dumps(poisoned)
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(faults.ENV, "embed.encode=raise-if:POISON")
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    dead = pl.read_delta(str(root / "lake" / "deadletter" / "embeddings"))
    assert dead["chunk_id"].to_list() == [f"helpdesk:{poisoned['ticket_id']}#0"]
    assert dead["attempts"].to_list() == [3] and "poison record" in dead["error"][0]
    index = index_snapshot(root)
    assert f"helpdesk:{poisoned['ticket_id']}" not in set(index["doc_id"])
    assert index.height == 370  # every other live chunk is indexed
    assert "dead-lettered 1" in summary.reconciliation and summary.reconciliation.startswith("ok")
    # Once the cause is fixed, re-driving the dead letters embeds that one chunk and nothing else.
    monkeypatch.delenv(faults.ENV)
    faults.reset()
    redriven = sync(instance, pipeline, echo=_quiet, options=Options(retry_dead_letters=True))
    assert redriven.ok and redriven.totals["chunks_embedded"] == 1
    assert pl.read_delta(str(root / "lake" / "deadletter" / "embeddings")).height == 0
    assert index_snapshot(root).height == 371


def test_too_many_failures_block_the_batch(
    root: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.ENV, "embed.encode=raise-if:e")  # nearly every chunk fails
    summary = sync(instance, make_pipeline(root, retry_attempts=1), echo=_quiet)
    # the model partitions are blocked (their batches' runs, up to gold/documents, are fine)
    assert not summary.ok and set(summary.blocked) == {partition_of("vector_index", b) for b in (B1, B2)}
    assert materialization_count(instance, "vector_index") == 0


def test_reconciliation_reports_drift_and_repair_fixes_it(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    from embedding_assets.defs.repair import repair_index

    assert sync(instance, pipeline, echo=_quiet).ok
    clean = index_snapshot(root)
    table = lancedb.connect(str(root / "lancedb")).open_table("chunks__hashing_embedder_v1")
    table.delete("doc_id IN ('helpdesk:T-1001', 'guides:guide-001')")  # behind the pipeline's back
    table.update(where="doc_id = 'helpdesk:T-1002'", values={"chunk_hash": "tampered"})
    missing = clean.filter(pl.col("doc_id").is_in(["helpdesk:T-1001", "guides:guide-001"])).height
    # Re-materialising one index partition runs the reconciliation check, which names the drift.
    job = build_defs(root / "contracts", pipeline).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_of("vector_index", B2),
        asset_selection=[dg.AssetKey("vector_index")],
    )
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "index_matches_gold")
    assert not check.passed
    assert check.metadata["missing"].value == missing and check.metadata["stale"].value == 1  # type: ignore[union-attr]
    report = repair_index(instance, pipeline)
    assert len(report.before.missing) == missing and len(report.before.stale) == 1
    assert report.after.ok and report.embedded == 0
    repaired = index_snapshot(root).drop("_rowid", strict=False)
    # The same rows and vectors; a repaired row's lineage names the gold/chunks version it was read at.
    assert repaired.drop("gold_version").equals(clean.drop("_rowid", "gold_version", strict=False))
    assert (repaired["gold_version"] >= clean["gold_version"]).all()
    observed = instance.fetch_observations(dg.AssetKey("vector_index"), limit=5).records
    assert observed and observed[0].asset_observation.metadata["chunks_written"].value == missing + 1  # type: ignore[union-attr]


def test_provenance_reproduces_a_past_index_state(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    assert sync(instance, pipeline, echo=_quiet).ok
    meta = _latest_metadata(instance, "vector_index", B2)
    for key in (
        "lancedb_version",
        "gold_chunks_delta_version",
        "embeddings_delta_version",
        "model_id",
        "model_revision",
        "chunker",
        "table",
    ):
        assert key in meta, key
    assert meta["chunker"] == "tokens=254,overlap=32" and meta["model_id"] == "hashing-embedder-v1"
    past_index = index_snapshot(root)
    past_chunks = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    path = root / "landing" / "helpdesk" / B2 / "tickets.jsonl"
    path.write_text(path.read_text().replace("replacement", "second replacement"))
    assert sync(instance, pipeline, echo=_quiet).ok
    assert not index_snapshot(root).equals(past_index)
    # Time travel with the recorded versions gives back exactly what that run produced.
    table = lancedb.connect(str(root / "lancedb")).open_table(str(meta["table"]))
    table.checkout(int(meta["lancedb_version"]))  # type: ignore[call-overload]
    assert pl.from_arrow(table.to_arrow()).sort("chunk_id").equals(past_index)  # type: ignore[union-attr]
    old = pl.read_delta(
        str(root / "lake" / "gold" / "chunks"), version=int(meta["gold_chunks_delta_version"])
    )  # type: ignore[call-overload]
    assert old.sort("chunk_id", "batch").equals(past_chunks.sort("chunk_id", "batch"))
    store = open_index(str(root / "lancedb"), "hashing-embedder-v1", 384)
    then = store.reader.search(
        "replacement thermostat", None, k=1, mode="fts", version=int(meta["lancedb_version"])
    )  # type: ignore[call-overload]
    assert "second replacement" not in then[0]["text"]


def test_dry_run_forecast_matches_what_sync_then_does(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    fresh = forecast(instance, pipeline)
    assert [b.batch for b in fresh.batches] == [
        B1,
        B2,
        partition_of("embeddings", B1),
        partition_of("embeddings", B2),
    ]
    assert fresh.chunks_to_embed == 378
    assert materialization_count(instance, "bronze_helpdesk") == 0 and not (root / "lake").exists()
    assert instance.get_dynamic_partitions("batches") == []  # nothing registered either
    first = sync(instance, pipeline, echo=_quiet)
    assert first.ok
    assert (first.totals["chunks_embedded"], first.totals["chunks_reused"]) == (
        fresh.chunks_to_embed,
        fresh.chunks_reused,
    )
    assert forecast(instance, pipeline).batches == []
    # Same rows in other bytes: the forecast knows it stops at silver, as the sync then does.
    path = root / "landing" / "helpdesk" / B1 / "tickets.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(dict(reversed(list(r.items())))) + "\n" for r in rows))
    csv = root / "landing" / "catalog" / B2 / "products.csv"
    csv.write_text(csv.read_text().replace("Known issue", "Known problem", 1))
    plan = {b.batch: b for b in forecast(instance, pipeline).batches}
    assert plan[B1].rebuilt == ["bronze_helpdesk", "quarantine_helpdesk", "silver_helpdesk"]
    assert (
        "embeddings" in plan[partition_of("embeddings", B2)].rebuilt
        and sum(b.chunks_to_embed for b in plan.values()) == 1
    )
    assert "estimated embedding time" in forecast(instance, pipeline).render()
    done = sync(instance, pipeline, echo=_quiet)
    assert done.totals["chunks_embedded"] == 1
    assert {k for k, n in done.rebuilt.items() if n} == {k for b in plan.values() for k in b.rebuilt} | {
        "search_index"
    }
    assert _embedded(instance)[-1] == 1
