"""What a batch's run did, and a sync's summary of its runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.execution.execution_result import ExecutionResult

from embedding_assets.defs.memo import MEMO, MEMO_REASON

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


@dataclass(frozen=True)
class Materialised:
    asset: str
    rebuilt: bool
    reason: str
    figures: dict[str, Any]


@dataclass(frozen=True)
class Checked:
    asset: str
    name: str
    passed: bool
    blocking: bool
    description: str
    figures: dict[str, Any]


@dataclass(frozen=True)
class RunOutcome:
    """A run's result in plain values, so a worker process can hand it back."""

    batch: str  # the run's partition: a batch, a ``batch|model`` key or a model
    run_id: str
    success: bool
    materialised: list[Materialised]
    checked: list[Checked]
    failures: list[str]
    shape: str = "batch"  # the partition's shape: batch, batch_model or model


def _plain(metadata: Any) -> dict[str, Any]:
    values = {k: v.value for k, v in metadata.items()}
    return {k: v for k, v in values.items() if isinstance(v, int | float | str | bool)}


def outcome_of(result: ExecutionResult, batch: str, defs: dg.Definitions, shape: str = "batch") -> RunOutcome:
    graph = defs.resolve_asset_graph()
    materialised = []
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        meta = _plain(mat.metadata)
        materialised.append(
            Materialised(
                mat.asset_key.to_user_string(), meta.get(MEMO) != "kept", str(meta.get(MEMO_REASON, "")), meta
            )
        )
    checked = [
        Checked(
            c.asset_key.to_user_string(),
            c.check_name,
            c.passed,
            bool(graph.get_check_spec(c.asset_check_key).blocking),
            c.description or "",
            _plain(c.metadata),  # type: ignore[attr-defined]
        )  # fmt: skip
        for c in result.get_asset_check_evaluations()
    ]
    failures = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None and event.step_failure_data.error:
            error = event.step_failure_data.error
            if error.cls_name != "DagsterAssetCheckFailedError":
                line = error.message.strip().splitlines()[0]
                if error.cls_name == "Failure":  # ours: the description is the root cause already
                    line = line.split(": ", 1)[-1]
                failures.append(f"{event.step_key}: {line}")
    if not result.success and not failures and not any(c.blocking and not c.passed for c in checked):
        failures.append("the run failed")
    return RunOutcome(batch, result.run_id, result.success, materialised, checked, failures, shape)


