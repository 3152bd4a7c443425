"""Freshness: each batch's landed -> searchable lag, recorded on its ``vector_index``
materialisations (numeric, so the UI plots it), and the check ``searchable_within_sla``: evaluated
in the run that indexes a batch, and by ``freshness_sensor`` for a batch that is still waiting."""

import json
import time

import dagster as dg

from embedding_assets.defs.keys import VECTOR_INDEX, batch_model, batch_models
from embedding_assets.defs.memo import previous_record
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.index.freshness import landed_batch, landed_batches, overdue
from embedding_assets.ingest.landing import scan_landing
from embedding_assets.refine.report import CheckOutcome

FRESHNESS_CHECK = "searchable_within_sla"
LAG = "landed_to_searchable_s"
FRESHNESS_SPEC = dg.AssetCheckSpec(
    FRESHNESS_CHECK,
    asset=VECTOR_INDEX,
    blocking=False,
    partitions_def=batch_models,
    description="The batch was searchable within its sources' freshness SLA (freshness_sla_minutes in "
    "the contract, default 10) of landing, or of the model's registration when that came later.",
)


def freshness_outcome(pipeline: PipelineResource, batch: str, spec: ModelSpec, now: float) -> CheckOutcome:
    """The batch's lag in this model's index, made searchable at ``now``."""
    settings = pipeline.settings()
    landed = landed_batch(settings.landing_dir, pipeline.contracts(), batch)
    if landed is None:
        return CheckOutcome(
            FRESHNESS_CHECK, True, False, "the batch's landing files are gone: no lag to measure"
        )
    added = pipeline.registry_state().get(spec.name).added_at.timestamp()
    lag = landed.lag_s(now, since=added)
    message = f"searchable {lag:.1f} s after it landed (SLA {landed.sla_s / 60:g} min)"
    return CheckOutcome(FRESHNESS_CHECK, lag <= landed.sla_s, False, message, {LAG: round(lag, 3)})


def searchable_at(instance: dg.DagsterInstance, batch: str, model: str) -> float | None:
    record = previous_record(instance, VECTOR_INDEX, batch_model(batch, model))
    return record.timestamp if record is not None else None


def late_evaluations(
    instance: dg.DagsterInstance, pipeline: PipelineResource, reported: set[str], now: float
) -> tuple[list[dg.AssetCheckEvaluation], set[str]]:
    """A failed ``searchable_within_sla`` for each batch that waits past its SLA for the serving
    model's index and was not reported yet; and the partitions that are late now."""
    serving = pipeline.ensure_registry().serving
    if serving is None:
        return [], set()
    contracts = pipeline.contracts()
    landed = landed_batches(scan_landing(pipeline.settings().landing_dir, contracts).batches, contracts)
    late = overdue(landed, {b: searchable_at(instance, b, serving.name) for b in landed}, now)
    out = [
        dg.AssetCheckEvaluation(
            asset_key=VECTOR_INDEX,
            check_name=FRESHNESS_CHECK,
            passed=False,
            partition=key,
            severity=dg.AssetCheckSeverity.WARN,
            description=o.line(),
            blocking=False,
            metadata={"waited_s": round(o.waited_s, 1), "sla_s": o.sla_s},
        )  # fmt: skip
        for o in late
        if (key := batch_model(o.batch, serving.name)) not in reported
    ]
    return out, {batch_model(o.batch, serving.name) for o in late}


@dg.sensor(
    name="freshness_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails searchable_within_sla for each landed batch the serving model's index has not "
    "taken within its SLA (once per batch and landing); the alert sensor posts it.",
)
def freshness_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SkipReason:
    reported = set(json.loads(context.cursor)) if context.cursor else set()
    found, late = late_evaluations(context.instance, pipeline, reported, time.time())
    for evaluation in found:
        context.instance.report_runless_asset_event(evaluation)
        context.log.warning(evaluation.description or "")
    context.update_cursor(json.dumps(sorted(late)))  # a batch indexed since leaves it; landing again re-arms
    return dg.SkipReason(f"{len(late)} batch(es) past their SLA; {len(found)} reported now")
