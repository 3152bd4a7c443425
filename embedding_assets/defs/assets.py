"""The layers as partitioned assets. Bodies read, call one or two pure functions, write, report."""

from datetime import UTC, datetime
from functools import cache

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from embedding_assets.contracts.load import contract_version, load_contract
from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.faults import fault_point
from embedding_assets.core.hashing import frame_hash, sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.core.retry import Backoff
from embedding_assets.defs.partitions import batches
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.state import (
    BLOCKED_KEY,
    EARLIER_DEPS_KEY,
    current_versions,
    earlier_partitions_version,
    inputs_metadata,
    key_str,
)
from embedding_assets.embed.drift import centroid_drift
from embedding_assets.embed.embedder import Embedder
from embedding_assets.embed.encode import (
    CACHE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EMBEDDING_SCHEMA,
    embed_chunks,
    embeddings_version,
    vector_problems,
)
from embedding_assets.gold.chunking import CHUNK_SCHEMA, chunk_documents, chunks_version
from embedding_assets.gold.documents import (
    GOLD_DOCUMENT_COLUMNS,
    expected_live_chunks,
    latest_documents,
    snapshot_tombstones,
    union_documents,
    with_metadata_columns,
)
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.repair import ExpectedIndex, reconcile
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import read_raw_batch, scan_landing
from embedding_assets.lib.planner import earlier_key
from embedding_assets.refine.report import QUALITY_TABLE, REPORT_SCHEMA, assess, silver_checks
from embedding_assets.refine.schemas import SilverDocuments, silver_failures
from embedding_assets.refine.silver import bronze_to_silver, documents_version, quarantine_version
from embedding_assets.refine.tables import SILVER_SCHEMA

