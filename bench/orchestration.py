"""5. Orchestration: one partition through Dagster against the same functions called directly,
and a sensor tick with no changes over many registered batches (the first tick, which hashes
every batch, and a steady one, which hashes nothing)."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from bench.common import ticket_rows, write_jsonl
from bench.datapath import bronze_to_gold
from embedding_assets.contracts.load import load_contracts
from embedding_assets.core.lake import Lake
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.keys import BATCHES, layer_key
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import register, sync
from embedding_assets.defs.triggers import settings_observations
from embedding_assets.embed.encode import CACHE_SCHEMA, embed_chunks
from embedding_assets.gold.chunking import chunk_documents
from embedding_assets.ingest.bronze import bronze_version
from embedding_assets.ingest.landing import scan_landing

REPO = Path(__file__).resolve().parents[1]
BATCH = "2026-11-01"


def _root(tmp: Path, docs: int, batches: int = 1) -> Path:
    (tmp / "contracts").mkdir(parents=True)
    shutil.copy(REPO / "data" / "contracts" / "helpdesk.yaml", tmp / "contracts")
    for b in range(batches):
        name = BATCH if batches == 1 else f"b{b:05d}"
        write_jsonl(
            tmp / "landing" / "helpdesk" / name / "t.jsonl", ticket_rows(docs, start=100_000 + b * docs)
        )
    return tmp


def _pipeline(root: Path) -> PipelineResource:
    return PipelineResource(
        landing_dir=str(root / "landing"),
        contracts_dir=str(root / "contracts"),
        lake_uri=str(root / "lake"),
        lancedb_uri=str(root / "lancedb"),
        embedder_kind="hashing",
        landing_settle_s=0,
    )


def direct(root: Path) -> int:
    """What the assets do for one partition, as plain function calls (no Dagster)."""
    pipeline = _pipeline(root)
    contracts = load_contracts(root / "contracts")
    lake, now = Lake(str(root / "lake")), datetime.now(UTC)
    documents = bronze_to_gold(contracts, root / "landing" / "helpdesk" / BATCH, lake)
    embedder = pipeline.embedder()
    chunks = chunk_documents(documents, pipeline.chunker())
    lake.overwrite_batch("gold/chunks", chunks, BATCH)
    cache = lake.read("embeddings", CACHE_SCHEMA)
    embedded = embed_chunks(chunks, cache, embedder, batch=BATCH, now=now)
    lake.overwrite_batch("embeddings", embedded.frame, BATCH)
    writer = pipeline.index_writer()
    vectors = chunks.join(embedded.frame.select("chunk_id", "vector"), on="chunk_id")
    writer.apply_batch(vectors, documents)
    writer.ensure_indexes()
    return vectors.height


def settle(instance: dg.DagsterInstance, pipeline: PipelineResource) -> int:
    """The state a synced instance holds for the sensor, written without running the pipeline:
    every batch registered, its bronze partition holding its landing delivery, and every setting
    observed. Returns the number of events recorded."""
    contracts = pipeline.contracts()
    scan = scan_landing(pipeline.settings().landing_dir, contracts)
    register(instance, scan)
    for batch in scan.batches:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=layer_key("bronze", batch.source),
                partition=batch.batch,
                tags={"dagster/data_version": bronze_version(batch.content_hash())},
            )
        )
    versions = pipeline.setting_versions(contracts)
    for event in settings_observations(versions, versions):
        instance.report_runless_asset_event(event)
    return len(scan.batches) + len(versions)


def tick(instance: dg.DagsterInstance, pipeline: PipelineResource, n_batches: int) -> dict[str, Any]:
    defs = build_defs(pipeline.settings().contracts_dir, pipeline)
    sensor = defs.resolve_sensor_def("landing_sensor")
    events = settle(instance, pipeline)
    cursor, ticks = None, []
    for _ in range(4):
        context = dg.build_sensor_context(
            instance=instance, resources={"pipeline": pipeline}, definitions=defs, cursor=cursor
        )
        started = time.perf_counter()
        result = sensor(context)
        ticks.append(time.perf_counter() - started)
        assert not result.run_requests, "a settled instance must request nothing"
        cursor = result.cursor
    assert len(instance.get_dynamic_partitions(BATCHES)) == n_batches
    return {
        "batches": n_batches,
        "events_recorded": events,
        "first_tick_s": round(ticks[0], 3),
        "tick_s": round(min(ticks[1:]), 3),
        "target": "tick_s < 2 s",
    }


def run(smoke: bool = False) -> dict[str, Any]:
    docs = 50 if smoke else 1_000
    n_batches = 50 if smoke else 10_000
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = _root(Path(tmp) / "dagster_run", docs)
        _pipeline(root).embedder().tokenizer()  # warm-up for both: the tokenizer loads once per process
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            started = time.perf_counter()
            assert sync(instance, _pipeline(root), echo=lambda _: None).ok
            dagster_s = time.perf_counter() - started
        root = _root(Path(tmp) / "direct_run", docs)
        started = time.perf_counter()
        direct(root)
        direct_s = time.perf_counter() - started
        out["partition"] = {
            "documents": docs,
            "dagster_s": round(dagster_s, 2),
            "direct_s": round(direct_s, 2),
            "overhead_s": round(dagster_s - direct_s, 2),
            "dagster_over_direct": round(dagster_s / direct_s, 3),
        }
        root = _root(Path(tmp) / "tick", 1, batches=n_batches)
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            out["no_change_tick"] = tick(instance, _pipeline(root), n_batches)
    return out
