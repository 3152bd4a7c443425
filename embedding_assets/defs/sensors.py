"""The landing sensor: thin. It registers new batches and models, observes what changed, and asks
for the runs that are due (see ``triggers``): a batch's run, then on a later tick one run per
active model of that batch, then each changed model's evaluation; the memoised assets do the rest."""

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.instance import reap_orphaned_runs
from embedding_assets.defs.keys import (
    BATCHES,
    GOLD_DOCUMENTS,
    MODELS,
    SEARCH_INDEX,
    VECTOR_INDEX,
    batches,
    models,
    split_key,
)
from embedding_assets.defs.resources import CANARY_QUERIES, INDEX_SETTINGS, PipelineResource
from embedding_assets.defs.sources import landing_events
from embedding_assets.defs.triggers import (
    ATTEMPT_TAG,
    REASON_TAG,
    TRIGGER_TAG,
    Look,
    Requests,
    busy,
    busy_batches,
    changed_model_settings,
    changed_settings,
    failed_requests,
    landing_requests,
    look,
    model_requests,
    model_settings_observations,
    search_requests,
    settings_observations,
    settings_requests,
    snapshot_requests,
)
from embedding_assets.embed.registry import RETIRED
from embedding_assets.ingest.landing import LandingBatch, scan_landing


@dataclass
class Cursor:
    """What the sensor learnt in earlier ticks: stat digests of landing batches whose content is
    known to be ingested (or asked for), digests seen once but not yet settled, and the snapshot
    versions already verified. A tick where nothing moved hashes nothing."""

    seen: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    verified: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def load(text: str | None) -> "Cursor":
        return Cursor(**json.loads(text)) if text else Cursor()

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def run_request(
    partition: str, requests: Requests, keys: Sequence[dg.AssetKey], trigger: str
) -> dg.RunRequest:
    tags = {REASON_TAG: requests.why(partition)[:1000], TRIGGER_TAG: trigger}
    if partition in requests.attempts:
        tags[ATTEMPT_TAG] = str(requests.attempts[partition])
    return dg.RunRequest(partition_key=partition, asset_selection=list(keys), tags=tags)


def model_run_requests(
    instance: dg.DagsterInstance, pipeline: PipelineResource, changed: list[str], keys: Mapping[str, Sequence[dg.AssetKey]],
    max_attempts: int, waiting: set[str],
) -> tuple[list[dg.RunRequest], list[dg.AssetObservation]]:  # fmt: skip
    """The runs of every active model's due batch partitions and evaluations, and the observations
    of the model settings they consume (recorded with the requests: a failed run is asked for again).
    ``waiting``: batches whose own run is asked for or held: their model runs come after it."""
    active = pipeline.active_models(pipeline.ensure_registry())
    versions = {s.name: pipeline.model_setting_versions(s) for s in active}
    moved = changed_model_settings(instance, versions)
    shared = {"*": [c for c in changed if c in (INDEX_SETTINGS, CANARY_QUERIES)]}
    models, searches = (
        model_requests(instance, active, {**moved, **shared}),
        search_requests(instance, active, {**moved, **shared}),
    )
    names = {s.name for s in active}
    for found, key in ((models, VECTOR_INDEX), (searches, SEARCH_INDEX)):
        failed = failed_requests(instance, key, max_attempts)
        for partition in [p for p in failed.reasons if p.split("|")[-1] in names]:
            found.add(partition, failed.why(partition))
            found.attempts[partition] = failed.attempts[partition]
    taken = busy(instance)
    wanted_models = [k for k in models.batches if not taken.batch_model(k) and split_key(k)[0] not in waiting]
    asked = {split_key(k)[1] for k in wanted_models}
    wanted_searches = [m for m in searches.batches if not taken.model(m) and m not in asked]
    requests = [run_request(k, models, keys["batch_model"], "landing_sensor") for k in wanted_models]
    requests += [run_request(m, searches, keys["model"], "landing_sensor") for m in wanted_searches]
    return requests, model_settings_observations(versions, moved)


