"""Which batches need a run: one rule for the landing sensor and for ``sync``.

A batch gets ONE run that selects its whole graph (the memoised assets skip what did not change)
when its landing files hold a delivery bronze has not ingested, when a setting the assets consume
changed since it was last observed, when its last run failed (not on a blocking check: that
waits for its inputs to change), or when an earlier batch of a full-snapshot source changed.
Everything is read from the instance with per-partition latest-record queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.keys import GOLD_DOCUMENTS, VECTOR_INDEX, layer_key
from embedding_assets.defs.memo import as_previous, partition_versions, previous_record
from embedding_assets.ingest.bronze import bronze_version
from embedding_assets.ingest.landing import LandingBatch, LandingScan, settled
from embedding_assets.memo import EARLIER, earlier_versions

REASON_TAG, TRIGGER_TAG, ATTEMPT_TAG = "ea/reason", "ea/trigger", "ea/attempt"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
BLOCKED_ERROR = "DagsterAssetCheckFailedError"


@dataclass
class Requests:
    """Batches to run, each with why; and what was learnt on the way."""

    reasons: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[str, int] = field(default_factory=dict)  # batch -> attempt number (retries)
    blocked: dict[str, list[str]] = field(default_factory=dict)  # batch -> its failed blocking checks

    def add(self, batch: str, reason: str) -> None:
        if reason not in self.reasons[batch]:
            self.reasons[batch].append(reason)

    def merge(self, other: Requests) -> None:
        for batch, reasons in other.reasons.items():
            for reason in reasons:
                self.add(batch, reason)
        self.attempts.update(other.attempts)
        self.blocked.update(other.blocked)

    def why(self, batch: str) -> str:
        return "; ".join(self.reasons[batch])

    @property
    def batches(self) -> list[str]:
        return sorted(b for b, r in self.reasons.items() if r)


@dataclass
class Look:
    """One look at the landing zone: content hashes of the batches that moved and have settled."""

    hashed: dict[str, tuple[LandingBatch, str]]  # "source/batch" -> (batch, content hash)
    unsettled: list[LandingBatch]


def look(
    scan: LandingScan, seen: Mapping[str, str], pending: Mapping[str, str], settle_s: float, now_s: float
) -> Look:
    """Hash only the batches whose files moved since ``seen`` (key -> stat digest), and only once
    they have settled: a file still being written is left for a later look."""
    hashed, unsettled = {}, []
    for batch in scan.batches:
        if seen.get(batch.key) == batch.stat_digest:
            continue
        if settled(batch, pending.get(batch.key), now_s, settle_s):
            hashed[batch.key] = (batch, batch.content_hash())
        else:
            unsettled.append(batch)
    return Look(hashed, unsettled)


def landing_requests(
    instance: dg.DagsterInstance, hashed: Iterable[tuple[LandingBatch, str]]
) -> tuple[Requests, list[tuple[LandingBatch, str]]]:
    """Batches whose landing delivery is not the one their bronze partition holds, and those
    deliveries (a file touched but not changed is not one)."""
    out, moved, by_source = Requests(), [], defaultdict(list)
    for batch, content in hashed:
        by_source[batch.source].append((batch, content))
    for source, found in by_source.items():
        held = partition_versions(instance, layer_key("bronze", source), [b.batch for b, _ in found])
        for batch, content in found:
            if held.get(batch.batch) != bronze_version(content):
                out.add(batch.batch, f"{'new' if batch.batch not in held else 'changed'} landing_{source}")
                moved.append((batch, content))
    return out, moved


def last_observed(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    record = instance.get_latest_data_version_record(key, is_source=True)
    tags = record.event_log_entry.tags if record is not None else None
    return (tags or {}).get("dagster/data_version")


def changed_settings(instance: dg.DagsterInstance, versions: Mapping[str, str]) -> list[str]:
    """The settings (a model, a contract...) whose version is not the one last observed."""
    return [name for name, v in versions.items() if last_observed(instance, dg.AssetKey(name)) != v]


def settings_requests(changed: Iterable[str], batches: Iterable[str]) -> Requests:
    """Every batch, when a setting its assets consume changed."""
    out = Requests()
    for batch in batches:
        for name in changed:
            out.add(batch, f"{name} changed")
    return out


def settings_observations(versions: Mapping[str, str], names: Iterable[str]) -> list[dg.AssetObservation]:
    return [
        dg.AssetObservation(asset_key=name, tags={"dagster/data_version": versions[name]}) for name in names
    ]


def failed_checks(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's failed blocking checks (``asset: check: why``), when nothing else failed in it:
    such a run fails again on the same inputs, so it waits for them to change."""
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    errors = [e.dagster_event.step_failure_data.error for e in failures if e.dagster_event is not None]  # type: ignore[union-attr]
    if not errors or any(e is None or e.cls_name != BLOCKED_ERROR for e in errors):
        return []
    evaluations = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    found = [e.dagster_event.event_specific_data for e in evaluations if e.dagster_event is not None]
    return [
        f"{c.asset_key.to_user_string()}: {c.check_name}: {c.description}"  # type: ignore[union-attr]
        for c in found
        if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR  # type: ignore[union-attr]
    ]


def failed_requests(instance: dg.DagsterInstance, max_attempts: int | None) -> Requests:
    """Batches whose latest run to the index failed (killed runs are marked failed first)."""
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        VECTOR_INDEX
    )
    run_ids = sorted({run_id for run_id, _ in attempts.values()})
    out = Requests()
    if not run_ids:
        return out
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    runs = {r.dagster_run.run_id: r.dagster_run for r in records}
    for batch, (run_id, _) in sorted(attempts.items()):
        run = runs.get(run_id)
        if run is None or run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            continue
        attempt = int(run.tags.get(ATTEMPT_TAG, "1")) + 1
        blocked = failed_checks(instance, run_id)
        if blocked:
            out.blocked[batch] = blocked
        elif max_attempts is None or attempt <= max_attempts:
            out.add(batch, f"its last run {run_id[:8]} failed")
            out.attempts[batch] = attempt
    return out


def snapshot_requests(
    instance: dg.DagsterInstance,
    contracts: Mapping[str, Contract],
    scan: LandingScan,
    verified: dict[str, str],
) -> Requests:
    """Batches of a full-snapshot source whose earlier batches changed since gold_documents read
    them. ``verified`` (``source/batch`` -> earlier version found current) spares the look-ups a
    previous call made; it is updated in place."""
    out = Requests()
    for source in (s for s, c in contracts.items() if c.snapshot):
        silver = layer_key("silver", source)
        names = [b.batch for b in scan.batches if b.source == source]
        for batch, version in earlier_versions(partition_versions(instance, silver), names).items():
            key = f"{source}/{batch}"
            if verified.get(key) == version:
                continue
            previous = as_previous(previous_record(instance, GOLD_DOCUMENTS, batch))
            if (
                previous is not None
                and previous.consumed.get(f"{EARLIER}{silver.to_user_string()}") != version
            ):
                out.add(batch, f"an earlier snapshot of {source} changed")
            else:
                verified[key] = version
    return out


def busy_batches(instance: dg.DagsterInstance) -> set[str]:
    """Batches a queued or running run is materialising."""
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE))
    return {
        r.dagster_run.tags["dagster/partition"] for r in records if "dagster/partition" in r.dagster_run.tags
    }
