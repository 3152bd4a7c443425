"""vector_index: one LanceDB table per model, upserted by chunk id (newer wins), deletions
applied, FTS and ANN indexes kept current; and the reconciliation of the index against gold."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.core.hashing import frame_hash, sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.embed import DEAD_LETTER_TABLE, provenance
from embedding_assets.defs.failures import classified
from embedding_assets.defs.gold import GOLD_DOC_SCHEMA
from embedding_assets.defs.keys import EMBEDDINGS, GOLD_CHUNKS, GOLD_DOCUMENTS, VECTOR_INDEX, batches
from embedding_assets.defs.memo import Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import EMBEDDING_MODEL, INDEX_SETTINGS, PipelineResource
from embedding_assets.embed.encode import DEAD_LETTER_SCHEMA, EMBEDDING_SCHEMA
from embedding_assets.gold.chunking import CHUNK_SCHEMA
from embedding_assets.gold.documents import expected_live_chunks, latest_documents
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.repair import ExpectedIndex, reconcile
from embedding_assets.memo import Previous

INDEX_CODE = "vector-index-1"
CONSUMES = Consumes(
    assets=(EMBEDDINGS, GOLD_CHUNKS, GOLD_DOCUMENTS), settings=(EMBEDDING_MODEL, INDEX_SETTINGS)
)


def index_rows(lake: Lake, batch: str, model_id: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The batch's chunks with their vectors, its documents, and its dead-lettered chunks."""
    of_batch_and_model = (pl.col("batch") == batch) & (pl.col("model_id") == model_id)
    chunks = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA)
    vectors = lake.read("embeddings", EMBEDDING_SCHEMA, of_batch_and_model)
    dead = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, of_batch_and_model)
    rows = chunks.join(vectors.select("chunk_id", "vector"), on="chunk_id", how="inner")
    unexplained = chunks.join(rows, on="chunk_id", how="anti").join(dead, on="chunk_id", how="anti")
    if unexplained.height:
        raise dg.Failure(
            f"{unexplained.height} chunks of batch {batch} have no vector for {model_id}; materialise "
            "embeddings for the batch first", allow_retries=False,
        )  # fmt: skip
    return rows, lake.read_batch("gold/documents", batch, GOLD_DOC_SCHEMA), dead


def newest_versions(lake: Lake, documents: pl.DataFrame) -> pl.DataFrame:
    """Where each of these documents' newest version lives, across every batch (deletions included)."""
    ids = documents["doc_id"].implode()
    return latest_documents(lake.read("gold/documents", GOLD_DOC_SCHEMA, pl.col("doc_id").is_in(ids)))


@dg.asset(
    key=VECTOR_INDEX,
    deps=CONSUMES.deps(),
    partitions_def=batches,
    group_name="index",
    kinds={"lancedb"},
    code_version=INDEX_CODE,
    retry_policy=STEP_RETRY,
)
@classified
def vector_index(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
    """LanceDB table per model: the batch's chunks upserted by chunk_id (newer updated_at, then
    batch, wins), deleted documents and surplus chunks removed, in one commit; full-text and ANN
    indexes kept current."""
    lake, batch = pipeline.lake(), context.partition_key
    writer = pipeline.index_writer()
    memo = Memo(context, consumed_versions(context.instance, CONSUMES, batch, pipeline.setting_versions()))

    def present(_: dg.AssetKey, previous: Previous) -> bool:
        return previous.row_count == 0 or (writer.table.exists() and writer.table.open().count_rows() > 0)

    decision = memo.decide(present)
    if decision.skip:
        yield from memo.kept(decision)
        return
    rows, documents, dead = index_rows(lake, batch, writer.table.model_id)
    applied = writer.apply_batch(rows, documents, newest_versions(lake, documents))
    built = writer.ensure_indexes()
    reader = IndexReader(writer.table)
    fingerprint = reader.batch_fingerprint(batch)
    metadata = {
        "dagster/row_count": fingerprint.height,
        "table": writer.table.name,
        "lancedb_version": writer.table.version(),
        "lancedb_merge_version": applied.table_version,
        "metadata_columns_backfilled": ", ".join(writer.backfilled) or "none",
        "docs_written": applied.docs_written,
        "docs_skipped_older": applied.docs_skipped_older,
        "docs_deleted": applied.docs_deleted,
        "chunks_upserted": applied.chunks_upserted,
        "chunks_deleted": applied.chunks_deleted,
        "chunks_dead_lettered": dead.height,
        "indexes_built": ",".join(built) or "none",
        "ann_index": reader.has_ann_index(),
        "gold_chunks_delta_version": lake.version("gold/chunks") or 0,
        "embeddings_delta_version": lake.version("embeddings") or 0,
        **provenance(pipeline),
    }
    version = sha256_text(frame_hash(fingerprint, ["chunk_id", "chunk_hash"]), writer.table.model_id)
    yield from memo.built(VECTOR_INDEX, version, metadata, decision)


def expected_index(lake: Lake, model_id: str) -> ExpectedIndex:
    """What the index of ``model_id`` should hold: gold's live chunks, less the dead-lettered ones."""
    live = expected_live_chunks(
        lake.read("gold/documents", GOLD_DOC_SCHEMA), lake.read("gold/chunks", CHUNK_SCHEMA)
    )
    dead = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, pl.col("model_id") == model_id)
    return ExpectedIndex(
        live=live.join(dead, on=["batch", "chunk_id"], how="anti"),
        dead_lettered=live.join(dead, on=["batch", "chunk_id"], how="semi").height,
    )


@dg.asset_check(
    asset=VECTOR_INDEX,
    partitions_def=batches,
    description="The whole index equals gold's live chunks: no chunk missing, extra or stale (by chunk "
    "id and hash); dead-lettered chunks are expected to be absent.",
)
def index_matches_gold(pipeline: PipelineResource) -> dg.AssetCheckResult:
    table = pipeline.index_table()
    recon = reconcile(table, expected_index(pipeline.lake(), table.model_id))
    return dg.AssetCheckResult(
        passed=recon.ok,
        severity=dg.AssetCheckSeverity.WARN,
        description=recon.render(),
        metadata=recon.metadata(),
    )