GOLD_DOCUMENTS = dg.AssetKey(["gold", "documents"])
GOLD_CHUNKS = dg.AssetKey(["gold", "chunks"])
EMBEDDINGS = dg.AssetKey(["embeddings"])
VECTOR_INDEX = dg.AssetKey(["vector_index"])
GOLD_DOC_SCHEMA = {c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS}
EMBEDDING_DEVICE_POOL = "embedding_device"
DEAD_LETTER_TABLE = "deadletter/embeddings"
# Transient failures (storage hiccups, a busy device) re-run the step: 1 s, then 2 s, ± jitter.
STEP_RETRY = dg.RetryPolicy(
    max_retries=2, delay=1.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@cache
def silver_column_schema() -> dg.TableSchema:
    """The pandera silver schema as a Dagster column schema, shown on the asset in the UI."""
    schema = pandera_schema_to_dagster_type(SilverDocuments).metadata["schema"]
    return schema.schema  # type: ignore[attr-defined]


def _now() -> datetime:
    return datetime.now(UTC)


def _inputs(
    context: dg.AssetExecutionContext, deps: list[dg.AssetKey], extra: dict[str, str]
) -> dict[str, str]:
    return {**current_versions(context.instance, deps, context.partition_key), **extra}


def reference_batches(
    lake: Lake,
    table: str,
    batch: str,
    n: int,
    where: pl.Expr | None = None,
    schema: pl.Schema = SILVER_SCHEMA,
) -> pl.DataFrame:
    """The rows of the ``n`` batches before ``batch`` (the drift reference)."""
    lazy = lake.scan(table)
    if lazy is None:
        return pl.DataFrame(schema=schema)
    if where is not None:
        lazy = lazy.filter(where)
    earlier = lazy.filter(pl.col("batch") < batch).select("batch").unique().collect()["batch"].sort()
    return lazy.filter(pl.col("batch").is_in(earlier.tail(n).implode())).collect()


def layer_key(layer: str, source: str) -> dg.AssetKey:
    return dg.AssetKey([layer, source])


def build_source_assets(contract: Contract) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    source = contract.source
    group = f"source_{source}"
    tags = {"source": source}

    @dg.observable_source_asset(
        key=layer_key("landing", source),
        partitions_def=batches,
        group_name=group,
        description=f"Files dropped into landing/{source}/<batch>/ ({contract.format}).",
        metadata={"contract": str(contract.path), "owner": contract.owner or "", "format": contract.format},
    )
    def landing(pipeline: PipelineResource) -> dg.DataVersionsByPartition:
        scan = scan_landing(pipeline.landing_dir_path(), {source: contract})
        return dg.DataVersionsByPartition({b.batch: dg.DataVersion(b.content_hash) for b in scan.batches})

    @dg.asset(
        key=layer_key("bronze", source),
        deps=[landing.key],
        partitions_def=batches,
        group_name=group,
        tags=tags,
        kinds={"delta", "polars"},
        retry_policy=STEP_RETRY,
    )
    def bronze(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Exact, append-only copy of the batch's landing records, with lineage columns."""
        batch = context.partition_key
        lake, table = pipeline.lake(), f"bronze/{source}"
        landed = read_raw_batch(contract, pipeline.landing_dir_path() / source / batch)
        delivery = landed.content_hash
        existing = lake.read_batch(table, batch, bronze_lib.BRONZE_SCHEMA)
        rows = bronze_lib.new_delivery(
            landed.records,
            source=source,
            batch=batch,
            fmt=contract.format,
            delivery=delivery,
            existing=existing,
            now=_now(),
        )
        fault_point("bronze.before_write")
        version = (
            lake.insert_new(table, rows, bronze_lib.BRONZE_KEYS) if rows is not None else lake.version(table)
        )
        fault_point("bronze.after_write")
        latest = bronze_lib.latest_delivery(rows if rows is not None else existing)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(bronze_lib.bronze_version(latest)),
            metadata={
                "dagster/row_count": latest.height,
                "rows_appended": rows.height if rows is not None else 0,
                "delivery": delivery,
                "files": landed.files,
                "delta_version": version if version is not None else -1,
                **inputs_metadata({key_str(landing.key): delivery}),
            },
        )

    silver_key, quarantine_key = layer_key("silver", source), layer_key("quarantine", source)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                silver_key,
                deps=[bronze.key],
                partitions_def=batches,
                group_name=group,
                tags=tags,
                kinds={"delta", "polars", "pandera"},
                description=f"Typed, validated, deduplicated {source} rows under contract v{contract.version}.",
                metadata={"dagster/column_schema": silver_column_schema()},
            ),
            dg.AssetSpec(
                quarantine_key,
                deps=[bronze.key],
                partitions_def=batches,
                group_name=group,
                tags=tags,
                kinds={"delta", "polars"},
                description=f"Every {source} row that did not reach silver: invalid rows with every reason, "
                "and deduplication losers (duplicate, near_duplicate, superseded) with their winner.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                name, asset=silver_key, blocking=blocking, partitions_def=batches, description=description
            )
            for name, blocking, description in silver_checks(contract)
        ],
        partitions_def=batches,
        name=f"silver_{source}",
        retry_policy=STEP_RETRY,
    )
    def silver(context: dg.AssetExecutionContext, pipeline: PipelineResource):  # type: ignore[no-untyped-def]
        batch = context.partition_key
        lake = pipeline.lake()
        # The contract as it is now on disk, not as it was when the code location loaded.
        current = load_contract(contract.path)
        rows = bronze_lib.latest_delivery(
            lake.read_batch(f"bronze/{source}", batch, bronze_lib.BRONZE_SCHEMA)
        )
        result = bronze_to_silver(current, bronze_lib.as_raw_records(rows), batch)
        reference = reference_batches(
            lake, f"silver/{source}", batch, current.quality.drift.reference_batches
        )
        quality = assess(current, result, batch, reference, schema_failures=silver_failures(result.silver))
        silver_version = lake.overwrite_batch(f"silver/{source}", result.silver, batch)
        fault_point("silver.between_tables")
        quarantine_delta = lake.overwrite_batch(f"quarantine/{source}", result.rejected, batch)
        lake.overwrite_batch(
            QUALITY_TABLE,
            pl.DataFrame(
                [(source, batch, quality.to_json(), not quality.blocked)], schema=REPORT_SCHEMA, orient="row"
            ),
            batch,
            extra_predicate=f"source = '{source}'",
        )
        fault_point("silver.after_write")
        inputs = inputs_metadata(
            _inputs(context, [bronze.key], {f"contract/{source}": contract_version(current)})
        )
        yield dg.MaterializeResult(
            asset_key=silver_key,
            data_version=dg.DataVersion(documents_version(result.silver)),
            metadata={
                "dagster/row_count": result.silver.height,
                "rows_read": result.rows_read,
                "rows_quarantined": quality.quarantined,
                "duplicates_dropped": result.duplicates_dropped,
                "superseded": quality.superseded,
                "near_duplicates_flagged": quality.near_duplicates_flagged,
                "deleted_markers": int(result.silver["deleted"].sum()),
                "quarantine_rate": quality.quarantine_rate,
                "outlier_rate": quality.outlier_rate,
                **{f"drift/{k}": v for k, v in quality.drift.items()},
                "rows_migrated": result.migrated,
                "delta_version": silver_version,
                "contract_version": current.version,
                "quality_report": dg.MetadataValue.md(quality.markdown()),
                BLOCKED_KEY: "; ".join(f"{c.name}: {c.message}" for c in quality.blocked),
                **inputs,
            },
        )
        yield dg.MaterializeResult(
            asset_key=quarantine_key,
            data_version=dg.DataVersion(quarantine_version(result.rejected)),
            metadata={
                "dagster/row_count": result.rejected.height,
                "invalid": quality.quarantined,
                "delta_version": quarantine_delta,
                "by_rule": dg.MetadataValue.md(
                    "| rule | rows |\n|---|---|\n"
                    + "".join(f"| {r} | {n} |\n" for r, n in quality.by_rule.items())
                ),
                **inputs,
            },
        )
        for outcome in quality.checks:
            yield dg.AssetCheckResult(
                asset_key=silver_key,
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
                description=outcome.message,
                metadata={"message": outcome.message},
            )

    return [landing, bronze, silver]


