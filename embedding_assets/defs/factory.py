"""One Definitions object: per-source assets from the contracts, the shared layers, the checks,
the sensor and the resource."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.contracts.load import read_contracts
from embedding_assets.contracts.model import Contract
from embedding_assets.defs.alerts import check_failure_alerts, run_failure_alerts
from embedding_assets.defs.bronze import bronze_asset
from embedding_assets.defs.embed import embeddings
from embedding_assets.defs.evaluate import search_index
from embedding_assets.defs.executors import executor_def
from embedding_assets.defs.freshness import freshness_sensor
from embedding_assets.defs.gold import gold_chunks, gold_documents_asset
from embedding_assets.defs.index import index_matches_gold, vector_index
from embedding_assets.defs.keys import batch_models, batches, models
from embedding_assets.defs.maintenance import lake_maintenance, maintenance_schedule
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sensors import build_landing_sensor
from embedding_assets.defs.silver import silver_asset
from embedding_assets.defs.sources import landing_source, model_setting_sources, settings_source
from embedding_assets.defs.stream import build_stream_sensor


def build_assets(
    contracts: dict[str, Contract], held: Sequence[str] = ()
) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    assets: list[dg.AssetsDefinition | dg.SourceAsset] = [
        settings_source(contracts),
        *model_setting_sources(),
    ]
    for contract in contracts.values():
        assets += [landing_source(contract), bronze_asset(contract), silver_asset(contract)]
    return [
        *assets,
        gold_documents_asset(contracts, held),
        gold_chunks,
        embeddings,
        vector_index,
        search_index,
    ]


SHAPES = {"batch": batches, "batch_model": batch_models, "model": models}


def materialisable_keys(assets: Sequence[object], shape: str = "batch") -> list[dg.AssetKey]:
    """Every asset a run of one partition shape selects: a batch's graph up to gold/documents, a
    batch and model's chunks, vectors and index, or a model's evaluation (the memoised assets skip
    what is current)."""
    found = (
        k
        for a in assets
        if isinstance(a, dg.AssetsDefinition) and a.is_materializable and a.partitions_def == SHAPES[shape]
        for k in a.keys
    )
    return sorted(found, key=lambda k: k.to_user_string())


def build_defs(contracts_dir: Path, pipeline: PipelineResource | None = None) -> dg.Definitions:
    found = read_contracts(contracts_dir)  # a broken contract holds back its source, not the location
    contracts = found.contracts
    assets = build_assets(contracts, list(found.problems))
    settings = pipeline.settings() if pipeline else Settings.from_env()
    return dg.Definitions(
        assets=assets,
        asset_checks=[index_matches_gold],
        jobs=[lake_maintenance],
        schedules=[maintenance_schedule(settings.maintenance_cron)],
        sensors=[
            build_landing_sensor(
                contracts,
                {shape: materialisable_keys(assets, shape) for shape in SHAPES},
                settings.sensor_interval_s,
                found.problems,
            ),
            freshness_sensor,
            run_failure_alerts,
            check_failure_alerts,
            *filter(None, [build_stream_sensor(contracts, settings.stream_interval_s)]),
        ],
        resources={"pipeline": pipeline or PipelineResource(contracts_dir=str(contracts_dir))},
        # Embedded: one process per run, so the model and tokenizer load once per run instead of
        # once per step (that costs more than per-source parallelism gives). EA_EXECUTOR=celery:
        # each step goes to a Celery worker.
        executor=executor_def(settings),
    )
