"""Observable sources: each source's landing folders (a data version per batch), and the settings
the assets consume (contracts, chunker, model, index), so that Dagster's provenance and its
"unsynced" view cover them too."""

from collections.abc import Iterator
from typing import TypeAlias

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.keys import BATCHES, batches, layer_key, models
from embedding_assets.defs.resources import (
    CANARY_QUERIES,
    CHUNKER_SETTINGS,
    EMBEDDING_MODEL,
    INDEX_SETTINGS,
    PipelineResource,
    contract_key,
)
from embedding_assets.ingest.landing import LandingBatch, scan_landing

AssetEvent: TypeAlias = dg.AssetObservation | dg.AssetMaterialization


def landing_events(
    batch: LandingBatch, content_hash: str
) -> list[dg.AssetObservation | dg.AssetMaterialization]:
    """What observing one landing partition records. The observation makes the bronze partition
    unsynced when the version moved; the materialisation, with the same version, is how a
    partitioned source's partition counts as present in the UI (it counts materialisations only),
    and it lets Dagster's provenance of bronze carry the version."""
    tags = {"dagster/data_version": content_hash}
    metadata = {"files": len(batch.files), "bytes": sum(size for _, size, _ in batch.stats)}
    key = layer_key("landing", batch.source)
    return [
        dg.AssetObservation(asset_key=key, partition=batch.batch, tags=tags, metadata=metadata),
        dg.AssetMaterialization(asset_key=key, partition=batch.batch, tags=tags, metadata=metadata),
    ]


def landing_source(contract: Contract) -> dg.SourceAsset:
    source = contract.source

    @dg.observable_source_asset(
        key=layer_key("landing", source),
        partitions_def=batches,
        group_name=f"source_{source}",
        description=f"Files dropped into landing/{source}/<batch>/ ({contract.format}); "
        "the data version of a batch is the sha256 of its files.",
        metadata={"contract": str(contract.path), "owner": contract.owner or "", "format": contract.format},
        tags={"dagster/kind/landing": ""},
    )
    def landing(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.DataVersionsByPartition:
        known = set(context.instance.get_dynamic_partitions(BATCHES))
        scan = scan_landing(pipeline.settings().landing_dir, {source: contract})
        versions = {}
        for batch in (b for b in scan.batches if b.batch in known):
            versions[batch.batch] = batch.content_hash()
            context.log_event(landing_events(batch, versions[batch.batch])[1])  # type: ignore[arg-type]
        return dg.DataVersionsByPartition(versions)

    return landing


def settings_source(contracts: dict[str, Contract]) -> dg.AssetsDefinition:
    """One observation step for the settings all models share: cheap (file hashes and values)."""
    specs = [
        dg.AssetSpec(
            contract_key(s),
            group_name=f"source_{s}",
            description=f"The contract {c.path.name}.",
            kinds={"yaml"},
        )
        for s, c in contracts.items()
    ] + [
        dg.AssetSpec(
            INDEX_SETTINGS, group_name="index", description="ANN and fusion settings, metadata columns."
        ),
        dg.AssetSpec(
            CANARY_QUERIES, group_name="index", description="The labelled canary queries (data/canary)."
        ),
    ]

    @dg.multi_observable_source_asset(specs=specs, name="settings")
    def settings(pipeline: PipelineResource) -> Iterator[dg.ObserveResult]:
        for name, version in pipeline.setting_versions().items():
            yield dg.ObserveResult(asset_key=name, data_version=dg.DataVersion(version))

    return settings


def model_setting_source(name: str, description: str) -> dg.SourceAsset:
    """A setting with one version per registered model (its chunker, its embedding identity)."""

    @dg.observable_source_asset(
        key=name, partitions_def=models, group_name="embeddings", description=description
    )
    def observe(pipeline: PipelineResource) -> dg.DataVersionsByPartition:
        state = pipeline.registry_state()
        active = pipeline.active_models(state)
        return dg.DataVersionsByPartition({s.name: pipeline.model_setting_versions(s)[name] for s in active})

    return observe


def model_setting_sources() -> list[dg.SourceAsset]:
    return [
        model_setting_source(
            CHUNKER_SETTINGS, "Chunk size and overlap, and the model's tokenizer and maximum length."
        ),
        model_setting_source(EMBEDDING_MODEL, "The embedding model's identity (its weights) and revision."),
    ]