def build_landing_sensor(
    contracts: dict[str, Contract],
    keys: Mapping[str, Sequence[dg.AssetKey]],
    interval_s: int,
    broken: Mapping[str, str] | None = None,
) -> dg.SensorDefinition:
    """``keys``: the assets a run of each partition shape selects; ``broken``: source -> problem
    of the contracts that did not load (their batches wait)."""

    @dg.sensor(
        name="landing_sensor",
        # Its runs have three partition shapes, which no one asset job spans: each request names
        # its assets, and they run in the repository's global asset job.
        job_name="__ASSET_JOB",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New batch folders become partitions; a batch whose files, settings or last run "
        "changed gets one run up to gold/documents, then one run per active model (chunks, vectors, "
        "index), then each changed model is evaluated; the assets rebuild only what changed.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
        instance, settings, cursor = context.instance, pipeline.settings(), Cursor.load(context.cursor)
        for run_id in reap_orphaned_runs(instance):
            context.log.warning(
                f"run {run_id} lost its process (killed?): marked failed; its batch runs again"
            )
        scan = scan_landing(settings.landing_dir, contracts, broken)
        for line in scan.rejected:
            context.log.warning(line)
        seen = look(scan, cursor.seen, cursor.pending, settings.landing_settle_s, time.time())
        known = set(instance.get_dynamic_partitions(BATCHES))
        new = sorted({b.batch for b, _ in seen.hashed.values()} - known)
        versions = pipeline.setting_versions(contracts)
        changed = changed_settings(instance, versions)
        requests, moved = batch_requests(
            instance, seen, changed, sorted(known | set(new)), settings.max_run_attempts
        )
        requests.merge(snapshot_requests(instance, contracts, scan, cursor.verified))
        busy_now = busy_batches(instance) | set(scan.held)  # held: a broken contract's batches wait
        cursor.pending = {b.key: b.stat_digest for b in seen.unsettled}
        cursor.seen.update({k: b.stat_digest for k, (b, _) in seen.hashed.items() if b.batch not in busy_now})
        waiting = busy_now | set(requests.batches)
        model_runs, model_observed = model_run_requests(
            instance, pipeline, changed, keys, settings.max_run_attempts, waiting
        )
        return dg.SensorResult(
            run_requests=[
                *(
                    run_request(b, requests, keys["batch"], "landing_sensor")
                    for b in requests.batches
                    if b not in busy_now
                ),
                *model_runs,
            ],
            dynamic_partitions_requests=partition_requests(instance, pipeline, new),
            asset_events=[
                *(e for b, h in moved if b.batch not in busy_now for e in landing_events(b, h)),
                *settings_observations(versions, changed),
                *model_observed,
            ],
            cursor=cursor.dump(),
        )

    return landing_sensor


def batch_requests(
    instance: dg.DagsterInstance,
    seen: Look,
    changed: Sequence[str],
    batches: Sequence[str],
    max_attempts: int,
) -> tuple[Requests, list[tuple[LandingBatch, str]]]:
    """Batches due a run up to gold/documents: their landing moved, a contract changed, or their
    last run failed (within the attempts); and the landing partitions to observe."""
    requests, moved = landing_requests(instance, seen.hashed.values())
    requests.merge(settings_requests([c for c in changed if c.startswith("contract_")], list(batches)))
    requests.merge(failed_requests(instance, GOLD_DOCUMENTS, max_attempts))
    return requests, moved


def partition_requests(
    instance: dg.DagsterInstance, pipeline: PipelineResource, new_batches: list[str]
) -> list[dg.AddDynamicPartitionsRequest]:
    """New batches, and registered models that are not partitions yet."""
    known = set(instance.get_dynamic_partitions(MODELS))
    state = pipeline.ensure_registry()
    new_models = sorted(n for n, m in state.models.items() if n not in known and m.role != RETIRED)
    return [
        r
        for r, n in (
            (batches.build_add_request(new_batches), new_batches),
            (models.build_add_request(new_models), new_models),
        )
        if n
    ]
