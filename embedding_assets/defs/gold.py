"""gold_documents (one row per document of the batch, all sources) and gold_chunks (the model's
tokenizer splits them)."""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.contracts.model import Contract
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
from embedding_assets.gold.assemble import Assembled, assemble, silver_schema
from embedding_assets.gold.chunking import CHUNK_SCHEMA, Chunker, chunk_documents, chunks_version
from embedding_assets.gold.documents import GOLD_DOC_SCHEMA
from embedding_assets.refine.report import CheckOutcome
from embedding_assets.refine.silver import documents_version

DOCUMENTS_CODE, CHUNKS_CODE = (
    "gold-documents-2",
    "gold-chunks-2",
)  # 2: entities fused with provenance; Markdown split by sections


def documents_consumes(contracts: dict[str, Contract]) -> Consumes:
    """Every source's silver of the batch; and of every earlier batch, a snapshot source's (what
    its snapshot no longer lists) and an entity member's (the newest row of an entity it touches)."""
    return Consumes(
        assets=tuple(layer_key("silver", s) for s in contracts),
        settings=tuple(contract_key(s) for s in contracts),  # their metadata fields are gold's columns
        earlier=tuple(layer_key("silver", s) for s, c in contracts.items() if c.snapshot or c.entity),
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
        """One row per document of the batch: each source's own, doc ids namespaced by source, and
        each entity's, fused field by field from its sources; for snapshot sources, a tombstone for
        each earlier document the snapshot lacks."""
        lake, batch = pipeline.lake(), context.partition_key
        versions = pipeline.setting_versions(contracts)
        memo = Memo(context, consumed_versions(context.instance, consumes, batch, versions))
        decision = memo.decide(lambda _, previous: lake.count("gold/documents", batch) == previous.row_count)
        if decision.skip:
            yield from memo.kept(decision)
            return
        if why := held_back(lake, held, batch):
            raise dg.Failure(why, allow_retries=False)
        silvers = {s: lake.read_batch(f"silver/{s}", batch, silver_schema(c)) for s, c in contracts.items()}
        built = assemble(lake, contracts, silvers, batch)
        written = lake.overwrite_batch("gold/documents", built.documents, batch)
        fault_point("gold.after_write")
        check = CheckOutcome(
            "snapshot_deletions", not built.problems, True,
            "\n".join(built.problems) or f"{built.deletions} snapshot deletions", {"snapshot_deletions": float(built.deletions)},
        )  # fmt: skip
        metadata = documents_metadata(built) | {"delta_version": written.version}
        yield from memo.built(GOLD_DOCUMENTS, documents_version(built.documents), metadata, decision, [check])

    return gold_documents


def documents_metadata(built: Assembled) -> dict[str, Any]:
    documents = built.documents
    return {
        "dagster/row_count": documents.height,
        "deleted": int(documents["deleted"].sum()),
        "snapshot_deletions": built.deletions,
        "entities": int(documents["provenance"].is_not_null().sum()),
        "by_source": dg.MetadataValue.json(
            dict(documents.group_by("source").len().sort("source").iter_rows())
        ),
    }


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
