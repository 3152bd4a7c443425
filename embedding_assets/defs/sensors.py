"""The landing sensor: thin. It registers new batches, observes what changed, and asks for one
run per batch that needs one (see ``triggers``); the memoised assets do the rest."""

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.instance import reap_orphaned_runs
from embedding_assets.defs.keys import BATCHES, batches
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sources import landing_events
from embedding_assets.defs.triggers import (
    ATTEMPT_TAG,
    REASON_TAG,
    TRIGGER_TAG,
    Requests,
    busy_batches,
    changed_settings,
    failed_requests,
    landing_requests,
    look,
    settings_observations,
    settings_requests,
    snapshot_requests,
)
from embedding_assets.ingest.landing import scan_landing


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


def run_request(batch: str, requests: Requests, keys: Sequence[dg.AssetKey], trigger: str) -> dg.RunRequest:
    tags = {REASON_TAG: requests.why(batch)[:1000], TRIGGER_TAG: trigger}
    if batch in requests.attempts:
        tags[ATTEMPT_TAG] = str(requests.attempts[batch])
    return dg.RunRequest(partition_key=batch, asset_selection=list(keys), tags=tags)


def build_landing_sensor(
    contracts: dict[str, Contract],
    keys: Sequence[dg.AssetKey],
    interval_s: int,
    broken: Mapping[str, str] | None = None,
) -> dg.SensorDefinition:
    """``broken``: source -> problem of the contracts that did not load; their batches wait."""

    @dg.sensor(
        name="landing_sensor",
        target=dg.AssetSelection.assets(*keys),
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New batch folders become partitions; a batch whose files, settings or last run "
        "changed gets one run of its whole graph, which rebuilds only what changed.",
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
        requests, moved = landing_requests(instance, seen.hashed.values())
        versions = pipeline.setting_versions(contracts)
        changed = changed_settings(instance, versions)
        requests.merge(settings_requests(changed, sorted(known | set(new))))
        requests.merge(failed_requests(instance, settings.max_run_attempts))
        requests.merge(snapshot_requests(instance, contracts, scan, cursor.verified))
        busy = busy_batches(instance) | set(scan.held)  # held: a broken contract's batches wait
        cursor.pending = {b.key: b.stat_digest for b in seen.unsettled}
        cursor.seen.update({k: b.stat_digest for k, (b, _) in seen.hashed.items() if b.batch not in busy})
        return dg.SensorResult(
            run_requests=[
                run_request(b, requests, keys, "landing_sensor") for b in requests.batches if b not in busy
            ],
            dynamic_partitions_requests=[batches.build_add_request(new)] if new else [],
            asset_events=[
                *(e for b, h in moved if b.batch not in busy for e in landing_events(b, h)),
                *settings_observations(versions, changed),
            ],
            cursor=cursor.dump(),
        )

    return landing_sensor
