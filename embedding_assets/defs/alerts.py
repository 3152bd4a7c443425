"""Alerting: a failed run and a failed blocking check (or a late batch) each post one JSON alert
to ``EA_ALERT_WEBHOOK`` and are logged; with no webhook set they are only logged."""

import json
from collections.abc import Sequence
from typing import Any

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.core.alerts import Alert, deliver
from embedding_assets.defs.freshness import FRESHNESS_CHECK

PARTITION_TAG = "dagster/partition"
ALERTED_CHECKS = (FRESHNESS_CHECK,)  # non-blocking checks that alert all the same
PAGE = 500


def run_failure_alert(run: dg.DagsterRun, message: str, steps: Sequence[str]) -> Alert:
    return Alert(
        "run_failure",
        f"run {run.run_id[:8]} of {run.job_name} failed",
        detail="\n".join([message, *steps]).strip(),
        run_id=run.run_id,
        job=run.job_name,
        partition=run.tags.get(PARTITION_TAG),
    )


def check_alert(evaluation: dg.AssetCheckEvaluation, run_id: str | None) -> Alert:
    asset = evaluation.asset_key.to_user_string()
    return Alert(
        "freshness" if evaluation.check_name == FRESHNESS_CHECK else "check_failure",
        f"check {asset}:{evaluation.check_name} failed",
        detail=evaluation.description or "",
        run_id=run_id or None,
        partition=evaluation.partition,
        asset=asset,
        check=evaluation.check_name,
    )


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts each failed run, with its failed steps' errors, to EA_ALERT_WEBHOOK (and logs it).",
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    steps = [
        f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
        for e in context.get_step_failure_events()
        if e.step_failure_data.error is not None
    ]
    alert = run_failure_alert(context.dagster_run, context.failure_event.message or "", steps)
    deliver(alert, Settings.from_env().alert_webhook, context.log.error, context.log.warning)


def _key(evaluation: dg.AssetCheckEvaluation) -> str:
    return f"{evaluation.asset_check_key.to_user_string()}[{evaluation.partition or ''}]"


def alerted_checks(graph: Any) -> list[dg.AssetCheckKey]:
    """The checks whose failures alert: every blocking one, and those in ``ALERTED_CHECKS``."""
    keys = graph.asset_check_keys
    return sorted(
        (k for k in keys if graph.get_check_spec(k).blocking or k.name in ALERTED_CHECKS),
        key=lambda k: k.to_user_string(),
    )


def new_evaluations(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, after: int
) -> list[tuple[int, str, dg.AssetCheckEvaluation]]:
    """(id, run id, evaluation) of the check's executions after ``after``, oldest first."""
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=PAGE)
    out = []
    for record in history:
        data = (
            record.event.dagster_event.event_specific_data
            if record.event and record.event.dagster_event
            else None
        )
        if record.id > after and isinstance(data, dg.AssetCheckEvaluation):
            out.append((record.id, record.run_id, data))
    return sorted(out, key=lambda t: t[0])


@dg.sensor(
    name="check_failure_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts each blocking check (and searchable_within_sla) that starts failing to "
    "EA_ALERT_WEBHOOK, once until it passes again (and logs it).",
)
def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    state = json.loads(context.cursor) if context.cursor else {"after": {}, "failing": []}
    started = not context.cursor  # the first tick starts from now, as Dagster's run-status sensors do
    after, failing, sent = dict(state["after"]), set(state["failing"]), 0
    webhook = Settings.from_env().alert_webhook
    for key in alerted_checks(context.repository_def.asset_graph):  # type: ignore[union-attr]
        found = new_evaluations(context.instance, key, int(after.get(key.to_user_string(), 0)))
        for _, run_id, evaluation in [] if started else found:
            if evaluation.passed:
                failing.discard(_key(evaluation))
            elif _key(evaluation) not in failing:
                failing.add(_key(evaluation))
                deliver(check_alert(evaluation, run_id), webhook, context.log.error, context.log.warning)
                sent += 1
        if found:
            after[key.to_user_string()] = found[-1][0]
    context.update_cursor(json.dumps({"after": after, "failing": sorted(failing)}))
    return dg.SkipReason(f"{sent} alert(s) sent; {len(failing)} check(s) failing")