def build_gold_assets(contracts: dict[str, Contract]) -> list[dg.AssetsDefinition]:
    silver_keys = [layer_key("silver", s) for s in contracts]
    snapshot_sources = [s for s, c in contracts.items() if c.snapshot]

    @dg.asset(
        key=GOLD_DOCUMENTS,
        deps=silver_keys,
        partitions_def=batches,
        group_name="gold",
        kinds={"delta", "polars"},
        retry_policy=STEP_RETRY,
        # Snapshot sources compare each batch with every earlier one: the planner reads this.
        metadata={EARLIER_DEPS_KEY: [key_str(layer_key("silver", s)) for s in snapshot_sources]},
        check_specs=[
            dg.AssetCheckSpec(
                "snapshot_deletions",
                asset=GOLD_DOCUMENTS,
                blocking=True,
                partitions_def=batches,
                description="A full-snapshot batch deletes no more than its contract's max_delete_rate.",
            )
        ],
    )
    def gold_documents(context: dg.AssetExecutionContext, pipeline: PipelineResource):  # type: ignore[no-untyped-def]
        """One row per document of the batch, all sources unioned, doc ids namespaced by source;
        for snapshot sources, a tombstone for each earlier document the snapshot lacks."""
        lake, batch = pipeline.lake(), context.partition_key
        silvers = {s: lake.read_batch(f"silver/{s}", batch, SILVER_SCHEMA) for s in contracts}
        tombstones, earlier_inputs, too_many = [], {}, []
        for source in snapshot_sources:
            earlier = lake.read(f"silver/{source}", SILVER_SCHEMA, pl.col("batch") < batch)
            found = snapshot_tombstones(silvers[source], earlier, batch)
            live_before = latest_documents(earlier).filter(~pl.col("deleted")).height
            limit = contracts[source].max_snapshot_delete_rate
            if found.height and found.height > limit * live_before:
                too_many.append(
                    f"{source}: the snapshot deletes {found.height} of {live_before} documents "
                    f"(more than max_delete_rate {limit:.0%})"
                )
            tombstones.append(found)
            silver_key = layer_key("silver", source)
            earlier_inputs[earlier_key(key_str(silver_key))] = earlier_partitions_version(
                context.instance, silver_key, batch
            )
        documents = with_metadata_columns(
            union_documents([*silvers.values(), *tombstones]), metadata_fields(pipeline.contracts())
        )
        version = lake.overwrite_batch("gold/documents", documents, batch)
        fault_point("gold.after_write")
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(documents_version(documents)),
            metadata={
                "dagster/row_count": documents.height,
                "deleted": int(documents["deleted"].sum()),
                "snapshot_deletions": sum(t.height for t in tombstones),
                "by_source": dg.MetadataValue.json(
                    {s: n for s, n in documents.group_by("source").len().sort("source").iter_rows()}
                ),
                "delta_version": version,
                BLOCKED_KEY: "; ".join(too_many),
                **inputs_metadata(_inputs(context, silver_keys, earlier_inputs)),
            },
        )
        yield dg.AssetCheckResult(
            check_name="snapshot_deletions",
            passed=not too_many,
            metadata={
                "deletions": sum(t.height for t in tombstones),
                "problems": "\n".join(too_many) or "none",
            },
        )

    @dg.asset(
        key=GOLD_CHUNKS,
        deps=[GOLD_DOCUMENTS],
        partitions_def=batches,
        group_name="gold",
        kinds={"delta", "polars"},
        retry_policy=STEP_RETRY,
    )
    def gold_chunks(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Live documents split into chunks with the embedding model's own tokenizer."""
        lake, batch = pipeline.lake(), context.partition_key
        embedder = pipeline.embedder()
        chunker = pipeline.chunker(embedder)
        documents = lake.read_batch("gold/documents", batch, GOLD_DOC_SCHEMA)
        previous = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA)
        chunks = chunk_documents(documents, chunker, previous)
        resplit = chunks.join(previous, on=["chunk_id", "split_hash"], how="anti")["doc_id"].n_unique()
        version = lake.overwrite_batch("gold/chunks", chunks, batch)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(chunks_version(chunks)),
            metadata={
                "dagster/row_count": chunks.height,
                "documents": documents.height,
                "max_tokens": int(chunks["n_tokens"].max() or 0),  # type: ignore[arg-type]
                "mean_tokens": float(chunks["n_tokens"].mean() or 0.0),  # type: ignore[arg-type]
                "documents_split": resplit,
                "token_budget": chunker.settings.budget,
                "chunker": chunker.settings.describe(),
                "delta_version": version,
                **inputs_metadata(
                    _inputs(context, [GOLD_DOCUMENTS], {"config/chunker": pipeline.chunker_version()})
                ),
            },
        )

    return [gold_documents, gold_chunks]


