"""``embedding-assets sync``: a client of Dagster. It registers new batches and the registry's
models, observes landing and the settings, launches the runs the landing sensor would (batch
runs, then each batch's runs for every active model, then each changed model's evaluation, all
memoised), and reports what they did."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.storage.tags import PARTITION_NAME_TAG

from embedding_assets.config import Settings
from embedding_assets.contracts.load import ContractSet
from embedding_assets.contracts.model import Contract
from embedding_assets.core import stop
from embedding_assets.core.stop import off_main_thread
from embedding_assets.defs.embed import DEAD_LETTER_TABLE
from embedding_assets.defs.factory import build_defs, materialisable_keys
from embedding_assets.defs.health import damage_report, lake_damage, rebuild_lost_indexes
from embedding_assets.defs.index import expected_index
from embedding_assets.defs.instance import process_tags, reap_orphaned_runs
from embedding_assets.defs.keys import BATCHES, GOLD_DOCUMENTS, SEARCH_INDEX, VECTOR_INDEX, batch_model
from embedding_assets.defs.memo import FORCE_TAG, RETRY_DEAD_LETTERS_TAG, usable_versions
from embedding_assets.defs.models import expire_models, model_note, register_models
from embedding_assets.defs.outcome import RunOutcome, SyncSummary, outcome_of
from embedding_assets.defs.resources import CANARY_QUERIES, INDEX_SETTINGS, PipelineResource
from embedding_assets.defs.sources import AssetEvent, landing_events
from embedding_assets.defs.triggers import (
    REASON_TAG,
    TRIGGER_TAG,
    Busy,
    Requests,
    busy,
    changed_model_settings,
    changed_settings,
    failed_requests,
    landing_requests,
    model_requests,
    model_settings_observations,
    search_requests,
    settings_observations,
    settings_requests,
    snapshot_requests,
)
from embedding_assets.embed.encode import DEAD_LETTER_SCHEMA
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.index.repair import reconcile
from embedding_assets.ingest.landing import LandingBatch, LandingScan, scan_landing, settled

MAX_WAVES = 8
MAX_SETTLE_WAIT_S = 120.0
RELOOK_S = 1.0  # between two looks at folders still moving: unchanged sizes and times across it settle them


@dataclass(frozen=True)
class Options:
    force: bool = False  # rebuild every partition of every batch (run tag ea/force)
    retry_dead_letters: bool = False  # also retry dead-lettered chunks (run tag ea/retry_dead_letters)
    jobs: int = 1  # runs at once, each in its own process


def settled_scan(
    settings: Settings, contracts: ContractSet, echo: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[LandingScan, list[str]]:  # fmt: skip
    """The landing zone once no file in it is still being written; folders still moving after
    :data:`MAX_SETTLE_WAIT_S` are left out (named in the second value) for a later sync.

    A folder written less than ``landing_settle_s`` ago is looked at again after
    :data:`RELOOK_S`: the same sizes and times settle it, so a sync just after a copy waits about
    a second, not the whole settle time."""
    deadline, previous = time.time() + MAX_SETTLE_WAIT_S, dict[str, str]()
    while True:
        scan = scan_landing(settings.landing_dir, contracts.contracts, contracts.problems)
        now = time.time()
        moving = [
            b for b in scan.batches if not settled(b, previous.get(b.key), now, settings.landing_settle_s)
        ]
        if not moving or now > deadline:
            steady = tuple(b for b in scan.batches if b not in moving)
            return LandingScan(steady, scan.rejected, scan.held), [b.key for b in moving]
        echo(
            f"waiting for {len(moving)} landing folders still being written: {', '.join(b.key for b in moving[:5])}"
        )
        previous = {b.key: b.stat_digest for b in scan.batches}
        sleep(max(0.2, min(settings.landing_settle_s, RELOOK_S)))


def requests_now(
    instance: dg.DagsterInstance, pipeline: PipelineResource, contracts: dict[str, Contract], scan: LandingScan,
    options: Options, verified: dict[str, str],
) -> tuple[Requests, list[tuple[LandingBatch, str]], list[str]]:  # fmt: skip
    """The batches a sync runs first and why, the landing deliveries it observes, the shared
    settings that moved."""
    known = instance.get_dynamic_partitions(BATCHES)
    requests, moved = landing_requests(instance, [(b, b.content_hash()) for b in scan.batches])
    changed = changed_settings(instance, pipeline.setting_versions(contracts))
    requests.merge(settings_requests([c for c in changed if c.startswith("contract_")], known))
    requests.merge(failed_requests(instance, GOLD_DOCUMENTS, None))
    requests.merge(snapshot_requests(instance, contracts, scan, verified))
    for batch in known if options.force else []:
        requests.add(batch, "sync --force")
    return requests, moved, changed


def shared_changes(changed: Sequence[str]) -> dict[str, list[str]]:
    """Which shared settings reach every model's runs ("*"): the index settings and the canary."""
    return {"*": [c for c in changed if c in (INDEX_SETTINGS, CANARY_QUERIES)]}


