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
from embedding_assets_tests.conftest import (
    Index,
    lake_snapshot,
    make_pipeline,
    materialization_count,
    open_index,
)

pytestmark = pytest.mark.slow
B1, B2 = "2026-11-01", "2026-11-08"


def _store(root: Path) -> Index:
    emb = HashingEmbedder()
    return open_index(str(root / "lancedb"), emb.model_id, emb.dimension)


def _index_rows(root: Path) -> pl.DataFrame:
    return _store(root).read(["chunk_id", "doc_id", "chunk_hash", "batch", "text"]).sort("chunk_id")


def _quiet(_: str) -> None:
    pass


def test_sync_builds_every_layer_and_applies_updates_and_deletes(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok, summary.render()
    assert summary.runs == 2 and summary.new_batches == [B1, B2]
    assert summary.totals["rows_read"] == 302 and summary.totals["rows_quarantined"] == 2
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
    # deletions by marker in all three sources
    assert "helpdesk:T-1013" not in docs and "guides:guide-005" not in docs
    retired = (
        pl.read_delta(str(root / "lake" / "gold" / "documents"))
        .filter(pl.col("deleted") & (pl.col("source") == "catalog"))["doc_id"]
        .to_list()
    )
    assert len(retired) == 1 and retired[0] not in docs
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


def test_materialising_a_partition_twice_is_idempotent(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    sync(instance, pipeline, echo=_quiet)
    lake_before, index_before = lake_snapshot(root), _index_rows(root)
    job = build_defs(Path(pipeline.contracts_dir), pipeline).resolve_implicit_global_asset_job_def()  # type: ignore[arg-type]
    for _ in range(2):
        result = job.execute_in_process(instance=instance, partition_key=B2)
        assert result.success
        embedded = [
            e.step_materialization_data.materialization.metadata["chunks_embedded"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey("embeddings")
        ]
        assert embedded == [0]  # every vector comes from the cache
    lake_after, index_after = lake_snapshot(root), _index_rows(root)
    assert lake_after.keys() == lake_before.keys()
    for table, frame in lake_before.items():
        assert frame.equals(lake_after[table]), table
    assert index_before.equals(index_after)
    assert index_after["chunk_id"].is_duplicated().sum() == 0


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
        for k in ("bronze/helpdesk", "silver/helpdesk", "gold/documents", "embeddings", "vector_index")
    }
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok
    after = {k: materialization_count(instance, k, B1) for k in counts}
    assert after["bronze/helpdesk"] == counts["bronze/helpdesk"] + 1
    assert after["silver/helpdesk"] == counts["silver/helpdesk"] + 1
    for key in ("gold/documents", "embeddings", "vector_index"):
        assert after[key] == counts[key], key
    assert materialization_count(instance, "bronze/helpdesk", B2) == 1
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
        k: materialization_count(instance, k, B2) for k in ("bronze/helpdesk", "embeddings", "vector_index")
    }
    summary = sync(instance, pipeline, echo=_quiet)
    assert summary.ok
    assert summary.totals["chunks_embedded"] == 1
    assert {k: materialization_count(instance, k, B2) for k in b2_before} == b2_before
    doc = _index_rows(root).filter(pl.col("doc_id") == f"helpdesk:{first['ticket_id']}")
    assert "found the manual" in doc["text"][0]


def test_landing_sensor_registers_requests_and_stays_quiet(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, caplog: pytest.LogCaptureFixture
) -> None:
    defs = build_defs(Path(pipeline.contracts_dir), pipeline)  # type: ignore[arg-type]
    sensor = defs.resolve_sensor_def("landing_sensor")
    (root / "landing" / "helpdesk" / "bad..batch").mkdir()

    def tick() -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, resources={"pipeline": pipeline}) as ctx:
            return sensor(ctx)  # type: ignore[return-value]

    first = tick()
    assert "refused batch folder helpdesk/'bad..batch': contains '..'" in caplog.text
    assert first.dynamic_partitions_requests[0].partition_keys == [B1, B2]  # type: ignore[union-attr]
    assert [r.partition_key for r in first.run_requests] == [B1, B2]  # type: ignore[union-attr]
    assert len(first.run_requests[0].asset_selection) == 13  # type: ignore[arg-type,index]
    assert {e.asset_key.to_user_string() for e in first.asset_events} == {
        "landing/helpdesk",
        "landing/catalog",
        "landing/guides",
    }

    sync(instance, pipeline, echo=_quiet)
    assert tick().run_requests == []

    csv = root / "landing" / "catalog" / B2 / "products.csv"
    csv.write_text(csv.read_text().replace("Known issue", "Known problem", 1))
    changed = tick()
    assert [(r.partition_key, r.asset_selection) for r in changed.run_requests] == [  # type: ignore[union-attr]
        (B2, [dg.AssetKey(["bronze", "catalog"])])
    ]
    assert not changed.dynamic_partitions_requests


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
    assert materialization_count(instance, "silver/reviews", "2026-11-15") == 1