@dg.asset(
    key=EMBEDDINGS,
    deps=[GOLD_CHUNKS],
    partitions_def=batches,
    group_name="embeddings",
    pool=EMBEDDING_DEVICE_POOL,
    kinds={"delta", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "vectors_valid",
            asset=EMBEDDINGS,
            blocking=True,
            partitions_def=batches,
            description="Vectors are finite, of the model's dimension and unit norm.",
        ),
        dg.AssetCheckSpec(
            "embedding_failures",
            asset=EMBEDDINGS,
            blocking=True,
            partitions_def=batches,
            description="Chunks that failed permanently (dead-lettered) stay under the allowed rate.",
        ),
        dg.AssetCheckSpec(
            "embedding_drift",
            asset=EMBEDDINGS,
            partitions_def=batches,
            description="Per source, the cosine distance between this batch's embedding centroid and the "
            "trailing reference batches' stays under the contract's max_centroid_distance (a warning).",
        ),
    ],
    retry_policy=STEP_RETRY,
)
def embeddings(context: dg.AssetExecutionContext, pipeline: PipelineResource):  # type: ignore[no-untyped-def]
    """Sentence-transformers vectors of the batch's chunks; cached vectors are reused by
    (chunk_hash, model_id) from any partition, so only new text is embedded. Chunks that fail
    permanently go to ``deadletter/embeddings`` and the rest of the batch carries on."""
    lake, batch, settings = pipeline.lake(), context.partition_key, pipeline.settings()
    embedder = pipeline.embedder()
    of_model = pl.col("model_id") == embedder.model_id
    chunks = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA)
    cache = lake.read(
        "embeddings", CACHE_SCHEMA, of_model & pl.col("chunk_hash").is_in(chunks["chunk_hash"].implode())
    )
    previous = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, of_model & (pl.col("batch") == batch))
    result = embed_chunks(
        chunks,
        cache,
        embedder,
        batch=batch,
        now=_now(),
        previous_failures=previous,
        backoff=Backoff(attempts=settings.retry_attempts),
    )
    problems = vector_problems(result.frame, embedder.dimension)
    model_predicate = f"model_id = '{embedder.model_id}'"
    version = lake.overwrite_batch("embeddings", result.frame, batch, extra_predicate=model_predicate)
    dead_version = lake.overwrite_batch(
        DEAD_LETTER_TABLE, result.dead_letter, batch, extra_predicate=model_predicate
    )
    fault_point("embed.after_write")
    contracts = pipeline.contracts()
    n_ref = max((c.quality.drift.reference_batches for c in contracts.values()), default=4)
    reference = reference_batches(lake, "embeddings", batch, n_ref, of_model, EMBEDDING_SCHEMA)
    drift = centroid_drift(result.frame, reference)
    drift_over = {
        s: d
        for s, d in drift.items()
        if s in contracts and d > contracts[s].quality.drift.max_centroid_distance
    }
    failure_rate = result.chunks_failed / result.chunks_total if result.chunks_total else 0.0
    too_many = failure_rate > settings.max_embed_failure_rate
    failures_summary = (
        f"{result.chunks_failed} of {result.chunks_total} chunks failed permanently "
        f"({failure_rate:.1%} > {settings.max_embed_failure_rate:.1%}); see {DEAD_LETTER_TABLE}"
    )
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(embeddings_version(result.frame)),
        metadata={
            "dagster/row_count": result.frame.height,
            "chunks_total": result.chunks_total,
            "chunks_embedded": result.chunks_embedded,
            "chunks_reused": result.chunks_reused,
            "chunks_failed": result.chunks_failed,
            "retries": result.retries,
            "encode_seconds": round(result.encode_seconds, 3),
            **{f"drift/centroid_distance/{s}": d for s, d in drift.items()},
            "delta_version": version,
            "dead_letter_delta_version": dead_version,
            **provenance(embedder, pipeline),
            BLOCKED_KEY: "; ".join(problems + ([failures_summary] if too_many else [])),
            **inputs_metadata(_inputs(context, [GOLD_CHUNKS], {"config/model": embedder.model_id})),
        },
    )
    yield dg.AssetCheckResult(
        check_name="vectors_valid", passed=not problems, metadata={"problems": "\n".join(problems) or "none"}
    )
    yield dg.AssetCheckResult(
        check_name="embedding_failures",
        passed=not too_many,
        metadata={
            "chunks_failed": result.chunks_failed,
            "failure_rate": failure_rate,
            "max_failure_rate": settings.max_embed_failure_rate,
            "errors": "\n".join(sorted(set(result.dead_letter["error"].to_list()))[:5]) or "none",
        },
    )
    yield dg.AssetCheckResult(
        check_name="embedding_drift",
        passed=not drift_over,
        severity=dg.AssetCheckSeverity.WARN,
        description=", ".join(
            f"{s}: {d:.3f} > {contracts[s].quality.drift.max_centroid_distance}"
            for s, d in drift_over.items()
        )
        or ("centroids within thresholds" if drift else "no reference batches yet"),
        metadata={f"centroid_distance/{s}": d for s, d in drift.items()},
    )


