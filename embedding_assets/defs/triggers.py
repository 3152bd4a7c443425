"""Which partitions need a run: one rule for the landing sensor and for ``sync``.

Three kinds of run, one per partition shape:

- **a batch** (landing to gold/documents) when its landing files hold a delivery bronze has not
  ingested, when a contract changed, when its last run failed (not on a blocking check: that
  waits for its inputs to change), or when an earlier batch of a full-snapshot source changed;
- **a batch and a model** (chunks, embeddings, index) when the batch's gold/documents is not the
  version its chunks were made from, when the model is new to the batch (a candidate's shadow
  build), when the model's or the index's settings changed, or when its last run failed;
- **a model** (its whole index, evaluated on the canary) when any of its batch partitions in the
  index changed since it was evaluated, or the canary or the model changed.

Everything is read from the instance with per-partition latest-record queries, a handful per
look whatever the number of batches: storage ids say which partitions moved, and only those are
read further.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from embedding_assets.contracts.model import Contract
from embedding_assets.defs.keys import (
    GOLD_CHUNKS,
    GOLD_DOCUMENTS,
    SEARCH_INDEX,
    VECTOR_INDEX,
    batch_model,
    layer_key,
    split_key,
)
from embedding_assets.defs.memo import (
    CONSUMED,
    as_previous,
    model_partitions_version,
    partition_versions,
    previous_record,
    usable_versions,
)
from embedding_assets.embed.registry import ModelSpec
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
PARTITION_TAG, BATCH_TAG, MODEL_TAG = (
    "dagster/partition",
    "dagster/partition/batch",
    "dagster/partition/model",
)


@dataclass
class Requests:
    """Partitions to run, each with why; and what was learnt on the way."""

    reasons: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[str, int] = field(default_factory=dict)  # partition -> attempt number (retries)
    blocked: dict[str, list[str]] = field(default_factory=dict)  # partition -> its failed blocking checks

    def add(self, partition: str, reason: str) -> None:
        if reason not in self.reasons[partition]:
            self.reasons[partition].append(reason)

    def merge(self, other: Requests) -> None:
        for partition, reasons in other.reasons.items():
            for reason in reasons:
                self.add(partition, reason)
        self.attempts.update(other.attempts)
        self.blocked.update(other.blocked)

    def why(self, partition: str) -> str:
        return "; ".join(self.reasons[partition])

    @property
    def batches(self) -> list[str]:
        """The partitions asked for (batches, ``batch|model`` keys or models, by the shape)."""
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
    return (tags or {}).get(DATA_VERSION_TAG)


def changed_settings(instance: dg.DagsterInstance, versions: Mapping[str, str]) -> list[str]:
    """The shared settings (a contract, the index settings, the canary) not as last observed."""
    return [name for name, v in versions.items() if last_observed(instance, dg.AssetKey(name)) != v]


def changed_model_settings(
    instance: dg.DagsterInstance, versions: Mapping[str, Mapping[str, str]]
) -> dict[str, list[str]]:
    """Per model (name -> {setting: version}), its settings not as last observed for it."""
    names = sorted({n for per_model in versions.values() for n in per_model})
    observed = {
        n: instance.event_log_storage.get_latest_tags_by_partition(
            dg.AssetKey(n), dg.DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG], asset_partitions=list(versions)
        )
        for n in names
    }  # fmt: skip
    return {
        model: changed
        for model, per_model in versions.items()
        if (
            changed := [
                n for n, v in per_model.items() if observed[n].get(model, {}).get(DATA_VERSION_TAG) != v
            ]
        )
    }


def settings_requests(changed: Iterable[str], batches: Iterable[str]) -> Requests:
    """Every batch, when a setting its assets consume changed."""
    out = Requests()
    for batch in batches:
        for name in changed:
            out.add(batch, f"{name} changed")
    return out


def settings_observations(versions: Mapping[str, str], names: Iterable[str]) -> list[dg.AssetObservation]:
    return [dg.AssetObservation(asset_key=name, tags={DATA_VERSION_TAG: versions[name]}) for name in names]


def model_settings_observations(
    versions: Mapping[str, Mapping[str, str]], changed: Mapping[str, Sequence[str]]
) -> list[dg.AssetObservation]:
    return [
        dg.AssetObservation(asset_key=name, partition=model, tags={DATA_VERSION_TAG: versions[model][name]})
        for model, names in changed.items()
        for name in names
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


def failed_requests(instance: dg.DagsterInstance, key: dg.AssetKey, max_attempts: int | None) -> Requests:
    """Partitions whose latest run to ``key`` (the last asset of a run's selection) failed; killed
    runs are marked failed first."""
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        key
    )
    run_ids = sorted({run_id for run_id, _ in attempts.values()})
    out = Requests()
    if not run_ids:
        return out
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    runs = {r.dagster_run.run_id: r.dagster_run for r in records}
    for partition, (run_id, _) in sorted(attempts.items()):
        run = runs.get(run_id)
        if run is None or run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            continue
        attempt = int(run.tags.get(ATTEMPT_TAG, "1")) + 1
        blocked = failed_checks(instance, run_id)
        if blocked:
            out.blocked[partition] = blocked
        elif max_attempts is None or attempt <= max_attempts:
            out.add(partition, f"its last run {run_id[:8]} failed")
            out.attempts[partition] = attempt
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


def latest_consumed(
    instance: dg.DagsterInstance, key: dg.AssetKey, storage_ids: Mapping[str, int]
) -> dict[str, dict[str, str]]:
    """What the latest materialisation of each of these partitions consumed (one query)."""
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(storage_ids.values())), limit=len(storage_ids)
    ).records
    out: dict[str, dict[str, str]] = {}
    for record in records:
        mat = record.asset_materialization
        if mat is not None and mat.partition is not None and CONSUMED in mat.metadata:
            out[mat.partition] = dict(mat.metadata[CONSUMED].value)  # type: ignore[arg-type]
    return out


def _latest_ids(instance: dg.DagsterInstance, key: dg.AssetKey) -> Mapping[str, int]:
    return instance.event_log_storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )


def model_requests(
    instance: dg.DagsterInstance,
    active: Sequence[ModelSpec],
    changed: Mapping[str, Sequence[str]],
    batches: Iterable[str] | None = None,
) -> Requests:
    """``batch|model`` partitions due: a model new to a batch whose gold/documents is built, a
    gold/documents newer than the version its chunks were made from, or the model's settings
    (``changed``: model -> setting names; ``"*"`` for every model) not the ones last observed."""
    docs = usable_versions(instance, GOLD_DOCUMENTS)
    docs_ids, chunk_ids = _latest_ids(instance, GOLD_DOCUMENTS), _latest_ids(instance, GOLD_CHUNKS)
    wanted = sorted(docs) if batches is None else sorted(set(batches) & set(docs))
    out, moved = Requests(), {}
    for spec in active:
        for batch in wanted:
            key = batch_model(batch, spec.name)
            if key not in chunk_ids:
                out.add(key, f"new for model {spec.name}")
            elif docs_ids.get(batch, 0) > chunk_ids[key]:
                moved[key] = chunk_ids[key]  # gold/documents written since: is it another version?
            for name in [*changed.get(spec.name, ()), *changed.get("*", ())]:
                out.add(key, f"{name} changed")
    for key, consumed in latest_consumed(instance, GOLD_CHUNKS, moved).items():
        if consumed.get(GOLD_DOCUMENTS.to_user_string()) != docs[split_key(key)[0]]:
            out.add(key, "gold_documents changed")
    return out


def search_requests(
    instance: dg.DagsterInstance, active: Sequence[ModelSpec], changed: Mapping[str, Sequence[str]]
) -> Requests:
    """Models whose index is not the one last evaluated (a batch partition changed), or whose
    evaluation's inputs changed (``changed``: model -> setting names; ``"*"`` for every model)."""
    index_ids, search_ids = _latest_ids(instance, VECTOR_INDEX), _latest_ids(instance, SEARCH_INDEX)
    newest: dict[str, int] = {}
    for key, storage_id in index_ids.items():
        model = split_key(key)[1]
        newest[model] = max(newest.get(model, 0), storage_id)
    out, moved = Requests(), {}
    for spec in (s for s in active if s.name in newest):
        if spec.name not in search_ids:
            out.add(spec.name, "never evaluated")
        elif newest[spec.name] > search_ids[spec.name]:
            moved[spec.name] = search_ids[spec.name]
        for name in [*changed.get(spec.name, ()), *changed.get("*", ())]:
            out.add(spec.name, f"{name} changed")
    for model, consumed in latest_consumed(instance, SEARCH_INDEX, moved).items():
        if consumed.get(f"{EARLIER}{VECTOR_INDEX.to_user_string()}") != model_partitions_version(
            instance, VECTOR_INDEX, model
        ):
            out.add(model, "its index changed")
    return out


@dataclass(frozen=True)
class Busy:
    """What queued or running runs are materialising, by the shape of their partition."""

    batch_runs: set[str] = field(default_factory=set)  # batches
    model_runs: set[str] = field(default_factory=set)  # batch|model keys
    search_runs: set[str] = field(default_factory=set)  # models

    @property
    def batches(self) -> set[str]:
        """Batches a batch run or one of their model runs is materialising."""
        return self.batch_runs | {split_key(k)[0] for k in self.model_runs}

    def batch_model(self, key: str) -> bool:
        """A model run waits while its batch's run, or a run of the same partition, is active."""
        return key in self.model_runs or split_key(key)[0] in self.batch_runs

    def model(self, name: str) -> bool:
        """A model's evaluation waits while any run builds or evaluates that model."""
        return name in self.search_runs or any(split_key(k)[1] == name for k in self.model_runs)


def busy(instance: dg.DagsterInstance) -> Busy:
    found = Busy()
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE)):
        run = record.dagster_run
        partition = run.tags.get(PARTITION_TAG)
        if partition is None:
            continue
        if BATCH_TAG in run.tags:
            found.model_runs.add(partition)
        elif SEARCH_INDEX in (run.asset_selection or frozenset()):
            found.search_runs.add(partition)
        else:
            found.batch_runs.add(partition)
    return found


def busy_batches(instance: dg.DagsterInstance) -> set[str]:
    """Batches a queued or running run is materialising."""
    return busy(instance).batches
