"""gold_documents (one row per document of the batch, all sources) and gold_chunks (the model's
tokenizer splits them)."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.faults import fault_point
from embedding_assets.core.lake import Lake
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.failures import classified
from embedding_assets.defs.keys import (
    GOLD_CHUNKS,
    GOLD_DOCUMENTS,
    batch_models,
    batches,
    layer_key,
    shape_tag,
)
from embedding_assets.defs.memo import Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import CHUNKER_SETTINGS, MODEL_SETTINGS, PipelineResource, contract_key
from embedding_assets.gold.chunking import CHUNK_SCHEMA, Chunker, chunk_documents, chunks_version
from embedding_assets.gold.documents import (
    GOLD_DOCUMENT_COLUMNS,
    latest_documents,
    snapshot_tombstones,
    union_documents,
    with_metadata_columns,
)
from embedding_assets.refine.report import CheckOutcome
from embedding_assets.refine.silver import documents_version
from embedding_assets.refine.tables import SILVER_SCHEMA

GOLD_DOC_SCHEMA = pl.Schema({c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS})
DOCUMENTS_CODE, CHUNKS_CODE = "gold-documents-1", "gold-chunks-2"  # chunks 2: Markdown split by sections


def tombstones_of(
    lake: Lake, contract: Contract, current: pl.DataFrame, batch: str
) -> tuple[pl.DataFrame, str]:
    """A snapshot source's deletions implied by this batch, and the problem if there are too many."""
    earlier = lake.read(f"silver/{contract.source}", SILVER_SCHEMA, pl.col("batch") < batch)
    found = snapshot_tombstones(current, earlier, batch)
    live_before = latest_documents(earlier).filter(~pl.col("deleted")).height
    limit = contract.max_snapshot_delete_rate
    if found.height and found.height > limit * live_before:
        return found, (
            f"{contract.source}: the snapshot deletes {found.height} of {live_before} documents "
            f"(more than max_delete_rate {limit:.0%})"
        )
    return found, ""


def documents_consumes(contracts: dict[str, Contract]) -> Consumes:
    return Consumes(
        assets=tuple(layer_key("silver", s) for s in contracts),
        settings=tuple(contract_key(s) for s in contracts),  # their metadata fields are gold's columns
        earlier=tuple(layer_key("silver", s) for s, c in contracts.items() if c.snapshot),
    )


def held_back(lake: Lake, held: Sequence[str], batch: str) -> str:
    """Why a batch's gold must not be rebuilt: a source whose contract is broken has documents in
    it, which a rebuild without the source would delete from gold and from the index."""
    present = [s for s in held if lake.count(f"silver/{s}", batch)]
    if not present:
        return ""
    return (
        f"batch {batch} holds documents of {', '.join(present)}, whose contract does not load: "
        "fix it (`embedding-assets sync` names the problem) and materialise again"
    )


