"""silver_<source> and quarantine_<source>: typed, migrated, validated and deduplicated rows, and
every row that did not make it, with the reason; silver's checks block bad batches."""

from collections.abc import Iterator
from functools import cache
from typing import Any

import dagster as dg
import polars as pl
from dagster_pandera import pandera_schema_to_dagster_type

from embedding_assets.contracts.load import contract_version, load_contract
from embedding_assets.contracts.model import Contract
from embedding_assets.core.faults import fault_point
from embedding_assets.core.lake import Lake
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.failures import classified
from embedding_assets.defs.keys import batches, layer_key, shape_tag
from embedding_assets.defs.memo import Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import PipelineResource, contract_key
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.memo import Previous
from embedding_assets.refine.report import QUALITY_TABLE, REPORT_SCHEMA, BatchQuality, assess, silver_checks
from embedding_assets.refine.schemas import SilverDocuments, silver_failures
from embedding_assets.refine.silver import (
    SilverResult,
    bronze_to_silver,
    documents_version,
    quarantine_version,
)
from embedding_assets.refine.tables import SILVER_SCHEMA

SILVER_CODE = "silver-2"  # 2: personal data masked (a lake built before is masked on the next run)


@cache
def silver_column_schema() -> dg.TableSchema:
    """The pandera silver schema as a Dagster column schema, shown on the asset in the UI."""
    schema = pandera_schema_to_dagster_type(SilverDocuments).metadata["schema"]
    return schema.schema  # type: ignore[attr-defined]


def refine(lake: Lake, contract: Contract, batch: str) -> tuple[SilverResult, BatchQuality]:
    """The batch's latest bronze delivery through silver, judged against the trailing batches."""
    rows = bronze_lib.latest_delivery(
        lake.read_batch(f"bronze/{contract.source}", batch, bronze_lib.BRONZE_SCHEMA)
    )
    result = bronze_to_silver(contract, bronze_lib.as_raw_records(rows), batch)
    n = contract.quality.drift.reference_batches
    reference = lake.batches_before(f"silver/{contract.source}", batch, n, SILVER_SCHEMA)
    return result, assess(contract, result, batch, reference, schema_failures=silver_failures(result.silver))


def silver_metadata(result: SilverResult, quality: BatchQuality, version: int) -> dict[str, Any]:
    return {
        "dagster/row_count": result.silver.height,
        "rows_read": result.rows_read,
        "rows_quarantined": quality.quarantined,
        "duplicates_dropped": result.duplicates_dropped,
        "superseded": quality.superseded,
        "near_duplicates_flagged": quality.near_duplicates_flagged,
        "deleted_markers": int(result.silver["deleted"].sum()),
        "quarantine_rate": quality.quarantine_rate,
        "duplicate_rate": quality.duplicate_rate,
        "outlier_rate": quality.outlier_rate,
        **{f"drift/{k}": v for k, v in quality.drift.items()},
        "rows_migrated": result.migrated,
        **{f"pii/{kind}": n for kind, n in result.pii.items()},  # masked or dropped, per kind
        "delta_version": version,
        "contract_version": quality.contract_version,
        "quality_report": dg.MetadataValue.md(quality.markdown()),
    }


def quarantine_metadata(result: SilverResult, quality: BatchQuality, version: int) -> dict[str, Any]:
    by_rule = "".join(f"| {rule} | {n} |\n" for rule, n in quality.by_rule.items())
    return {
        "dagster/row_count": result.rejected.height,
        "invalid": quality.quarantined,
        "delta_version": version,
        "by_rule": dg.MetadataValue.md("| rule | rows |\n|---|---|\n" + by_rule),
    }


def write_refined(
    lake: Lake, source: str, batch: str, result: SilverResult, quality: BatchQuality
) -> tuple[int, int]:
    """Silver, quarantine and the quality report of the batch; (silver, quarantine) Delta versions."""
    silver = lake.overwrite_batch(f"silver/{source}", result.silver, batch)
    fault_point("silver.between_tables")
    quarantine = lake.overwrite_batch(f"quarantine/{source}", result.rejected, batch)
    report = pl.DataFrame(
        [(source, batch, quality.to_json(), not quality.blocked)], schema=REPORT_SCHEMA, orient="row"
    )
    lake.overwrite_batch(QUALITY_TABLE, report, batch, {"source": source})
    fault_point("silver.after_write")
    return silver.version, quarantine.version


def silver_consumes(source: str) -> Consumes:
    return Consumes(assets=(layer_key("bronze", source),), settings=(contract_key(source),))


def silver_asset(contract: Contract) -> dg.AssetsDefinition:
    source = contract.source
    silver_key, quarantine_key = layer_key("silver", source), layer_key("quarantine", source)
    consumes = silver_consumes(source)
    tables = {silver_key: f"silver/{source}", quarantine_key: f"quarantine/{source}"}
    group = f"source_{source}"

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                silver_key,
                deps=consumes.deps(),
                partitions_def=batches,
                tags=shape_tag("batch"),
                group_name=group,
                code_version=SILVER_CODE,
                kinds={"silver", "delta", "pandera"},
                description=f"Typed, validated, deduplicated {source} rows under the current contract.",
                metadata={"dagster/column_schema": silver_column_schema()},
            ),
            dg.AssetSpec(
                quarantine_key,
                deps=consumes.deps(),
                partitions_def=batches,
                tags=shape_tag("batch"),
                group_name=group,
                code_version=SILVER_CODE,
                kinds={"delta"},
                description=f"Every {source} row that did not reach silver: invalid rows with every reason, "
                "and deduplication losers (duplicate, near_duplicate, superseded) with their winner.",
            ),
        ],  # fmt: skip
        check_specs=[
            dg.AssetCheckSpec(
                name, asset=silver_key, blocking=blocking, partitions_def=batches, description=text
            )
            for name, blocking, text in silver_checks(contract)
        ],
        partitions_def=batches,
        name=f"silver_{source}",
        retry_policy=STEP_RETRY,
    )
    @classified
    def silver(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
        batch, lake = context.partition_key, pipeline.lake()
        current = load_contract(contract.path)  # as it is on disk now, not as the code location loaded it
        versions = {contract_key(source): contract_version(current)}
        memo = Memo(context, consumed_versions(context.instance, consumes, batch, versions))

        def present(key: dg.AssetKey, previous: Previous) -> bool:
            return lake.count(tables[key], batch) == previous.row_count

        decision = memo.decide(present)
        if decision.skip:
            yield from memo.kept(decision)
            return
        result, quality = refine(lake, current, batch)
        silver_version, quarantine_version_ = write_refined(lake, source, batch, result, quality)
        yield from memo.built(
            silver_key, documents_version(result.silver), silver_metadata(result, quality, silver_version), decision,
            quality.checks,
        )  # fmt: skip
        yield from memo.built(
            quarantine_key, quarantine_version(result.rejected),
            quarantine_metadata(result, quality, quarantine_version_), decision,
        )  # fmt: skip

    return silver
