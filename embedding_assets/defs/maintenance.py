"""Lake maintenance, a scheduled job: Delta OPTIMIZE (compaction), VACUUM and a log checkpoint on
every lake table; LanceDB compaction, index update and old-version cleanup on every model's
table. Both keep what the model rollback window (``EA_MODEL_RETENTION_H``) may still read."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.core.lake import Maintained
from embedding_assets.defs.health import table_writers
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.triggers import ACTIVE
from embedding_assets.embed.registry import REGISTRY_TABLE, RETIRED
from embedding_assets.evaluate.training import TRIPLES_TABLE
from embedding_assets.index.table import IndexMaintained
from embedding_assets.refine.report import QUALITY_TABLE

MAINTENANCE_JOB = "lake_maintenance"


def lake_tables(contracts: Mapping[str, Contract]) -> list[str]:
    """Every table the pipeline writes in the lake."""
    return sorted({*table_writers(contracts), REGISTRY_TABLE, QUALITY_TABLE, TRIPLES_TABLE})


def report(
    context: dg.OpExecutionContext, done: Sequence[Maintained | IndexMaintained], figures: dict[str, Any]
) -> None:
    """One log line per table, and the op's totals as its output's metadata."""
    for m in done:
        context.log.info(m.line())
    context.add_output_metadata({"tables": len(done), **figures})


@dg.op(
    description="Delta OPTIMIZE, VACUUM (retention: the model rollback window) and a checkpoint per table."
)
def maintain_lake(context: dg.OpExecutionContext, pipeline: PipelineResource) -> None:
    lake, retention_h = pipeline.lake(), pipeline.settings().model_retention_h
    done = [m for t in lake_tables(pipeline.contracts()) if (m := lake.maintain(t, retention_h)) is not None]
    report(context, done, {
        "files_before": sum(m.files_before for m in done),
        "files_after": sum(m.files_after for m in done),
        "files_vacuumed": sum(m.vacuumed for m in done),
        "retention_h": retention_h,
    })  # fmt: skip


@dg.op(description="LanceDB compaction, index update and cleanup of versions older than the rollback window.")
def maintain_index(context: dg.OpExecutionContext, pipeline: PipelineResource) -> None:
    state, retention = pipeline.registry_state(), pipeline.settings().retention
    specs = [m.spec for m in state.models.values() if m.role != RETIRED]
    done = [m for s in specs if (m := pipeline.index_table(s).maintain(retention)) is not None]
    report(context, done, {
        "fragments_before": sum(m.fragments_before for m in done),
        "fragments_after": sum(m.fragments_after for m in done),
        "versions_removed": sum(m.versions_before - m.versions_after for m in done),
    })  # fmt: skip


@dg.job(
    name=MAINTENANCE_JOB,
    description="Compacts and vacuums the lake's Delta tables and every model's LanceDB table; rows "
    "and search results do not change, time travel within the rollback window keeps working.",
    tags={"ea/kind": "maintenance"},
)
def lake_maintenance() -> None:
    maintain_lake()
    maintain_index()


def maintenance_schedule(cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="lake_maintenance_schedule",
        cron_schedule=cron,
        job=lake_maintenance,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs lake_maintenance (EA_MAINTENANCE_CRON, UTC); a tick while pipeline runs are "
        "in flight is skipped, so compaction never races a batch's commit.",
    )
    def lake_maintenance_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        busy = context.instance.get_run_records(dg.RunsFilter(statuses=ACTIVE), limit=1)
        if busy:
            return dg.SkipReason(
                f"run {busy[0].dagster_run.run_id[:8]} is in flight: maintenance waits for the next tick"
            )
        return dg.RunRequest(run_key=None)

    return lake_maintenance_schedule