def gold_documents_asset(contracts: dict[str, Contract], held: Sequence[str] = ()) -> dg.AssetsDefinition:
    snapshots = [s for s, c in contracts.items() if c.snapshot]
    consumes = documents_consumes(contracts)

    @dg.asset(
        key=GOLD_DOCUMENTS,
        deps=consumes.deps(),
        partitions_def=batches,
        tags=shape_tag("batch"),
        group_name="gold",
        kinds={"gold", "delta"},
        code_version=DOCUMENTS_CODE,
        retry_policy=STEP_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                "snapshot_deletions",
                asset=GOLD_DOCUMENTS,
                blocking=True,
                partitions_def=batches,
                description="A full-snapshot batch deletes no more than its contract's max_delete_rate.",
            )
        ],  # fmt: skip
    )
    @classified
    def gold_documents(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
        """One row per document of the batch, all sources unioned, doc ids namespaced by source; for
        snapshot sources, a tombstone for each earlier document the snapshot lacks."""
        lake, batch = pipeline.lake(), context.partition_key
        versions = pipeline.setting_versions(contracts)
        memo = Memo(context, consumed_versions(context.instance, consumes, batch, versions))
        decision = memo.decide(lambda _, previous: lake.count("gold/documents", batch) == previous.row_count)
        if decision.skip:
            yield from memo.kept(decision)
            return
        if why := held_back(lake, held, batch):
            raise dg.Failure(why, allow_retries=False)
        silvers = {s: lake.read_batch(f"silver/{s}", batch, SILVER_SCHEMA) for s in contracts}
        found = [tombstones_of(lake, contracts[s], silvers[s], batch) for s in snapshots]
        documents = with_metadata_columns(
            union_documents([*silvers.values(), *(t for t, _ in found)]), metadata_fields(contracts)
        )
        written = lake.overwrite_batch("gold/documents", documents, batch)
        fault_point("gold.after_write")
        problems = [p for _, p in found if p]
        deletions = sum(t.height for t, _ in found)
        check = CheckOutcome(
            "snapshot_deletions", not problems, True, "\n".join(problems) or f"{deletions} snapshot deletions",
            {"snapshot_deletions": float(deletions)},
        )  # fmt: skip
        metadata = {
            "dagster/row_count": documents.height,
            "deleted": int(documents["deleted"].sum()),
            "snapshot_deletions": deletions,
            "by_source": dg.MetadataValue.json(
                dict(documents.group_by("source").len().sort("source").iter_rows())
            ),
            "delta_version": written.version,
        }
        yield from memo.built(GOLD_DOCUMENTS, documents_version(documents), metadata, decision, [check])

    return gold_documents


CHUNKS_CONSUMES = Consumes(shape="batch_model", batch_assets=(GOLD_DOCUMENTS,), settings=(CHUNKER_SETTINGS,))


def split_chunks(lake: Lake, chunker: Chunker, batch: str, model: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The batch's chunks for ``model``, and the earlier chunks whose splits it reused: the
    batch's earlier splits by any model with the same chunker lend themselves (same split hash)."""
    documents = lake.read_batch("gold/documents", batch, GOLD_DOC_SCHEMA)
    previous = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA).unique(
        ["chunk_id", "split_hash"], keep="first"
    )
    return chunk_documents(documents, chunker, previous, model), previous


@dg.asset(
    key=GOLD_CHUNKS,
    deps=CHUNKS_CONSUMES.deps(MODEL_SETTINGS),
    partitions_def=batch_models,
    tags=shape_tag("batch_model"),
    group_name="gold",
    kinds={"gold", "delta"},
    code_version=CHUNKS_CODE,
    retry_policy=STEP_RETRY,
)
@classified
def gold_chunks(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
    """Live documents split into chunks with one model's own tokenizer, within its maximum
    sequence length; a document whose text the same chunker split before keeps its split."""
    lake, (batch, spec) = pipeline.lake(), pipeline.partition_spec(context.partition_key)
    where = {"model": spec.name}
    consumed = consumed_versions(
        context.instance, CHUNKS_CONSUMES, context.partition_key, pipeline.model_setting_versions(spec)
    )
    memo = Memo(context, consumed)
    decision = memo.decide(lambda _, previous: lake.count("gold/chunks", batch, where) == previous.row_count)
    if decision.skip:
        yield from memo.kept(decision)
        return
    chunker = pipeline.chunker(spec)
    chunks, previous = split_chunks(lake, chunker, batch, spec.name)
    written = lake.overwrite_batch("gold/chunks", chunks, batch, where)
    metadata = {
        "dagster/row_count": chunks.height,
        "documents": chunks["doc_id"].n_unique(),
        "max_tokens": int(chunks["n_tokens"].max() or 0),  # type: ignore[arg-type]
        "mean_tokens": float(chunks["n_tokens"].mean() or 0.0),  # type: ignore[arg-type]
        "documents_split": chunks.join(previous, on=["chunk_id", "split_hash"], how="anti")[
            "doc_id"
        ].n_unique(),
        "token_budget": chunker.settings.budget,
        "chunker": chunker.version,
        "model": spec.name,
        "delta_version": written.version,
    }
    yield from memo.built(GOLD_CHUNKS, chunks_version(chunks), metadata, decision)
