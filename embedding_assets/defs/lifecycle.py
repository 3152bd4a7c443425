"""The model lifecycle as Dagster work: add a candidate (refused at once if it does not load),
build its shadow for every batch as a Dagster backfill, evaluate on the canary, promote behind
the gate, roll back within the window.

The shadow build is a backfill of the candidate's ``batch|model`` partitions and its
``search_index`` partition. With a Dagster daemon running (``make dev``, production) it is
submitted to the daemon like one launched from the UI. Without one it runs here, in this process,
as ``dagster job backfill`` runs a job's backfill: each partition's run carries the backfill's id,
and the backfill is recorded when its runs are done, so the UI shows it either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
from dagster._core.definitions.selector import (
    PartitionRangeSelector,
    PartitionsByAssetSelector,
    PartitionsSelector,
)
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.storage.tags import BACKFILL_ID_TAG
from dagster._core.utils import make_new_backfill_id

from embedding_assets.config import Settings
from embedding_assets.defs.evaluate import CANARY_CHECK, canary_figures
from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.instance import process_tags
from embedding_assets.defs.keys import MODEL_KEYS, SEARCH_INDEX, batch_model
from embedding_assets.defs.models import register_models
from embedding_assets.defs.outcome import RunOutcome
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import observe, ready_batches, run_partition
from embedding_assets.defs.triggers import (
    REASON_TAG,
    TRIGGER_TAG,
    changed_model_settings,
    model_settings_observations,
)
from embedding_assets.embed.embedder import describe_api_spec, describe_spec
from embedding_assets.embed.registry import ModelSpec, RegistryError, add_event, promote_event, rollback_event
from embedding_assets.evaluate.search_quality import promotion_problems
from embedding_assets.index.reader import DEFAULT_MODE

SHADOW_TAG = "ea/shadow"  # on a shadow build's runs and backfill: the candidate's name
HEARTBEAT_FRESH_S = 90.0


class ModelLoadError(RegistryError):
    """A model that cannot be added: its files do not load or do not embed."""


def probe(pipeline: PipelineResource, spec: ModelSpec) -> None:
    """Load the model and embed one text now, so a model that does not load fails at ``add``
    rather than in a later run."""
    try:
        vectors = np.asarray(pipeline.embedder(spec).encode(["a probe sentence to check the model embeds"]))
    except Exception as exc:  # anything the loader raises: the message names it
        raise ModelLoadError(
            f"model {spec.target!r} does not load: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None
    if vectors.shape != (1, spec.dimension) or not np.isfinite(vectors).all():
        raise ModelLoadError(
            f"model {spec.target!r} embeds badly: shape {vectors.shape}, want (1, {spec.dimension})"
        )


def describe(target: str, kind: str, name: str | None, **extra: str) -> ModelSpec:
    try:
        return describe_spec(target, kind, name, **extra)
    except Exception as exc:
        raise ModelLoadError(
            f"model {target!r} cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None


def describe_api(model: str, name: str | None, api: Mapping[str, Any]) -> ModelSpec:
    try:
        return describe_api_spec(model, name=name, **api)
    except Exception as exc:
        raise ModelLoadError(
            f"model {model!r} at {api.get('api_base')} cannot be used: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None


def daemon_alive(instance: dg.DagsterInstance) -> bool:
    """A Dagster daemon with a backfill loop heartbeats on this instance (``make dev``, production)."""
    beat = instance.get_daemon_heartbeats().get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < HEARTBEAT_FRESH_S


@dataclass
class ShadowBuild:
    model: str
    backfill_id: str
    by_daemon: bool  # submitted to the daemon (True) or run here (False)
    partitions: list[str]
    outcomes: list[RunOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [f for o in self.outcomes for f in o.failures]


def shadow_backfill(
    instance: dg.DagsterInstance,
    pipeline: PipelineResource,
    spec: ModelSpec,
    partitions: Sequence[str],
    backfill_id: str,
    status: BulkActionStatus,
) -> PartitionBackfill:
    """The Dagster backfill of a candidate's partitions (as the UI's launchpad would make it)."""
    defs = build_defs(pipeline.settings().contracts_dir, pipeline)

    def selector(key: dg.AssetKey, keys: Sequence[str]) -> PartitionsByAssetSelector:
        ranges = [PartitionRangeSelector(start=p, end=p) for p in keys]
        return PartitionsByAssetSelector(asset_key=key, partitions=PartitionsSelector(ranges=ranges))

    selectors = [selector(key, partitions) for key in MODEL_KEYS] + [selector(SEARCH_INDEX, [spec.name])]
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        backfill = PartitionBackfill.from_partitions_by_assets(
            backfill_id=backfill_id, asset_graph=defs.resolve_asset_graph(), backfill_timestamp=time.time(),
            tags={SHADOW_TAG: spec.name}, dynamic_partitions_store=instance, partitions_by_assets=selectors,
            title=f"shadow build of {spec.name}", description=f"chunks, embeddings and index of {spec.name} for every batch",
            run_config=None,
        )  # fmt: skip
    return backfill.with_status(status)


def shadow_build(
    instance: dg.DagsterInstance,
    pipeline: PipelineResource,
    spec: ModelSpec,
    echo: Callable[[str], None] = print,
) -> ShadowBuild:
    """Build a candidate for every batch whose gold is built: by the daemon, or here."""
    partitions = [batch_model(b, spec.name) for b in ready_batches(instance)]
    backfill_id = make_new_backfill_id()
    # The model's settings, observed as sync observes them, so a later sync sees them as built.
    versions = {spec.name: pipeline.model_setting_versions(spec)}
    observe(instance, model_settings_observations(versions, changed_model_settings(instance, versions)))
    if daemon_alive(instance):
        instance.add_backfill(
            shadow_backfill(instance, pipeline, spec, partitions, backfill_id, BulkActionStatus.REQUESTED)
        )
        return ShadowBuild(spec.name, backfill_id, True, partitions)
    build = ShadowBuild(spec.name, backfill_id, False, partitions)
    tags = {TRIGGER_TAG: "model add", SHADOW_TAG: spec.name, BACKFILL_ID_TAG: backfill_id, **process_tags()}
    ref = instance.get_ref()
    for partition in partitions:
        echo(f"[{partition}] shadow build")
        build.outcomes.append(
            run_partition(ref, pipeline, partition, "batch_model", {**tags, REASON_TAG: "shadow build"})
        )
    build.outcomes.append(
        run_partition(ref, pipeline, spec.name, "model", {**tags, REASON_TAG: "shadow build"})
    )
    status = BulkActionStatus.COMPLETED_FAILED if build.failed else BulkActionStatus.COMPLETED_SUCCESS
    record = shadow_backfill(instance, pipeline, spec, partitions, backfill_id, status)
    instance.add_backfill(record.with_end_timestamp(time.time()))
    return build


@dataclass
class Added:
    spec: ModelSpec
    build: ShadowBuild | None


def add_model(
    instance: dg.DagsterInstance, pipeline: PipelineResource, target: str, name: str | None = None, *,
    build: bool = True, echo: Callable[[str], None] = print, backend: str | None = None,
    api: Mapping[str, Any] | None = None, **extra: str,
) -> Added:  # fmt: skip
    """Register a candidate (after loading it and embedding a probe) and build its shadow. ``api``
    (``api_base`` and the options of :func:`describe_api_spec`): ``target`` is a model behind an
    OpenAI-compatible API."""
    pipeline.ensure_registry()
    settings = pipeline.settings()
    if api is not None:
        spec = describe_api(target, name, api)
    else:
        spec = describe(target, settings.embedder, name, backend=backend or settings.embed_backend, **extra)
    probe(pipeline, spec)
    state, _ = pipeline.registry().commit(lambda st: add_event(st, spec, datetime.now(UTC)))
    register_models(instance, state)
    return Added(spec, shadow_build(instance, pipeline, spec, echo) if build else None)


@dataclass(frozen=True)
class Evaluated:
    name: str
    role: str
    complete: bool
    figures: dict[str, float]  # <mode>/<metric>
    check: str  # the canary_regression check's message
    check_passed: bool
    index_version: int
    missing: int = 0  # live chunks missing from its index
    unchunked: int = 0  # live documents it has no chunks for yet

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "complete": self.complete, "index_version": self.index_version,
                "figures": self.figures, "canary_check": {"passed": self.check_passed, "message": self.check}}  # fmt: skip


def latest_evaluation(instance: dg.DagsterInstance, name: str, role: str) -> Evaluated | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SEARCH_INDEX, asset_partitions=[name]), limit=1
    ).records
    mat = records[0].asset_materialization if records else None
    if mat is None:
        return None
    meta: dict[str, Any] = {k: v.value for k, v in mat.metadata.items()}
    check: dict[str, Any] = next((c for c in meta.get("checks") or [] if c.get("name") == CANARY_CHECK), {})
    return Evaluated(name, role, bool(meta.get("complete")), canary_figures(mat.metadata), str(check.get("message", "")),
                     bool(check.get("passed", True)), int(meta.get("lancedb_version") or 0),
                     int(meta.get("missing") or 0), int(meta.get("unchunked") or 0))  # fmt: skip


def evaluate(
    instance: dg.DagsterInstance, pipeline: PipelineResource, names: Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
) -> list[Evaluated]:  # fmt: skip
    """Materialise ``search_index`` for these models (default: every active one; memoised, so an
    unchanged index is not evaluated again) and return their canary figures."""
    state = pipeline.registry_state()
    specs = [state.get(n).spec for n in names] if names else pipeline.active_models(state)
    ref, out = instance.get_ref(), []
    for spec in specs:
        outcome = run_partition(
            ref, pipeline, spec.name, "model", {TRIGGER_TAG: "model eval", **process_tags()}
        )
        for failure in outcome.failures:
            raise RegistryError(f"evaluating {spec.name!r} failed: {failure}")
        found = latest_evaluation(instance, spec.name, state.get(spec.name).role)
        if found is not None:
            out.append(found)
    return out


@dataclass(frozen=True)
class Promoted:
    name: str
    previous: str
    forced: bool
    problems: list[str]
    candidate: Evaluated | None
    serving: Evaluated | None


def promotion_gate(settings: Settings, cand: Evaluated | None, serv: Evaluated | None) -> list[str]:
    """Why the candidate may not be promoted yet (none: it may)."""
    problems = []
    if cand is not None and not cand.complete:
        problems.append(
            f"its shadow index is not complete ({cand.unchunked} live documents not built for it, "
            f"{cand.missing} live chunks missing from its index)"
        )
    if cand is not None and serv is not None and cand.figures and serv.figures:
        problems += promotion_problems(
            cand.figures,
            serv.figures,
            DEFAULT_MODE,
            settings.promote_recall_tolerance,
            settings.promote_mrr_tolerance,
        )
    return problems


def promote(
    instance: dg.DagsterInstance, pipeline: PipelineResource, name: str, *, force: bool = False,
    echo: Callable[[str], None] = print,
) -> Promoted:  # fmt: skip
    """Make ``name`` the serving model, if its shadow index is complete and its canary recall@10
    and MRR@10 (in the default search mode) are within the tolerances of the serving model's.
    Refused with nothing changed otherwise, unless ``force``. One registry commit: a search sees
    the old model or the new one, never both."""
    state = pipeline.registry_state()
    candidate, serving = state.get(name), state.serving
    if serving is None or candidate.role == "serving" or candidate.role == "retired":
        promote_event(state, name, datetime.now(UTC))  # raises the reason
    assert serving is not None
    evaluations = {e.name: e for e in evaluate(instance, pipeline, [name, serving.name], echo)}
    cand, serv = evaluations.get(name), evaluations.get(serving.name)
    problems = promotion_gate(pipeline.settings(), cand, serv)
    if problems and not force:
        raise RegistryError(
            f"promote {name!r} refused, nothing changed: "
            + "; ".join(problems)
            + ". `--force` promotes anyway"
        )

    def make(st: Any) -> Any:
        if st.serving is None or st.serving.name != serving.name:
            raise RegistryError(
                f"the serving model changed to {st.serving.name if st.serving else None!r} meanwhile; promote again"
            )
        return promote_event(
            st, name, datetime.now(UTC), "forced: " + "; ".join(problems) if problems else ""
        )

    pipeline.registry().commit(make)
    return Promoted(name, serving.name, bool(problems), problems, cand, serv)


def rollback(pipeline: PipelineResource) -> tuple[str, str]:
    """Serve the previous model again, within its window: instant, re-embeds nothing (its index
    was kept current). Returns (now serving, rolled back from)."""
    state = pipeline.registry_state()
    retention = pipeline.settings().retention
    rolled_from = state.serving.name if state.serving else ""
    _, event = pipeline.registry().commit(lambda st: rollback_event(st, datetime.now(UTC), retention))
    return event.name, rolled_from


def shadow_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return [
        r.dagster_run for r in instance.get_run_records(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
    ]
