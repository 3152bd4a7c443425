"""5. Orchestration overhead: one partition through Dagster against the same functions called
directly, and a no-change sensor tick with 1,000 registered batches."""

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
from embedding_assets.defs.orchestration import pipeline_nodes, plan_sync, register
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.state import inputs_metadata
from embedding_assets.defs.sync import sync
from embedding_assets.embed.encode import CACHE_SCHEMA, embed_chunks
from embedding_assets.gold.chunking import chunk_documents

REPO = Path(__file__).resolve().parents[1]
BATCH = "2026-11-01"


def _root(tmp: Path, docs: int, batches: int = 1) -> Path:
    (tmp / "contracts").mkdir(parents=True)
    shutil.copy(REPO / "data" / "contracts" / "helpdesk.yaml", tmp / "contracts")
    for b in range(batches):
        name = BATCH if batches == 1 else f"b{b:04d}"
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
    )


def direct(root: Path) -> int:
    """What the assets do for one partition, as plain function calls (no Dagster)."""
    pipeline = _pipeline(root)
    contracts = load_contracts(root / "contracts")
    lake, now = Lake(str(root / "lake")), datetime.now(UTC)
    documents = bronze_to_gold(contracts, root / "landing" / "helpdesk" / BATCH, lake)
    embedder = pipeline.embedder()
    chunks = chunk_documents(documents, pipeline.chunker(embedder))
    lake.overwrite_batch("gold/chunks", chunks, BATCH)
    cache = lake.read("embeddings", CACHE_SCHEMA)
    embedded = embed_chunks(chunks, cache, embedder, batch=BATCH, now=now)
    lake.overwrite_batch("embeddings", embedded.frame, BATCH)
    writer = pipeline.index_writer(embedder)
    vectors = chunks.join(embedded.frame.select("chunk_id", "vector"), on="chunk_id")
    writer.apply_batch(vectors, documents)
    writer.ensure_indexes()
    return vectors.height


def _settle(instance: dg.DagsterInstance, pipeline: PipelineResource, nodes: list[Any]) -> int:
    """Record, for every registered batch, materialisations whose consumed inputs equal the
    current ones: the state of a fully synced instance, written without running the pipeline."""
    plan = plan_sync(instance, nodes, pipeline, skip_busy=False)
    register(instance, plan)
    plan = plan_sync(instance, nodes, pipeline, skip_busy=False)
    sources = {**pipeline.config_versions(pipeline.contracts())}
    landing = plan.scan.hashes()
    events = 0
    for batch in plan.plans:
        versions = {**sources, "landing/helpdesk": landing[("helpdesk", batch)]}
        for node in nodes:
            inputs = {d: versions.get(d, "") for d in node.deps}
            versions[node.key] = f"v-{node.key}-{batch}"
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=dg.AssetKey.from_user_string(node.key),
                    partition=batch,
                    metadata=inputs_metadata(inputs),
                    tags={"dagster/data_version": versions[node.key]},
                )
            )
            events += 1
    return events


def run(smoke: bool = False) -> dict[str, Any]:
    docs = 50 if smoke else 1_000
    n_batches = 20 if smoke else 1_000
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
        pipeline = _pipeline(root)
        defs = build_defs(root / "contracts", pipeline)
        nodes = pipeline_nodes(list(defs.assets or []))  # type: ignore[arg-type]
        sensor = defs.resolve_sensor_def("landing_sensor")
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            events = _settle(instance, pipeline, nodes)
            ticks = []
            for _ in range(3):
                context = dg.build_sensor_context(
                    instance=instance, resources={"pipeline": pipeline}, definitions=defs
                )
                started = time.perf_counter()
                result = sensor(context)
                ticks.append(time.perf_counter() - started)
                assert not result.run_requests, "a settled instance must plan nothing"
        out["no_change_tick"] = {
            "batches": n_batches,
            "materialisations_recorded": events,
            "tick_s": round(min(ticks), 3),
            "target": "< 2 s",
        }
    return out