def model_runs_now(
    instance: dg.DagsterInstance, pipeline: PipelineResource, active: Sequence[ModelSpec], changed: Sequence[str],
    options: Options,
) -> tuple[Requests, dict[str, dict[str, str]], dict[str, list[str]]]:  # fmt: skip
    """The ``batch|model`` partitions due, the models' setting versions and those that moved."""
    versions = {s.name: pipeline.model_setting_versions(s) for s in active}
    moved = changed_model_settings(instance, versions)
    index_changed = {"*": [c for c in changed if c == INDEX_SETTINGS]}
    requests = model_requests(instance, active, {**moved, **index_changed})
    names = {s.name for s in active}
    failed = failed_requests(instance, VECTOR_INDEX, None)
    for key in [k for k in failed.reasons if k.split("|")[-1] in names]:
        requests.add(key, failed.why(key))
    requests.blocked.update(failed.blocked)
    for key in (
        [batch_model(b, s.name) for b in ready_batches(instance) for s in active] if options.force else []
    ):
        requests.add(key, "sync --force")
    for key in dead_lettered(pipeline, active) if options.retry_dead_letters else []:
        requests.add(key, "sync --retry-dead-letters")
    return requests, versions, moved


def ready_batches(instance: dg.DagsterInstance) -> list[str]:
    """Batches whose gold/documents is built (their model runs can start)."""
    return sorted(usable_versions(instance, GOLD_DOCUMENTS))


def dead_lettered(pipeline: PipelineResource, active: Sequence[ModelSpec]) -> list[str]:
    frame = pipeline.lake().read(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA)
    ids = {s.model_id: s.name for s in active}
    pairs = frame.filter(pl.col("model_id").is_in(list(ids))).select("batch", "model_id").unique()
    return sorted(batch_model(b, ids[m]) for b, m in pairs.iter_rows())


def run_tags(requests: Requests, partition: str, options: Options) -> dict[str, str]:
    tags = {TRIGGER_TAG: "sync", REASON_TAG: requests.why(partition)[:1000], **process_tags()}
    if options.force:
        tags[FORCE_TAG] = "true"
    if options.retry_dead_letters:
        tags[RETRY_DEAD_LETTERS_TAG] = "true"
    return tags


Spec = tuple[type[PipelineResource], dict[str, Any]]


def location_job() -> ReconstructableJob:
    """The code location's asset job by its pointer (``embedding_assets.definitions:defs``): a
    Celery worker loads it from its own environment to run a step."""
    repository = ReconstructableRepository.for_module("embedding_assets.definitions", "defs", os.getcwd())
    return repository.get_reconstructable_job(IMPLICIT_ASSET_JOB_NAME)


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_partition(
    instance_ref: Any, pipeline: PipelineResource | Spec, partition: str, shape: str, tags: dict[str, str]
) -> RunOutcome:
    """One partition's run of its shape's assets: in this process (a worker, with ``--jobs``), or
    with its steps on Celery workers (``EA_EXECUTOR=celery``; the workers build the pipeline from
    their environment)."""
    if isinstance(pipeline, tuple):
        pipeline = pipeline[0](**pipeline[1])
    settings = pipeline.settings()
    defs = build_defs(settings.contracts_dir, pipeline)
    keys = materialisable_keys(list(defs.assets or []), shape)  # type: ignore[arg-type]
    with dg.DagsterInstance.from_ref(instance_ref) as instance:
        if settings.executor == "celery":
            result: Any = off_main_thread(lambda: dg.execute_job(
                location_job(), instance, run_config=QUIET, raise_on_error=False,
                tags={**tags, PARTITION_NAME_TAG: partition}, asset_selection=keys,
            ))  # fmt: skip
        else:
            job = defs.resolve_implicit_global_asset_job_def()
            result = off_main_thread(lambda: job.execute_in_process(
                instance=instance, partition_key=partition, asset_selection=keys, raise_on_error=False,
                tags=tags, run_config=QUIET,
            ))  # fmt: skip
        return outcome_of(result, partition, defs, shape)


