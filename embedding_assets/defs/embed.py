"""embeddings: one vector per chunk and model; vectors already computed for the same text and
model are reused from any partition, and chunks that fail for good are dead-lettered."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.config import Settings
from embedding_assets.contracts.model import Contract
from embedding_assets.core.faults import fault_point
from embedding_assets.core.lake import Lake
from embedding_assets.core.retry import Backoff
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.failures import classified
from embedding_assets.defs.keys import EMBEDDINGS, GOLD_CHUNKS, batch_models, shape_tag
from embedding_assets.defs.memo import RETRY_DEAD_LETTERS_TAG, Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import EMBEDDING_MODEL, MODEL_SETTINGS, PipelineResource
from embedding_assets.embed.drift import centroid_drift
from embedding_assets.embed.encode import (
    CACHE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EMBEDDING_SCHEMA,
    EmbedResult,
    embed_chunks,
    embeddings_version,
    vector_problems,
)
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.gold.chunking import CHUNK_SCHEMA
from embedding_assets.refine.report import CheckOutcome

EMBEDDINGS_CODE = "embeddings-1"
DEAD_LETTER_TABLE = "deadletter/embeddings"
EMBEDDING_DEVICE_POOL = "embedding_device"
CONSUMES = Consumes(shape="batch_model", assets=(GOLD_CHUNKS,), settings=(EMBEDDING_MODEL,))
CHECKS = [
    ("vectors_valid", True, "Vectors are finite, of the model's dimension and unit norm."),
    ("embedding_failures", True, "Chunks that failed permanently (dead-lettered) stay under the allowed rate."),
    ("embedding_drift", False, "Per source, the cosine distance between this batch's embedding centroid and the "
     "trailing reference batches' stays under the contract's max_centroid_distance (a warning)."),
]  # fmt: skip


def embedding_checks(
    result: EmbedResult,
    dimension: int,
    drift: dict[str, float],
    contracts: dict[str, Contract],
    settings: Settings,
) -> list[CheckOutcome]:
    problems = vector_problems(result.frame, dimension)
    rate = result.chunks_failed / result.chunks_total if result.chunks_total else 0.0
    limit = settings.max_embed_failure_rate
    errors = sorted(set(result.dead_letter["error"].to_list()))[:5]
    over = {
        s: d
        for s, d in drift.items()
        if s in contracts and d > contracts[s].quality.drift.max_centroid_distance
    }
    return [
        CheckOutcome("vectors_valid", not problems, True, "\n".join(problems) or "finite, unit-norm vectors",
                     {"invalid_vectors": float(len(problems))}),
        CheckOutcome("embedding_failures", rate <= limit, True,
                     f"{result.chunks_failed} of {result.chunks_total} chunks failed permanently ({rate:.1%}, "
                     f"max {limit:.1%}); see {DEAD_LETTER_TABLE}" + (f": {'; '.join(errors)}" if errors else ""),
                     {"chunks_failed": float(result.chunks_failed), "failure_rate": rate}),
        CheckOutcome("embedding_drift", not over, False,
                     ", ".join(f"{s}: {d:.3f} > {contracts[s].quality.drift.max_centroid_distance}" for s, d in over.items())
                     or ("centroids within thresholds" if drift else "no reference batches yet"),
                     {f"centroid_distance/{s}": d for s, d in drift.items()}),
    ]  # fmt: skip


def embed_batch(lake: Lake, pipeline: PipelineResource, batch: str, spec: ModelSpec) -> EmbedResult:
    """The batch's vectors for one model: cached ones reused, the rest encoded; permanent
    failures dead-lettered."""
    embedder, settings = pipeline.embedder(spec), pipeline.settings()
    of_model = pl.col("model_id") == spec.model_id
    chunks = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA, {"model": spec.name})
    cache = lake.read(
        "embeddings", CACHE_SCHEMA, of_model & pl.col("chunk_hash").is_in(chunks["chunk_hash"].implode())
    )
    failures = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, of_model & (pl.col("batch") == batch))
    return embed_chunks(
        chunks, cache, embedder, batch=batch, now=datetime.now(UTC), previous_failures=failures,
        backoff=Backoff(attempts=settings.retry_attempts),
    )  # fmt: skip


def retry_reason(context: dg.AssetExecutionContext, lake: Lake, batch: str, model_id: str) -> str | None:
    """A run asked to retry dead letters, and this batch has some: a reason to rebuild."""
    if context.run.tags.get(RETRY_DEAD_LETTERS_TAG) != "true":
        return None
    dead = lake.count(DEAD_LETTER_TABLE, batch, {"model_id": model_id})
    return f"retrying {dead} dead-lettered chunks" if dead else None


def checks_of(
    lake: Lake, pipeline: PipelineResource, result: EmbedResult, batch: str, spec: ModelSpec
) -> tuple[list[CheckOutcome], dict[str, float]]:
    """The batch's embedding checks, and its centroid drift per source against earlier batches."""
    contracts = pipeline.contracts()
    n_ref = max((c.quality.drift.reference_batches for c in contracts.values()), default=4)
    reference = lake.batches_before(
        "embeddings", batch, n_ref, EMBEDDING_SCHEMA, pl.col("model_id") == spec.model_id
    )
    drift = centroid_drift(result.frame, reference)
    return embedding_checks(result, spec.dimension, drift, contracts, pipeline.settings()), drift


