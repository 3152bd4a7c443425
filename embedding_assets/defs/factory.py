from __future__ import annotations

from pathlib import Path

import dagster as dg

from embedding_assets.contracts.load import load_contracts
from embedding_assets.defs.assets import build_gold_assets, build_source_assets, embeddings, vector_index
from embedding_assets.defs.orchestration import pipeline_nodes
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sensors import build_landing_sensor


def build_assets(contracts_dir: Path) -> list[dg.AssetsDefinition]:
    contracts = load_contracts(contracts_dir)
    assets: list = []
    for contract in contracts.values():
        assets.extend(build_source_assets(contract))
    assets.extend(build_gold_assets(contracts))
    assets.extend([embeddings, vector_index])
    return assets


def build_defs(contracts_dir: Path, pipeline: PipelineResource | None = None) -> dg.Definitions:
    assets = build_assets(contracts_dir)
    nodes = pipeline_nodes(assets)
    return dg.Definitions(
        assets=assets,
        sensors=[build_landing_sensor(nodes)],
        resources={"pipeline": pipeline or PipelineResource(contracts_dir=str(contracts_dir))},
        # One process per run: the model and tokenizer load once per run instead of once per step,
        # which costs more than the per-source parallelism a multiprocess executor would give.
        executor=dg.in_process_executor,
    )