def launch(
    instance: dg.DagsterInstance, pipeline: PipelineResource, runs: dict[str, dict[str, str]], jobs: int,
    shape: str = "batch",
) -> list[RunOutcome]:  # fmt: skip
    """The runs, in partition order; independent partitions at once when ``jobs`` > 1."""
    ref = instance.get_ref()
    if jobs <= 1 or len(runs) <= 1:
        # A signal stops the loop: a partition not started is left for the next sync.
        return [
            run_partition(ref, pipeline, p, shape, tags)
            for p, tags in runs.items()
            if stop.requested() is None
        ]
    spec = pipeline_spec(pipeline)
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=get_context("spawn"), initializer=stop.install
    ) as pool:

        def forward(signo: int) -> None:  # each worker stops at its own next safe point
            if signo == signal.SIGTERM:  # a terminal's Ctrl-C reaches the workers by itself
                for pid in list(pool._processes or {}):
                    os.kill(pid, signo)

        if threading.current_thread() is threading.main_thread():
            stop.install(forward)
        futures = [pool.submit(run_partition, ref, spec, p, shape, tags) for p, tags in runs.items()]
        return [f.result() for f in futures if not f.cancelled()]


def pipeline_spec(pipeline: PipelineResource) -> Spec:
    """The resource as a worker process rebuilds it (resources don't pickle): class and fields."""
    fields = {
        n: getattr(pipeline, n) for n in type(pipeline).model_fields if getattr(pipeline, n) is not None
    }
    return type(pipeline), fields


def register(instance: dg.DagsterInstance, scan: LandingScan) -> list[str]:
    """Add the landing zone's new batches as partitions; returns them."""
    new = sorted(set(scan.batch_names) - set(instance.get_dynamic_partitions(BATCHES)))
    if new:
        instance.add_dynamic_partitions(BATCHES, new)
    return new


def preflight(instance: dg.DagsterInstance, pipeline: PipelineResource, summary: SyncSummary) -> bool:
    """Whether the sync may act: a damaged lake table stops it (acting could spread the damage;
    the summary says how to recover), and a lost index is rebuilt from the embeddings table."""
    if damage := lake_damage(instance, pipeline):
        summary.damage, summary.recovery = [d.render() for d in damage], damage_report(damage)
        return False
    for name, rebuilt in rebuild_lost_indexes(instance, pipeline).items():
        summary.index_rebuilt.append(
            f"{name}: {rebuilt.upserted} chunks written, {rebuilt.embedded} embedded"
        )
    return True


def run_wave(
    instance: dg.DagsterInstance, pipeline: PipelineResource, summary: SyncSummary, requests: Requests,
    shape: str, busy_now: Callable[[str], bool], options: Options, echo: Callable[[str], None],
) -> set[str]:  # fmt: skip
    """Launch one shape's due runs (those not busy); returns the partitions run."""
    summary.blocked.update({p: why for p, why in requests.blocked.items() if p not in requests.reasons})
    runs = {p: run_tags(requests, p, options) for p in requests.batches if not busy_now(p)}
    summary.busy += sorted(p for p in requests.batches if busy_now(p))
    for partition, tags in runs.items():
        echo(f"[{partition}] run: {tags[REASON_TAG]}")
    for outcome in launch(instance, pipeline, runs, options.jobs, shape):
        summary.add(outcome, echo)
    return set(runs)


