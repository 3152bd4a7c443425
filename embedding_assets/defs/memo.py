"""Memoised assets on Dagster's own records.

Every asset declares what it consumes (:class:`Consumes`). A step gathers the current versions of
those inputs from the instance (the latest data version of each upstream partition, read with the
per-partition latest-record API) and from the settings, compares them with what its latest
materialisation of the partition consumed, and then either rebuilds or keeps the partition: a kept
partition writes nothing and is reported again with its previous data version, figures and check
outcomes, so the UI, a backfill, ``dagster asset materialize``, the sensor and ``sync`` all skip
the same work. The consumed versions are recorded as structured metadata (``consumed``) on the
materialisation, beside the provenance Dagster records itself, because Dagster's provenance of a
partitioned observable source (landing) does not carry the observed version (see the README).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from embedding_assets.defs.keys import BY_BATCH, BY_MODEL, split_key
from embedding_assets.memo import (
    EARLIER,
    MISSING,
    Decision,
    Previous,
    decide,
    earlier_version,
    versions_digest,
)

FORCE_TAG = "ea/force"  # a run tagged ea/force=true rebuilds every partition it asks for
RETRY_DEAD_LETTERS_TAG = "ea/retry_dead_letters"
CONSUMED, CHECKS, MEMO, MEMO_REASON = "consumed", "checks", "memo", "memo_reason"
BLOCKED_TAG = "ea/blocked"  # on a materialisation whose blocking check failed: nothing downstream may use it
# Figures of the work a run did, not of the partition's content: zero when a partition is kept.
WORK_FIGURES = (
    "rows_appended",
    "chunks_embedded",
    "chunks_upserted",
    "chunks_deleted",
    "docs_written",
    "docs_deleted",
    "documents_split",
    "retries",
    "encode_seconds",
)


class Outcome(Protocol):
    """A check outcome (``refine.report.CheckOutcome`` and the like)."""

    name: str
    passed: bool
    blocking: bool
    message: str
    figures: dict[str, float]


@dataclass(frozen=True)
class Consumes:
    """What an asset partition reads, declared once beside the asset.

    ``shape``: how the asset is partitioned (by ``batch``, by ``batch_model`` or by ``model``).
    ``assets``: upstream assets, same partition; ``settings``: keys of
    :meth:`PipelineResource.setting_versions` and of ``model_setting_versions`` (those have one
    version per model); ``earlier``: every earlier partition of these assets (snapshot sources
    compare a batch with all before it). ``batch_assets``: read at the batch of a ``batch|model``
    partition; ``model_assets``: read at every batch of a model's partition."""

    shape: str = "batch"
    assets: tuple[dg.AssetKey, ...] = ()
    settings: tuple[str, ...] = ()
    earlier: tuple[dg.AssetKey, ...] = ()
    batch_assets: tuple[dg.AssetKey, ...] = ()
    model_assets: tuple[dg.AssetKey, ...] = ()

    def deps(self, model_settings: Sequence[str] = ()) -> list[dg.AssetKey | dg.AssetDep]:
        """The Dagster dependencies this declares, with the partition mappings of its shape."""
        per_model = [n for n in self.settings if n in model_settings]
        mapped = self.shape == "batch_model"
        return [
            *self.assets,
            *(dg.AssetDep(k, partition_mapping=BY_BATCH) for k in self.batch_assets),
            *(dg.AssetDep(k, partition_mapping=BY_MODEL) for k in self.model_assets),
            *(dg.AssetKey(n) for n in self.settings if n not in per_model),
            *(dg.AssetDep(n, partition_mapping=BY_MODEL) if mapped else dg.AssetKey(n) for n in per_model),
        ]


