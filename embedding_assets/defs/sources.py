"""Observable sources: each source's landing folders (a data version per batch), and the settings
the assets consume (contracts, chunker, model, index), so that Dagster's provenance and its
"unsynced" view cover them too."""

from collections.abc import Iterator
from typing import TypeAlias

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.keys import BATCHES, batches, layer_key
from embedding_assets.defs.resources import (
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
    """One observation step for every setting: cheap (file hashes and environment values)."""
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
            CHUNKER_SETTINGS, group_name="gold", description="Chunk size, overlap and the model's tokenizer."
        ),
        dg.AssetSpec(
            EMBEDDING_MODEL, group_name="embeddings", description="The embedding model and its revision."
        ),
        dg.AssetSpec(INDEX_SETTINGS, group_name="index", description="ANN settings and metadata columns."),
    ]

    @dg.multi_observable_source_asset(specs=specs, name="settings")
    def settings(pipeline: PipelineResource) -> Iterator[dg.ObserveResult]:
        for name, version in pipeline.setting_versions().items():
            yield dg.ObserveResult(asset_key=name, data_version=dg.DataVersion(version))

    return settings
