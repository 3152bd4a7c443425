"""vector_index: one LanceDB table per model, upserted by chunk id (newer wins), deletions
applied, FTS and ANN indexes kept current; and the reconciliation of the index against gold."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.core.hashing import frame_hash, sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.embed import DEAD_LETTER_TABLE, provenance
from embedding_assets.defs.failures import classified
from embedding_assets.defs.freshness import FRESHNESS_SPEC, freshness_outcome
from embedding_assets.defs.gold import GOLD_DOC_SCHEMA
from embedding_assets.defs.keys import (
    EMBEDDINGS,
    GOLD_CHUNKS,
    GOLD_DOCUMENTS,
    VECTOR_INDEX,
    batch_models,
    shape_tag,
)
from embedding_assets.defs.memo import Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import EMBEDDING_MODEL, INDEX_SETTINGS, MODEL_SETTINGS, PipelineResource
from embedding_assets.embed.encode import DEAD_LETTER_SCHEMA, EMBEDDING_SCHEMA
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.gold.chunking import CHUNK_SCHEMA
from embedding_assets.gold.documents import expected_live_chunks, latest_documents
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.repair import ExpectedIndex, reconcile
from embedding_assets.index.writer import ApplyResult, IndexWriter
from embedding_assets.memo import Previous

INDEX_CODE = "vector-index-3"  # 3: the searchable_within_sla check and the lag
CONSUMES = Consumes(
    shape="batch_model",
    assets=(EMBEDDINGS, GOLD_CHUNKS),
    batch_assets=(GOLD_DOCUMENTS,),
    settings=(EMBEDDING_MODEL, INDEX_SETTINGS),
)


@dataclass(frozen=True)
class IndexInput:
    rows: pl.DataFrame  # the batch's chunks for one model, with vector, embedded_at and gold_version
    documents: pl.DataFrame  # the batch's documents
    dead: pl.DataFrame  # its dead-lettered chunks
    gold_version: int  # the gold/chunks Delta version the chunks were read at


def index_rows(lake: Lake, batch: str, spec: ModelSpec) -> IndexInput:
    """The batch's chunks for one model with their vectors and lineage (when each was embedded,
    and the gold/chunks version they are read at), its documents, and its dead-lettered chunks."""
    of_batch_and_model = (pl.col("batch") == batch) & (pl.col("model_id") == spec.model_id)
    gold_version = lake.version("gold/chunks")
    chunks = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA, {"model": spec.name}, version=gold_version)
    vectors = lake.read("embeddings", EMBEDDING_SCHEMA, of_batch_and_model)
    dead = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, of_batch_and_model)
    rows = chunks.join(vectors.select("chunk_id", "vector", "embedded_at"), on="chunk_id", how="inner")
    unexplained = chunks.join(rows, on="chunk_id", how="anti").join(dead, on="chunk_id", how="anti")
    if unexplained.height:
        raise dg.Failure(
            f"{unexplained.height} chunks of batch {batch} have no vector for {spec.name}; materialise "
            "embeddings for the batch first", allow_retries=False,
        )  # fmt: skip
    version = -1 if gold_version is None else gold_version
    rows = rows.with_columns(pl.lit(version, dtype=pl.Int64).alias("gold_version"))
    return IndexInput(rows, lake.read_batch("gold/documents", batch, GOLD_DOC_SCHEMA), dead, version)


def newest_versions(lake: Lake, documents: pl.DataFrame) -> pl.DataFrame:
    """Where each of these documents' newest version lives, across every batch (deletions included)."""
    ids = documents["doc_id"].implode()
    return latest_documents(lake.read("gold/documents", GOLD_DOC_SCHEMA, pl.col("doc_id").is_in(ids)))


