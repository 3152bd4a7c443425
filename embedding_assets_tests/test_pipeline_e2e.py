"""End to end on real Delta tables, a real LanceDB and real Dagster runs (hashing embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets.ingest.landing import LandingBatch
from embedding_assets_tests.conftest import (
    HASHING,
    Index,
    lake_snapshot,
    make_pipeline,
    materialise,
    materialise_batch,
    materialization_count,
    memo_of,
    open_index,
    partition_of,
    table_versions,
)

pytestmark = pytest.mark.slow
B1, B2 = "2026-11-01", "2026-11-08"


def _store(root: Path) -> Index:
    emb = HashingEmbedder()
    return open_index(str(root / "lancedb"), emb.model_id, emb.dimension)


def _index_rows(root: Path) -> pl.DataFrame:
    return _store(root).table.read(["chunk_id", "doc_id", "chunk_hash", "batch", "text"]).sort("chunk_id")


def _quiet(_: str) -> None:
    pass


def test_sync_builds_every_layer_and_applies_updates_and_deletes(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    assert dict(summary.runs_by) == {"batch": 2, "batch_model": 2, "model": 1}
    assert summary.new_batches == [B1, B2]
    assert summary.totals["rows_read"] == 374 and summary.totals["rows_quarantined"] == 2
    assert summary.reconciliation.startswith("ok")

    silver = pl.read_delta(str(root / "lake" / "silver" / "helpdesk"))
    # batch 2 adds an update and a deletion marker; T-1088 repeats T-1056's text and is dropped as a duplicate
    assert silver.height == 110 + 40 + 2 - 1
    quarantine = pl.read_delta(str(root / "lake" / "quarantine" / "helpdesk"))
    invalid = quarantine.filter(pl.col("kind") == "invalid")
    assert sorted(invalid["reason"].str.split(":").list.first().to_list()) == ["invalid_json", "missing_id"]
    dropped = quarantine.filter(pl.col("kind") == "duplicate")
    # the older of the two is kept, whatever the row order
    assert dropped.select("doc_id", "duplicate_of").rows() == [("helpdesk:T-1056", "helpdesk:T-1088")]

    index = _index_rows(root)
    assert index["chunk_id"].is_duplicated().sum() == 0
    docs = set(index["doc_id"])
    # deletions by marker: a ticket and a guide are gone; the product the catalogue retired lives on
    # with the web shop's fields (a deletion in one source removes only that source's fields)
    assert "helpdesk:T-1013" not in docs and "guides:guide-005" not in docs
    assert "product:LH-DOO-042" in docs
    # the update replaced the ticket's text, and the shorter guide lost its surplus chunks
    t1007 = index.filter(pl.col("doc_id") == "helpdesk:T-1007")
    assert t1007["batch"].to_list() == [B2] and "replacement" in t1007["text"][0]
    guide3 = index.filter(pl.col("doc_id") == "guides:guide-003")
    gold_chunks = pl.read_delta(str(root / "lake" / "gold" / "chunks"))
    assert (
        guide3.height
        == gold_chunks.filter((pl.col("doc_id") == "guides:guide-003") & (pl.col("batch") == B2)).height
    )
    assert set(guide3["batch"]) == {B2}

    store = _store(root)
    hits = store.reader.search("replacement thermostat arrived", None, k=5, mode="fts")
    assert hits[0]["doc_id"] == "helpdesk:T-1007"
    for mode in ("fts", "hybrid"):
        vec = HashingEmbedder().encode(["deleted ticket T-1013"])[0]
        found = store.reader.search("schedule resets overnight", vec, k=50, mode=mode)  # type: ignore[arg-type]
        assert "helpdesk:T-1013" not in {h["doc_id"] for h in found}


def test_second_sync_launches_no_runs_and_embeds_nothing(
    pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    sync(instance, pipeline, echo=_quiet)
    events_before = materialization_count(instance, "embeddings")
    again = sync(instance, pipeline, echo=_quiet)
    assert again.ok and again.runs == 0
    assert again.totals["chunks_embedded"] == 0
    assert materialization_count(instance, "embeddings") == events_before


def test_materialising_an_unchanged_partition_commits_nothing_and_keeps_its_versions(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    sync(instance, pipeline, echo=_quiet)
    lake_before, index_before, versions_before = lake_snapshot(root), _index_rows(root), table_versions(root)
    data_versions = {
        k: _data_version(instance, k, B2) for k in ("silver_helpdesk", "gold_chunks", "embeddings")
    }
    for _ in range(2):
        result = materialise_batch(pipeline, instance, B2)
        assert result.success
        assert set(memo_of(result).values()) == {"kept"} and len(memo_of(result)) == 22
    assert table_versions(root) == versions_before  # not one Delta or LanceDB commit
    assert {k: _data_version(instance, k, B2) for k in data_versions} == data_versions
    lake_after, index_after = lake_snapshot(root), _index_rows(root)
    assert lake_after.keys() == lake_before.keys()
    for table, frame in lake_before.items():
        assert frame.equals(lake_after[table]), table
    assert index_before.equals(index_after)
    # A run tag rebuilds anyway, and the idempotent writers still commit nothing.
    forced = materialise_batch(pipeline, instance, B2, tags={"ea/force": "true"})
    assert set(memo_of(forced).values()) == {"rebuilt"}
    assert table_versions(root) == versions_before


def _data_version(instance: dg.DagsterInstance, key: str, batch: str) -> str:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition_of(key, batch)]),
        limit=1,
    ).records[0]
    return record.asset_materialization.tags["dagster/data_version"]  # type: ignore[union-attr,index]


def test_a_new_instance_over_an_existing_lake_rebuilds_by_reading_and_commits_nothing(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    sync(instance, pipeline, echo=_quiet)
    versions, index = table_versions(root), _index_rows(root)
    (tmp_path / "wiped").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "wiped")) as wiped:
        summary = sync(wiped, pipeline, echo=_quiet)
    assert summary.ok and summary.runs_by["batch"] == 2 and summary.runs_by["batch_model"] == 2
    assert summary.totals["chunks_embedded"] == 0
    assert table_versions(root) == versions
    assert _index_rows(root).equals(index)


def test_same_rows_in_different_bytes_stop_at_silver(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    sync(instance, pipeline, echo=_quiet)
    path = root / "landing" / "helpdesk" / B1 / "tickets.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    shuffled = [json.dumps(dict(reversed(list(r.items())))) for r in reversed(rows)]
    path.write_bytes("\r\n".join(shuffled).encode() + b"\r\n")
    counts = {
        k: materialization_count(instance, k, B1)
        for k in ("bronze_helpdesk", "silver_helpdesk", "gold_documents", "embeddings", "vector_index")
    }
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok
    after = {k: materialization_count(instance, k, B1) for k in counts}
    assert after["bronze_helpdesk"] == counts["bronze_helpdesk"] + 1
    assert after["silver_helpdesk"] == counts["silver_helpdesk"] + 1
    for key in ("gold_documents", "embeddings", "vector_index"):
        assert after[key] == counts[key], key
    assert materialization_count(instance, "bronze_helpdesk", B2) == 1
    # bronze is append-only: the re-delivery is kept beside the first one
    bronze = pl.read_delta(str(root / "lake" / "bronze" / "helpdesk")).filter(pl.col("batch") == B1)
    assert sorted(bronze["_delivery_seq"].unique().to_list()) == [1, 2]


def test_one_changed_document_reembeds_only_its_chunks(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    sync(instance, pipeline, echo=_quiet)
    path = root / "landing" / "helpdesk" / B1 / "tickets.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["body"] += " Update: the customer found the manual."
    lines[0] = json.dumps(first)
    path.write_text("\n".join(lines) + "\n")
    b2_before = {
        k: materialization_count(instance, k, B2) for k in ("bronze_helpdesk", "embeddings", "vector_index")
    }
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok
    assert summary.totals["chunks_embedded"] == 1
    assert {k: materialization_count(instance, k, B2) for k in b2_before} == b2_before
    doc = _index_rows(root).filter(pl.col("doc_id") == f"helpdesk:{first['ticket_id']}")
    assert "found the manual" in doc["text"][0]


def test_landing_sensor_registers_observes_and_asks_for_the_runs_of_a_changed_batch(
    root: Path,
    pipeline: PipelineResource,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defs = build_defs(Path(pipeline.contracts_dir), pipeline)  # type: ignore[arg-type]
    sensor = defs.resolve_sensor_def("landing_sensor")
    (root / "landing" / "helpdesk" / "bad..batch").mkdir()
    cursor: list[str | None] = [None]
    hashed: list[str] = []
    content_hash = LandingBatch.content_hash
    monkeypatch.setattr(
        LandingBatch, "content_hash", lambda self: hashed.append(self.key) or content_hash(self)
    )

    def tick() -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=instance, resources={"pipeline": pipeline}, cursor=cursor[0]
        ) as ctx:
            result: dg.SensorResult = sensor(ctx)  # type: ignore[assignment]
        cursor[0] = result.cursor
        return result

    first = tick()
    assert "refused batch folder 'helpdesk/bad..batch': contains '..'" in capfd.readouterr().err
    added = [(r.partitions_def_name, r.partition_keys) for r in first.dynamic_partitions_requests]  # type: ignore[union-attr]
    assert added == [("batches", [B1, B2]), ("models", [HASHING])]
    assert [r.partition_key for r in first.run_requests] == [B1, B2]  # type: ignore[union-attr]
    assert len(first.run_requests[0].asset_selection) == 19  # the batch's graph up to gold/documents  # type: ignore[arg-type]
    assert "new landing_helpdesk" in first.run_requests[0].tags["ea/reason"]  # type: ignore[index]
    landing = {
        (e.asset_key.to_user_string(), e.partition)
        for e in first.asset_events
        if e.partition and e.asset_key.to_user_string().startswith("landing_")
    }
    assert len(landing) == 12 and len(hashed) == 12  # six sources, two batches

    sync(instance, pipeline, echo=_quiet)
    hashed.clear()
    assert tick().run_requests == [] and hashed == []  # nothing moved: nothing hashed, nothing asked

    csv = root / "landing" / "catalog" / B2 / "products.csv"
    csv.write_text(csv.read_text().replace("Known issue", "Known problem", 1))
    changed = tick()
    assert hashed == [f"catalog/{B2}"]
    assert [(r.partition_key, len(r.asset_selection)) for r in changed.run_requests] == [(B2, 19)]  # type: ignore[union-attr,arg-type]
    assert changed.run_requests[0].tags["ea/reason"] == "changed landing_catalog"  # type: ignore[union-attr]
    assert not changed.dynamic_partitions_requests
    assert tick().run_requests == []  # asked once: the cursor moved on
    # Each run the sensor asks for, done, leads to the next: the batch, its model run, the evaluation.
    assert materialise(pipeline, instance, B2, "batch").success
    model_run = tick().run_requests
    assert [(r.partition_key, len(r.asset_selection)) for r in model_run] == [(f"{B2}|{HASHING}", 3)]  # type: ignore[union-attr,arg-type]
    assert model_run[0].tags["ea/reason"] == "gold_documents changed"  # type: ignore[index]
    assert materialise(pipeline, instance, f"{B2}|{HASHING}", "batch_model").success
    assert [r.partition_key for r in tick().run_requests] == [HASHING]  # type: ignore[union-attr]
    assert materialise(pipeline, instance, HASHING, "model").success
    assert tick().run_requests == []
    hashed.clear()
    csv.touch()  # the same bytes, a new mtime: hashed again, but nothing to ask for
    assert tick().run_requests == [] and hashed == [f"catalog/{B2}"]


def test_new_jsonl_source_needs_only_a_contract_and_files(root: Path, instance: dg.DagsterInstance) -> None:
    (root / "contracts" / "reviews.yaml").write_text(
        "source: reviews\nowner: reviews@example.com\nformat: jsonl\nid: review_id\ntext: [headline, review]\nupdated_at: written\n"
        "metadata: [stars]\nfields:\n  review_id: {type: str, required: true}\n  stars: {type: int}\n"
        "  written: {type: datetime}\n"
    )
    batch = root / "landing" / "reviews" / "2026-11-15"
    batch.mkdir(parents=True)
    (batch / "reviews.jsonl").write_text(
        json.dumps(
            {
                "review_id": "R1",
                "headline": "Quiet purifier",
                "review": "The purifier is silent at night.",
                "stars": 5,
                "written": "2026-11-14T08:00:00Z",
            }
        )
        + "\n"
    )
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert summary.ok, summary.render()
    assert summary.new_batches == [B1, B2, "2026-11-15"]
    index = _index_rows(root)
    assert index.filter(pl.col("doc_id") == "reviews:R1").height == 1
    assert materialization_count(instance, "silver_reviews", "2026-11-15") == 1
