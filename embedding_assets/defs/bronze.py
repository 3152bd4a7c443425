"""bronze_<source>: an exact, append-only copy of every landing delivery."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.core.faults import fault_point
from embedding_assets.defs.failures import classified
from embedding_assets.defs.keys import batches, layer_key, shape_tag
from embedding_assets.defs.memo import Memo
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import EMPTY_HASH, read_raw_batch
from embedding_assets.memo import Previous

BRONZE_CODE = "bronze-1"
# Transient failures (storage hiccups, a busy device) re-run the step: 1 s, then 2 s, ± jitter.
STEP_RETRY = dg.RetryPolicy(
    max_retries=2, delay=1.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def bronze_asset(contract: Contract) -> dg.AssetsDefinition:
    source, table = contract.source, f"bronze/{contract.source}"
    landing = layer_key("landing", source)

    @dg.asset(
        key=layer_key("bronze", source),
        deps=[landing],
        partitions_def=batches,
        tags=shape_tag("batch"),
        group_name=f"source_{source}",
        kinds={"bronze", "delta"},
        code_version=BRONZE_CODE,
        retry_policy=STEP_RETRY,
    )
    @classified
    def bronze(
        context: dg.AssetExecutionContext, pipeline: PipelineResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Exact, append-only copy of the batch's landing records, with lineage columns; a delivery
        is appended once, however often the partition is materialised."""
        batch, lake = context.partition_key, pipeline.lake()
        landed = read_raw_batch(contract, pipeline.settings().landing_dir / source / batch)
        memo = Memo(context, {landing.to_user_string(): landed.content_hash})

        def present(_: dg.AssetKey, previous: Previous) -> bool:
            return landed.files == 0 or lake.count(table, batch, {"_delivery": landed.content_hash}) > 0

        decision = memo.decide(present)
        if decision.skip:
            yield from memo.kept(decision)
            return
        existing = lake.read_batch(table, batch, bronze_lib.BRONZE_SCHEMA)
        rows = bronze_lib.new_delivery(
            landed.records, source=source, batch=batch, fmt=contract.format,
            delivery=landed.content_hash, existing=existing, now=datetime.now(UTC),
        )  # fmt: skip
        fault_point("bronze.before_write")
        version = (
            lake.insert_new(table, rows, bronze_lib.BRONZE_KEYS).version
            if rows is not None
            else lake.version(table)
        )
        fault_point("bronze.after_write")
        held = (
            landed.content_hash if landed.files else bronze_lib.latest_delivery_hash(existing) or EMPTY_HASH
        )
        metadata = {
            "dagster/row_count": bronze_lib.latest_delivery(rows if rows is not None else existing).height,
            "rows_appended": rows.height if rows is not None else 0,
            "delivery": held,
            "files": landed.files,
            "delta_version": version if version is not None else -1,
        }
        yield from memo.built(context.asset_key, bronze_lib.bronze_version(held), metadata, decision)

    return bronze