@dg.asset(
    key=VECTOR_INDEX,
    deps=CONSUMES.deps(MODEL_SETTINGS),
    partitions_def=batch_models,
    tags=shape_tag("batch_model"),
    group_name="index",
    kinds={"lancedb"},
    code_version=INDEX_CODE,
    retry_policy=STEP_RETRY,
    check_specs=[FRESHNESS_SPEC],
)
@classified
def vector_index(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
    """One model's LanceDB table: the batch's chunks upserted by chunk_id (newer updated_at, then
    batch, wins), deleted documents and surplus chunks removed, in one commit; full-text and ANN
    indexes kept current."""
    lake, (batch, spec) = pipeline.lake(), pipeline.partition_spec(context.partition_key)
    writer = pipeline.index_writer(spec)
    settings = {**pipeline.setting_versions(), **pipeline.model_setting_versions(spec)}
    memo = Memo(context, consumed_versions(context.instance, CONSUMES, context.partition_key, settings))

    def present(_: dg.AssetKey, previous: Previous) -> bool:
        return previous.row_count == 0 or (writer.table.exists() and writer.table.open().count_rows() > 0)

    decision = memo.decide(present)
    if decision.skip:
        yield from memo.kept(decision)
        return
    found = index_rows(lake, batch, spec)
    applied = writer.apply_batch(found.rows, found.documents, newest_versions(lake, found.documents))
    built = writer.ensure_indexes()
    fingerprint = IndexReader(writer.table).batch_fingerprint(batch)
    fresh = freshness_outcome(pipeline, batch, spec, time.time())
    metadata = {
        "dagster/row_count": fingerprint.height,
        **index_metadata(writer, applied, built, found),
        "embeddings_delta_version": lake.version("embeddings") or 0,
        **provenance(pipeline, spec),
        **fresh.figures,  # landed_to_searchable_s: a float, plotted by the UI
    }
    version = sha256_text(frame_hash(fingerprint, ["chunk_id", "chunk_hash"]), spec.model_id)
    yield from memo.built(VECTOR_INDEX, version, metadata, decision, [fresh])


def index_metadata(
    writer: IndexWriter, applied: ApplyResult, built: list[str], found: IndexInput
) -> dict[str, Any]:
    """What one batch did to the model's table, as materialisation metadata."""
    return {
        "table": writer.table.name,
        "lancedb_version": writer.table.version(),
        "lancedb_merge_version": applied.table_version,
        "metadata_columns_backfilled": ", ".join(writer.backfilled) or "none",
        "docs_written": applied.docs_written,
        "docs_skipped_older": applied.docs_skipped_older,
        "docs_deleted": applied.docs_deleted,
        "chunks_upserted": applied.chunks_upserted,
        "chunks_deleted": applied.chunks_deleted,
        "chunks_dead_lettered": found.dead.height,
        "indexes_built": ",".join(built) or "none",
        "ann_index": IndexReader(writer.table).has_ann_index(),
        "gold_chunks_delta_version": found.gold_version,
    }


def expected_index(lake: Lake, spec: ModelSpec) -> ExpectedIndex:
    """What a model's index should hold: gold's live chunks, less the dead-lettered ones."""
    documents = lake.read("gold/documents", GOLD_DOC_SCHEMA)
    live = expected_live_chunks(
        documents, lake.read("gold/chunks", CHUNK_SCHEMA, pl.col("model") == spec.name)
    )
    dead = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, pl.col("model_id") == spec.model_id)
    live_docs = latest_documents(documents).filter(~pl.col("deleted"))
    return ExpectedIndex(
        live=live.join(dead, on=["batch", "chunk_id"], how="anti"),
        dead_lettered=live.join(dead, on=["batch", "chunk_id"], how="semi").height,
        unchunked=live_docs.join(live, on="doc_id", how="anti").height,
    )


@dg.asset_check(
    asset=VECTOR_INDEX,
    partitions_def=batch_models,
    description="The model's whole index equals gold's live chunks: no chunk missing, extra or stale "
    "(by chunk id and hash); dead-lettered chunks are expected to be absent.",
)
def index_matches_gold(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    _, spec = pipeline.partition_spec(context.partition_key)
    recon = reconcile(pipeline.index_table(spec), expected_index(pipeline.lake(), spec))
    return dg.AssetCheckResult(
        passed=recon.ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=recon.render(),
        metadata=recon.metadata(),
    )