@dataclass
class SyncSummary:
    runs: int = 0
    runs_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by partition shape
    failed: list[str] = field(default_factory=list)
    blocked: dict[str, list[str]] = field(default_factory=dict)  # batch -> "asset: check: why"
    rejected: list[str] = field(default_factory=list)
    new_batches: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    reaped: list[str] = field(default_factory=list)
    rebuilt: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kept: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: dict[str, int] = field(
        default_factory=lambda: defaultdict(int)
    )  # dagster/row_count per rebuilt layer
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reconciliations: dict[str, str] = field(default_factory=dict)  # model -> its index against gold
    damage: list[str] = field(default_factory=list)  # damaged lake tables: the sync stopped before acting
    recovery: str = ""  # what to run for them
    index_rebuilt: list[str] = field(default_factory=list)  # models whose lost index was rebuilt
    stopped: str = ""  # the signal that stopped the sync at a safe point
    models: list[str] = field(default_factory=list)  # model partitions registered by this sync
    retired: list[str] = field(default_factory=list)  # models past the rollback window, retired
    notes: list[str] = field(default_factory=list)  # things worth knowing that are not failures

    @property
    def reconciliation(self) -> str:
        """The index against gold: the first model that drifted, else the last one checked."""
        found = list(self.reconciliations.values())
        return next((r for r in found if r.startswith("DRIFT")), found[-1] if found else "")

    def deferred(self, model: str) -> bool:
        """Whether this sync left some of the model's partitions to another run still writing
        them (so a drift of its index is that run's work in flight, not a fault)."""
        return any(b == model or b.endswith(f"|{model}") for b in self.busy)

    @property
    def drifted(self) -> list[str]:
        """Models whose index drifted from gold, other than those another run is still building."""
        return sorted(
            m for m, r in self.reconciliations.items() if r.startswith("DRIFT") and not self.deferred(m)
        )

    def _reconciliation_lines(self) -> list[str]:
        deferred = " (another run is still building it; the next sync checks again)"
        return [
            f"reconciliation: {model}: {r}" + (deferred if self.deferred(model) else "")
            for model, r in sorted(self.reconciliations.items())
        ]

    @property
    def ok(self) -> bool:
        drift = bool(self.drifted)
        return not self.failed and not self.blocked and not self.damage and not drift and not self.stopped

    def add(self, outcome: RunOutcome, echo: Callable[[str], None]) -> None:
        self.runs += 1
        self.runs_by[outcome.shape] += 1
        for m in outcome.materialised:
            (self.rebuilt if m.rebuilt else self.kept)[m.asset] += 1
            echo(f"  {'✓' if m.rebuilt else '='} {m.asset} [{outcome.batch}] " + _shown(m))
            if m.rebuilt:
                self.rows[_layer(m.asset)] += int(m.figures.get("dagster/row_count", 0))
                for name in SUMMED:
                    self.totals[name] += (
                        int(m.figures.get(name, 0)) if isinstance(m.figures.get(name), int) else 0
                    )
        kept = {m.asset for m in outcome.materialised if not m.rebuilt}
        for c in outcome.checked:
            if not c.passed and c.asset not in kept:  # a kept partition's outcomes were reported before
                echo(f"  ✗ check {c.asset}:{c.name}: {c.description}")
            if c.blocking and not c.passed:
                self.blocked.setdefault(outcome.batch, []).append(f"{c.asset}: {c.name}: {c.description}")
            if c.name == "index_matches_gold":
                self.reconciliations[outcome.batch.rsplit("|", 1)[-1]] = c.description
        self.failed += [f"[{outcome.batch}] {f}" for f in outcome.failures]
        for failure in outcome.failures:
            echo(f"  ✗ {failure}")

    def render(self) -> str:
        if self.damage:
            return f"DAMAGED: the sync stopped before running anything\n{self.recovery}"
        t = self.totals
        lines = [
            f"index: it was missing or empty; rebuilt from the embeddings table ({r})"
            for r in self.index_rebuilt
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"models: registered {', '.join(self.models)}"] if self.models else []
        lines += [f"models: retired {r}" for r in self.retired]
        shapes = {"batch": "batch", "batch_model": "batch and model", "model": "model evaluation"}
        by = ", ".join(f"{n} {shapes[s]}" for s, n in sorted(self.runs_by.items()) if n)
        lines += [f"runs launched: {self.runs}" + (f" ({by})" if by else "")]
        lines += [f"new batches: {', '.join(self.new_batches)}"] if self.new_batches else []
        lines += [
            f"  {layer:<12} {n:>7} rows in partitions rebuilt" for layer, n in sorted(self.rows.items())
        ]
        lines.append(
            f"assets: {sum(self.rebuilt.values())} partitions rebuilt, {sum(self.kept.values())} kept (unchanged)"
        )
        lines.append(
            f"chunks: {t['chunks_total']} total, {t['chunks_embedded']} embedded, {t['chunks_reused']} reused; "
            f"index: {t['chunks_upserted']} upserted, {t['chunks_deleted']} deleted"
        )
        lines.append(
            f"rows: {t['rows_read']} read into silver, {t['rows_quarantined']} quarantined, "
            f"{t['duplicates_dropped']} duplicates dropped"
        )
        lines += self._reconciliation_lines()
        lines += [
            f"recovered: run {r} had lost its process; marked failed, its batch ran again"
            for r in self.reaped
        ]
        lines += [f"skipped: {b} is being materialised by another run" for b in self.busy]
        lines += [f"skipped: {k} is still being written; the next sync takes it" for k in self.unsettled]
        lines += [f"refused: {r}" for r in self.rejected]
        lines += (
            [f"STOPPED by {self.stopped} at a safe point: the next sync completes the work"]
            if self.stopped
            else []
        )
        lines += [f"FAILED: {f}" for f in self.failed if "StopRequested" not in f]
        for batch, why in sorted(self.blocked.items()):
            lines += [f"BLOCKED: batch {batch}", *(f"  {w}" for w in why)]
        return "\n".join(lines)


def _layer(asset: str) -> str:
    """``bronze`` for ``bronze_helpdesk``; shared assets are layers of their own."""
    layer = asset.split("_", 1)[0]
    return layer if layer in ("landing", "bronze", "silver", "quarantine") else asset


def _shown(m: Materialised) -> str:
    if not m.rebuilt:
        return f"kept: {m.reason}"
    shown = ", ".join(f"{n}={m.figures[n]}" for n in ("dagster/row_count", *SUMMED) if n in m.figures)
    return shown.replace("dagster/row_count", "rows")