def partition_versions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str] | None = None
) -> dict[str, str]:
    """The latest data version of each partition of ``key`` (all, or those named), in one query."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=partitions
    )
    return {p: t[DATA_VERSION_TAG] for p, t in tags.items() if DATA_VERSION_TAG in t}


def usable_versions(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    """Like :func:`partition_versions`, less the partitions whose latest materialisation failed a
    blocking check: a later run (of another shape) must not build on them, as a run would not."""
    versions = partition_versions(instance, key)
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=max(len(ids), 1)
    ).records
    blocked = {
        mat.partition
        for r in records
        if (mat := r.asset_materialization) and (mat.tags or {}).get(BLOCKED_TAG) == "true"
    }
    return {p: v for p, v in versions.items() if p not in blocked}


def model_partitions_version(instance: dg.DagsterInstance, key: dg.AssetKey, model: str) -> str:
    """One version for the data versions of every batch partition of ``key`` for ``model``."""
    versions = {p: v for p, v in partition_versions(instance, key).items() if split_key(p)[1] == model}
    return versions_digest(versions)


def consumed_versions(
    instance: dg.DagsterInstance, consumes: Consumes, partition: str, settings: Mapping[str, str]
) -> dict[str, str]:
    """The versions of everything ``consumes`` names, as they are now, for one partition (a batch,
    a ``batch|model`` or a model)."""
    out: dict[str, str] = {}
    batch = split_key(partition)[0]
    for key in consumes.assets:
        out[key.to_user_string()] = partition_versions(instance, key, [partition]).get(partition, MISSING)
    for key in consumes.batch_assets:
        out[key.to_user_string()] = partition_versions(instance, key, [batch]).get(batch, MISSING)
    for key in consumes.model_assets:
        out[f"{EARLIER}{key.to_user_string()}"] = model_partitions_version(instance, key, partition)
    for name in consumes.settings:
        out[name] = settings[name]
    for key in consumes.earlier:
        out[f"{EARLIER}{key.to_user_string()}"] = earlier_version(partition_versions(instance, key), batch)
    return out


def previous_record(instance: dg.DagsterInstance, key: dg.AssetKey, batch: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch]), limit=1, ascending=False
    ).records
    return records[0] if records else None


def as_previous(record: dg.EventLogRecord | None) -> Previous | None:
    mat = record.asset_materialization if record is not None else None
    if mat is None or CONSUMED not in mat.metadata:
        return None  # never materialised, or by a version of this project that did not memoise
    rows = mat.metadata.get("dagster/row_count")
    return Previous(
        data_version=(mat.tags or {}).get(DATA_VERSION_TAG, ""),
        consumed=dict(mat.metadata[CONSUMED].value),  # type: ignore[arg-type]
        row_count=int(rows.value) if rows is not None else None,  # type: ignore[arg-type]
    )


def check_json(outcomes: Sequence[Outcome]) -> dg.MetadataValue:
    return dg.MetadataValue.json([asdict(o) for o in outcomes])  # type: ignore[call-overload]


def blocked_tags(outcomes: Sequence[Outcome | Mapping[str, Any]]) -> dict[str, str]:
    raw = [o if isinstance(o, Mapping) else asdict(o) for o in outcomes]  # type: ignore[call-overload]
    return {BLOCKED_TAG: "true"} if any(r["blocking"] and not r["passed"] for r in raw) else {}


def check_results(
    key: dg.AssetKey, outcomes: Sequence[Outcome | Mapping[str, Any]]
) -> Iterator[dg.AssetCheckResult]:
    """Dagster check results; a failed blocking check is an error (it blocks what is downstream)."""
    for o in outcomes:
        raw = o if isinstance(o, Mapping) else asdict(o)  # type: ignore[call-overload]
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=raw["name"],
            passed=bool(raw["passed"]),
            severity=dg.AssetCheckSeverity.ERROR if raw["blocking"] else dg.AssetCheckSeverity.WARN,
            description=raw["message"],
            metadata={"message": raw["message"], **dict(raw.get("figures") or {})},
        )


class Memo:
    """One step's memoisation: the inputs it consumes now and its outputs' latest records."""

    def __init__(self, context: dg.AssetExecutionContext, consumed: dict[str, str], force: str | None = None):
        self.context = context
        self.partition = str(context.partition_key)
        self.keys = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
        self.consumed = {"code": context.assets_def.code_versions_by_key.get(self.keys[0]) or "", **consumed}
        tags = context.run.tags
        self.force = "forced by the run tag ea/force" if tags.get(FORCE_TAG) == "true" else force
        self.records = {key: previous_record(context.instance, key, self.partition) for key in self.keys}

    def decide(self, present: Callable[[dg.AssetKey, Previous], bool]) -> Decision:
        """Rebuild when any output must be; ``present(key, previous)`` says whether an output is
        still in the lake."""
        for key in self.keys:
            previous = as_previous(self.records[key])
            decision = decide(self.consumed, previous, lambda k=key, p=previous: present(k, p), self.force)  # type: ignore[misc]
            if decision.rebuild:
                return decision
        return decision

    def kept(self, decision: Decision) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Each output again, with its previous data version, figures and check outcomes."""
        for key in self.keys:
            mat = self.records[key].asset_materialization  # type: ignore[union-attr]
            metadata = {k: v for k, v in mat.metadata.items() if k not in (MEMO, MEMO_REASON)}  # type: ignore[union-attr]
            metadata.update({name: 0 for name in WORK_FIGURES if name in metadata})
            checks = metadata.get(CHECKS)
            outcomes = list(checks.value) if checks is not None else []  # type: ignore[arg-type]
            yield dg.MaterializeResult(
                asset_key=key,
                data_version=dg.DataVersion((mat.tags or {})[DATA_VERSION_TAG]),  # type: ignore[union-attr]
                metadata={**metadata, MEMO: "kept", MEMO_REASON: decision.reason},
                tags=blocked_tags(outcomes),
            )
            yield from check_results(key, outcomes)

    def built(
        self,
        key: dg.AssetKey,
        data_version: str,
        metadata: Mapping[str, Any],
        decision: Decision,
        checks: Sequence[Outcome] = (),
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """A rebuilt output, recording what it consumed and its check outcomes."""
        yield dg.MaterializeResult(
            asset_key=key,
            data_version=dg.DataVersion(data_version),
            metadata={
                **metadata,
                CONSUMED: dg.MetadataValue.json(self.consumed),
                CHECKS: check_json(checks),
                MEMO: "rebuilt",
                MEMO_REASON: decision.reason,
            },
            tags=blocked_tags(checks),
        )
        yield from check_results(key, checks)


def consumed_json(value: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(value.items())))
