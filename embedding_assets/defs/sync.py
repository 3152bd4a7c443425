"""In-process sync: the landing sensor's plan, executed wave by wave until nothing is stale."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.orchestration import pipeline_nodes, plan_sync, register
from embedding_assets.defs.resources import PipelineResource

MAX_WAVES = 16
_DEFAULT_INSTANCE_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
SUMMED = (
    "rows_appended",
    "rows_read",
    "rows_quarantined",
    "duplicates_dropped",
    "chunks_total",
    "chunks_embedded",
    "chunks_reused",
    "chunks_upserted",
    "chunks_deleted",
    "docs_deleted",
)


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """The SQLite Dagster instance under ``$DAGSTER_HOME`` (default ``data/dagster``)."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        project_yaml = Path.cwd() / "dagster.yaml"
        config.write_text(project_yaml.read_text() if project_yaml.exists() else _DEFAULT_INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


@dataclass
class SyncSummary:
    runs: int = 0
    failed: list[str] = field(default_factory=list)
    blocked: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    new_batches: list[str] = field(default_factory=list)
    materialized: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # dagster/row_count per layer
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconciliation: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def render(self) -> str:
        lines = [f"runs launched: {self.runs}"]
        if self.new_batches:
            lines.append(f"new batches: {', '.join(self.new_batches)}")
        for layer in sorted(self.rows):
            lines.append(f"  {layer:<12} {self.rows[layer]:>7} rows in partitions materialised")
        t = self.totals
        lines.append(
            f"chunks: {t['chunks_total']} total, {t['chunks_embedded']} embedded, {t['chunks_reused']} reused; "
            f"index: {t['chunks_upserted']} upserted, {t['chunks_deleted']} deleted"
        )
        lines.append(
            f"rows: {t['rows_read']} read into silver, {t['rows_quarantined']} quarantined, "
            f"{t['duplicates_dropped']} duplicates dropped"
        )
        if self.reconciliation:
            lines.append(f"reconciliation: {self.reconciliation}")
        lines += [f"refused: {r}" for r in self.rejected]
        lines += [f"FAILED: {f}" for f in self.failed]
        lines += [f"BLOCKED: batch {b} at {', '.join(k)}" for b, k in self.blocked.items()]
        return "\n".join(lines)


def sync(
    instance: dg.DagsterInstance,
    pipeline: PipelineResource,
    *,
    echo: Callable[[str], None] = print,
) -> SyncSummary:
    settings = pipeline.settings()
    defs = build_defs(settings.contracts_dir, pipeline)
    job = defs.resolve_implicit_global_asset_job_def()
    nodes = pipeline_nodes(list(defs.assets or []))  # type: ignore[arg-type]
    summary = SyncSummary()
    for _wave in range(MAX_WAVES):
        plan = plan_sync(instance, nodes, pipeline)
        register(instance, plan)
        summary.rejected = list(plan.scan.rejected)
        summary.new_batches += plan.new_partitions
        summary.blocked = plan.blocked
        if not plan.runs or summary.failed:
            break
        for batch, keys in plan.runs.items():
            echo(f"[{batch}] materialising {len(keys)} assets: {', '.join(keys)}")
            result = job.execute_in_process(
                instance=instance,
                partition_key=batch,
                asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
                raise_on_error=False,
                tags={"ea/trigger": "sync"},
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            summary.runs += 1
            _collect(result, batch, summary, echo)
    return summary


def _collect(
    result: dg.ExecuteInProcessResult, batch: str, summary: SyncSummary, echo: Callable[[str], None]
) -> None:
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        key = mat.asset_key.to_user_string()
        meta = {k: v.value for k, v in mat.metadata.items()}
        summary.materialized[key] += 1
        layer = key.split("/")[0]
        summary.rows[layer] += int(meta.get("dagster/row_count", 0) or 0)  # type: ignore[arg-type]
        for name in SUMMED:
            if isinstance(meta.get(name), int):
                summary.totals[name] += int(meta[name])  # type: ignore[arg-type]
        shown = ", ".join(f"{n}={meta[n]}" for n in ("dagster/row_count", *SUMMED) if n in meta)
        echo(f"  ✓ {key} [{batch}] {shown.replace('dagster/row_count', 'rows')}")
    for check in result.get_asset_check_evaluations():
        mark = "✓" if check.passed else "✗"
        echo(f"  {mark} check {check.asset_key.to_user_string()}:{check.check_name}")
        if check.check_name == "index_matches_gold":
            m = {k: v.value for k, v in check.metadata.items()}
            summary.reconciliation = (
                f"{'ok' if check.passed else 'DRIFT'} (expected {m.get('expected')}, actual {m.get('actual')}, "
                f"missing {m.get('missing')}, extra {m.get('extra')}, stale {m.get('stale')})"
            )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data is not None:
                error = event.step_failure_data.error
                message = error.message.strip().splitlines()[0] if error else "unknown error"
                summary.failed.append(f"[{batch}] {event.step_key}: {message}")
                echo(f"  ✗ {event.step_key}: {message}")
        if not summary.failed:
            summary.failed.append(f"[{batch}] run failed")
