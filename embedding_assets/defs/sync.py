"""In-process sync: the landing sensor's plan, executed wave by wave until nothing is stale."""

from __future__ import annotations

import fcntl
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.config import Settings
from embedding_assets.defs.assets import DEAD_LETTER_TABLE
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.orchestration import (
    pipeline_nodes,
    plan_sync,
    process_tags,
    reap_orphaned_runs,
    register,
)
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.state import state_for
from embedding_assets.embed.encode import DEAD_LETTER_SCHEMA
from embedding_assets.ingest.landing import EMPTY_HASH
from embedding_assets.lib.forecast import PartitionForecast, forecast_partition
from embedding_assets.lib.planner import EARLIER, Materialized, Node, earlier_version, forecast_runs

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
    # Two processes creating a fresh SQLite instance at once both stamp its schema version and
    # leave it unusable; an exclusive lock serialises the first-time set-up.
    with (home / ".instance.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            # SQLite creates the cross-run index shard only when its file is missing; a process
            # killed between creating the file and its tables leaves a file without tables, which
            # Dagster never repairs before it checks for them. Opening the shard's connection runs
            # Dagster's own idempotent set-up (create missing tables, stamp the schema version).
            index_connection = getattr(instance.event_log_storage, "index_connection", None)
            if index_connection is not None:
                with index_connection():
                    pass
            return instance
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class SyncSummary:
    runs: int = 0
    failed: list[str] = field(default_factory=list)
    blocked: dict[str, list[str]] = field(default_factory=dict)
    blocked_why: dict[str, dict[str, str]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    new_batches: list[str] = field(default_factory=list)
    materialized: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # dagster/row_count per layer
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconciliation: str = ""
    busy: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)

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
        lines += [f"recovered: run {r} had lost its process; marked failed, re-planned" for r in self.reaped]
        lines += [f"skipped: batch {b} is being materialised by another run" for b in self.busy]
        lines += [f"refused: {r}" for r in self.rejected]
        lines += [f"FAILED: {f}" for f in self.failed]
        for b, keys in self.blocked.items():
            lines.append(f"BLOCKED: batch {b} at {', '.join(keys)}")
            lines += [f"  {asset}: {why}" for asset, why in self.blocked_why.get(b, {}).items()]
        return "\n".join(lines)


def sync(
    instance: dg.DagsterInstance,
    pipeline: PipelineResource,
    *,
    echo: Callable[[str], None] = print,
    retry_dead_letters: bool = False,
) -> SyncSummary:
    """Run what the plan says, wave by wave, until nothing is stale (or something failed).

    ``retry_dead_letters`` also re-runs ``embeddings`` for every partition with dead-lettered
    chunks: cached vectors are reused, so only the failed chunks are tried again."""
    settings = pipeline.settings()
    defs = build_defs(settings.contracts_dir, pipeline)
    job = defs.resolve_implicit_global_asset_job_def()
    nodes = pipeline_nodes(list(defs.assets or []))  # type: ignore[arg-type]
    summary = SyncSummary()
    tags = {"ea/trigger": "sync", **process_tags()}
    for _wave in range(MAX_WAVES):
        summary.reaped += reap_orphaned_runs(instance)
        plan = plan_sync(instance, nodes, pipeline)
        register(instance, plan)
        summary.rejected = list(plan.scan.rejected)
        summary.new_batches += plan.new_partitions
        summary.blocked = plan.blocked
        summary.blocked_why = plan.blocked_why
        summary.busy = sorted(plan.busy & set(plan.plans))
        runs = plan.runs
        if retry_dead_letters and _wave == 0:
            for batch in dead_lettered_batches(pipeline):
                if batch in plan.plans and batch not in plan.busy and "embeddings" not in runs.get(batch, []):
                    runs[batch] = [*runs.get(batch, []), "embeddings"]
        if not runs or summary.failed:
            break
        for batch, keys in sorted(runs.items()):
            echo(f"[{batch}] materialising {len(keys)} assets: {', '.join(keys)}")
            result = job.execute_in_process(
                instance=instance,
                partition_key=batch,
                asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
                raise_on_error=False,
                tags=tags,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            summary.runs += 1
            _collect(result, batch, summary, echo)
    return summary


def dead_lettered_batches(pipeline: PipelineResource) -> list[str]:
    dead = pipeline.lake().read(
        DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, pl.col("model_id") == pipeline.model_id()
    )
    return sorted(set(dead["batch"].to_list()))


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
                f"missing {m.get('missing')}, extra {m.get('extra')}, stale {m.get('stale')}, "
                f"dead-lettered {m.get('dead_lettered')})"
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


ASSUMED_CHUNKS_PER_S = {"cpu": 50.0, "cuda": 1500.0}


@dataclass
class SyncForecast:
    """What ``sync`` would do now; computed without writing anything."""

    new_batches: list[str]
    runs: dict[str, list[str]]
    forecasts: dict[str, PartitionForecast]
    blocked: dict[str, list[str]]
    chunks_per_s: float
    rate_source: str

    @property
    def chunks_to_embed(self) -> int:
        return sum(f.chunks_to_embed for b, f in self.forecasts.items() if "embeddings" in self.runs[b])

    @property
    def chunks_reused(self) -> int:
        return sum(f.chunks_reused for b, f in self.forecasts.items() if "embeddings" in self.runs[b])

    @property
    def estimated_embed_s(self) -> float:
        return self.chunks_to_embed / self.chunks_per_s if self.chunks_per_s else 0.0

    def render(self) -> str:
        lines = ["dry run: nothing is written"]
        if self.new_batches:
            lines.append(f"new batches: {', '.join(self.new_batches)}")
        if not self.runs:
            lines.append("nothing to do: every partition is up to date")
        for batch, keys in self.runs.items():
            lines.append(f"[{batch}] would materialise {len(keys)} assets: {', '.join(keys)}")
            if "embeddings" in keys:
                f = self.forecasts[batch]
                lines.append(
                    f"  {f.chunks_total} chunks: {f.chunks_to_embed} to embed, {f.chunks_reused} reused from cache"
                )
        lines += [f"BLOCKED: batch {b} at {', '.join(k)}" for b, k in self.blocked.items()]
        lines.append(
            f"total: {len(self.runs)} partitions, {sum(map(len, self.runs.values()))} asset materialisations, "
            f"{self.chunks_to_embed} chunks to embed, {self.chunks_reused} reused; "
            f"estimated embedding time {self.estimated_embed_s:.1f}s at {self.chunks_per_s:.0f} chunks/s "
            f"({self.rate_source})"
        )
        return "\n".join(lines)


def forecast(instance: dg.DagsterInstance, pipeline: PipelineResource) -> SyncForecast:
    """The dry run: plan as ``sync`` would, then play every stale partition forward in memory."""
    settings = pipeline.settings()
    defs = build_defs(settings.contracts_dir, pipeline)
    nodes = pipeline_nodes(list(defs.assets or []))  # type: ignore[arg-type]
    plan = plan_sync(instance, nodes, pipeline, skip_busy=False)
    contracts = pipeline.contracts()
    embedder = pipeline.embedder()
    chunker = pipeline.chunker(embedder)
    lake = pipeline.lake()
    config = pipeline.config_versions(contracts)
    runs: dict[str, list[str]] = {}
    forecasts: dict[str, PartitionForecast] = {}
    landing = plan.scan.hashes()
    state = state_for(instance, [dg.AssetKey.from_user_string(n.key) for n in nodes], list(plan.plans))
    pending: frozenset[str] = frozenset()
    for batch, partition_plan in plan.plans.items():
        if not any(s.value in ("run", "wait") for s in partition_plan.status.values()):
            continue
        fc = forecast_partition(
            contracts, settings.landing_dir, lake, chunker, embedder.model_id, batch, pending
        )
        sources = {f"landing/{s}": landing.get((s, batch), EMPTY_HASH) for s in contracts} | config
        sources.update(_earlier_sources(nodes, state, batch))
        keys = forecast_runs(nodes, sources, state[batch], fc.versions)
        if keys:
            runs[batch], forecasts[batch] = keys, fc
            if "embeddings" in keys:
                pending |= fc.hashes_to_embed
    rate, why = _embedding_rate(instance, embedder.model_id, embedder.device)
    return SyncForecast(plan.new_partitions, runs, forecasts, plan.blocked, rate, why)


def _earlier_sources(
    nodes: list[Node], state: dict[str, dict[str, Materialized]], batch: str
) -> dict[str, str]:
    out = {}
    for node in nodes:
        for dep in node.deps:
            if dep.startswith(EARLIER):
                of = dep.removeprefix(EARLIER)
                out[dep] = earlier_version(
                    {p: s[of].data_version for p, s in state.items() if of in s}, batch
                )
    return out


def _embedding_rate(instance: dg.DagsterInstance, model_id: str, device: str) -> tuple[float, str]:
    """Chunks per second measured by recent ``embeddings`` runs of this model, else an assumption."""
    chunks, seconds, used = 0, 0.0, 0
    records = instance.fetch_materializations(dg.AssetKey("embeddings"), limit=50, ascending=False).records
    for record in records:
        mat = record.asset_materialization
        meta: dict[str, Any] = {k: v.value for k, v in mat.metadata.items()} if mat else {}
        if meta.get("model_id") == model_id and float(meta.get("encode_seconds") or 0) > 0:
            chunks += int(meta.get("chunks_embedded") or 0)
            seconds += float(meta["encode_seconds"])
            used += 1
    if chunks >= 50 and seconds > 0:
        return chunks / seconds, f"measured by {used} recent embeddings runs of this model"
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return ASSUMED_CHUNKS_PER_S[kind], f"assumed for {kind}: no runs of this model to measure yet"