@dg.asset(
    key=EMBEDDINGS,
    deps=CONSUMES.deps(MODEL_SETTINGS),
    partitions_def=batch_models,
    tags=shape_tag("batch_model"),
    group_name="embeddings",
    pool=EMBEDDING_DEVICE_POOL,
    kinds={"delta", "pytorch"},
    code_version=EMBEDDINGS_CODE,
    check_specs=[
        dg.AssetCheckSpec(n, asset=EMBEDDINGS, blocking=b, partitions_def=batch_models, description=d)
        for n, b, d in CHECKS
    ],
    retry_policy=STEP_RETRY,
)
@classified
def embeddings(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
    """One model's vectors of the batch's chunks; cached vectors are reused by (chunk_hash,
    model_id) from any partition, so only new text is embedded. Chunks that fail permanently go to
    ``deadletter/embeddings`` and the rest of the batch carries on."""
    lake, (batch, spec) = pipeline.lake(), pipeline.partition_spec(context.partition_key)
    where = {"model_id": spec.model_id}
    consumed = consumed_versions(
        context.instance, CONSUMES, context.partition_key, pipeline.model_setting_versions(spec)
    )
    memo = Memo(context, consumed, force=retry_reason(context, lake, batch, spec.model_id))
    decision = memo.decide(lambda _, previous: lake.count("embeddings", batch, where) == previous.row_count)
    if decision.skip:
        yield from memo.kept(decision)
        return
    result = embed_batch(lake, pipeline, batch, spec)
    written = lake.overwrite_batch("embeddings", result.frame, batch, where, volatile=["embedded_at"])
    dead = lake.overwrite_batch(DEAD_LETTER_TABLE, result.dead_letter, batch, where, volatile=["failed_at"])
    fault_point("embed.after_write")
    checks, drift = checks_of(lake, pipeline, result, batch, spec)
    metadata = {
        "dagster/row_count": result.frame.height,
        "chunks_total": result.chunks_total,
        "chunks_embedded": result.chunks_embedded,
        "chunks_reused": result.chunks_reused,
        "chunks_failed": result.chunks_failed,
        "retries": result.retries,
        "encode_seconds": round(result.encode_seconds, 3),
        **{f"drift/centroid_distance/{s}": d for s, d in drift.items()},
        "delta_version": written.version,
        "dead_letter_delta_version": dead.version,
        **provenance(pipeline, spec),
    }
    yield from memo.built(EMBEDDINGS, embeddings_version(result.frame), metadata, decision, checks)


def provenance(pipeline: PipelineResource, spec: ModelSpec) -> dict[str, str]:
    """What produced the vectors: enough, with the Delta and LanceDB versions, to reproduce them."""
    return {
        "model": spec.name,
        "model_id": spec.model_id,
        "model_revision": spec.revision,
        "device": pipeline.embedder(spec).device,
        "chunker": pipeline.chunker_settings(spec).describe(),
    }