@dg.asset(
    key=VECTOR_INDEX,
    deps=[EMBEDDINGS, GOLD_CHUNKS, GOLD_DOCUMENTS],
    partitions_def=batches,
    group_name="index",
    kinds={"lancedb"},
    check_specs=[
        dg.AssetCheckSpec(
            "index_matches_gold",
            asset=VECTOR_INDEX,
            partitions_def=batches,
            description="The index's chunk ids and hashes equal gold's live chunks.",
        ),
    ],
    retry_policy=STEP_RETRY,
)
def vector_index(context: dg.AssetExecutionContext, pipeline: PipelineResource):  # type: ignore[no-untyped-def]
    """LanceDB table per model: the batch's chunks upserted by chunk_id (newer updated_at, then
    batch, wins), deleted documents and surplus chunks removed, in one commit; full-text and ANN
    indexes kept current."""
    lake, batch = pipeline.lake(), context.partition_key
    embedder = pipeline.embedder()
    writer = pipeline.index_writer(embedder)
    store = writer.table
    of_batch_and_model = (pl.col("batch") == batch) & (pl.col("model_id") == embedder.model_id)
    chunks = lake.read_batch("gold/chunks", batch, CHUNK_SCHEMA)
    vectors = lake.read("embeddings", EMBEDDING_SCHEMA, of_batch_and_model)
    dead = lake.read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, of_batch_and_model)
    documents = lake.read_batch("gold/documents", batch, GOLD_DOC_SCHEMA)
    rows = chunks.join(vectors.select("chunk_id", "vector"), on="chunk_id", how="inner")
    unexplained = chunks.join(rows, on="chunk_id", how="anti").join(dead, on="chunk_id", how="anti")
    if unexplained.height:
        raise dg.Failure(
            f"{unexplained.height} chunks of batch {batch} have no vector for {embedder.model_id}",
            allow_retries=False,
        )
    newest = latest_documents(
        lake.read("gold/documents", GOLD_DOC_SCHEMA, pl.col("doc_id").is_in(documents["doc_id"].implode()))
    )
    applied = writer.apply_batch(rows, documents, newest)
    built = writer.ensure_indexes()
    fingerprint = IndexReader(store).batch_fingerprint(batch)
    recon = reconcile(store, expected_index(lake, embedder.model_id))
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(
            sha256_text(frame_hash(fingerprint, ["chunk_id", "chunk_hash"]), embedder.model_id)
        ),
        metadata={
            "dagster/row_count": fingerprint.height,
            "table": store.name,
            "lancedb_version": store.version(),
            "lancedb_merge_version": applied.table_version,
            "metadata_columns_backfilled": ", ".join(writer.backfilled) or "none",
            "docs_written": applied.docs_written,
            "docs_skipped_older": applied.docs_skipped_older,
            "docs_deleted": applied.docs_deleted,
            "chunks_upserted": applied.chunks_upserted,
            "chunks_deleted": applied.chunks_deleted,
            "chunks_dead_lettered": dead.height,
            "indexes_built": ",".join(built) or "none",
            "ann_index": IndexReader(store).has_ann_index(),
            "gold_chunks_delta_version": lake.version("gold/chunks") or 0,
            "embeddings_delta_version": lake.version("embeddings") or 0,
            **provenance(embedder, pipeline),
            **inputs_metadata(
                _inputs(
                    context, [EMBEDDINGS, GOLD_CHUNKS, GOLD_DOCUMENTS], {"config/model": embedder.model_id}
                )
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="index_matches_gold",
        passed=recon.ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=recon.metadata(),
    )


def provenance(embedder: Embedder, pipeline: PipelineResource) -> dict[str, str]:
    """What produced the vectors: enough, with the Delta and LanceDB versions, to reproduce them."""
    return {
        "model_id": embedder.model_id,
        "model_revision": embedder.revision,
        "device": embedder.device,
        "chunker": pipeline.chunker_settings(embedder).describe(),
    }


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