def model_wave(
    instance: dg.DagsterInstance, pipeline: PipelineResource, summary: SyncSummary, changed: Sequence[str],
    options: Options, echo: Callable[[str], None],
) -> None:  # fmt: skip
    """Every active model's due batch partitions, then the evaluations of the models that changed."""
    active = pipeline.active_models()
    requests, versions, moved = model_runs_now(instance, pipeline, active, changed, options)
    taken: Busy = busy(instance)
    run_wave(instance, pipeline, summary, requests, "batch_model", taken.batch_model, options, echo)
    if stop.requested() is not None:
        return
    observe(instance, model_settings_observations(versions, moved))
    searches = search_requests(instance, active, {**moved, **shared_changes(changed)})
    failed = failed_requests(instance, SEARCH_INDEX, None)
    for model in [m for m in failed.reasons if m in {s.name for s in active}]:
        searches.add(model, failed.why(model))
    for model in [s.name for s in active] if options.force else []:
        searches.add(model, "sync --force")
    run_wave(instance, pipeline, summary, searches, "model", busy(instance).model, options, echo)


def sync(
    instance: dg.DagsterInstance,
    pipeline: PipelineResource,
    *,
    echo: Callable[[str], None] = print,
    options: Options = Options(),
) -> SyncSummary:
    """Register, observe, run what needs a run (wave after wave: a snapshot batch's change can
    reach later batches), and report."""
    found, summary = pipeline.contract_set(), SyncSummary()
    contracts = found.contracts
    summary.reaped = reap_orphaned_runs(instance)
    state = pipeline.ensure_registry()
    summary.models = register_models(instance, state)
    summary.notes += [n for n in [model_note(pipeline, state)] if n]
    summary.retired = expire_models(instance, pipeline)
    if not preflight(instance, pipeline, summary):
        return summary
    scan, summary.unsettled = settled_scan(pipeline.settings(), found, echo)
    summary.rejected, summary.new_batches = list(scan.rejected), register(instance, scan)
    verified: dict[str, str] = {}
    requests, moved, changed = requests_now(instance, pipeline, contracts, scan, options, verified)
    for batch, why in scan.held.items():
        requests.reasons.pop(batch, None)
        summary.blocked[batch] = [why]
    for _ in range(MAX_WAVES):
        taken = busy(instance)
        # Landing is observed before its runs, as the sensor does: bronze's provenance then points
        # at the observation it read, which is what lets the UI show a later edit as unsynced.
        due = [b for b in requests.batches if b not in taken.batches]
        observe(instance, [e for b, h in moved if b.batch in due for e in landing_events(b, h)])
        ran = run_wave(
            instance, pipeline, summary, requests, "batch", taken.batches.__contains__, options, echo
        )
        if stop.requested() is None:
            model_wave(instance, pipeline, summary, changed, options, echo)
        if stop.requested() is not None:  # stopped between commits: the next sync completes it
            summary.stopped = signal.Signals(stop.requested() or 0).name
            break
        # Settings only once their runs are done: killed before, the next sync sees them changed.
        observe(instance, settings_observations(pipeline.setting_versions(contracts), changed))
        # Only a full-snapshot batch that changed can leave later batches to do; nothing else is
        # asked again in the same sync (a failed batch waits for the next one).
        requests, moved, changed = snapshot_requests(instance, contracts, scan, verified), [], []
        if not ran and not requests.batches:
            break
    if not summary.stopped:
        settle_drift(pipeline, summary)
    return summary


def settle_drift(pipeline: PipelineResource, summary: SyncSummary) -> None:
    """Reconcile again each model a check saw drift in: with runs in parallel (``--jobs``, Celery
    workers) a batch's check can read the index while this sync's run of another batch is still
    writing it. What counts is the index once they are all done."""
    for model in summary.drifted:
        spec = pipeline.spec(model)
        recon = reconcile(pipeline.index_table(spec), expected_index(pipeline.lake(), spec))
        summary.reconciliations[model] = recon.render()


def observe(instance: dg.DagsterInstance, events: Sequence[AssetEvent]) -> None:
    """Record what a sync observed (landing, settings) in the instance, as the sensor does."""
    for event in events:
        instance.report_runless_asset_event(event)
