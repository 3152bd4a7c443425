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

from embedding_assets.memo import EARLIER, MISSING, Decision, Previous, decide, earlier_version

FORCE_TAG = "ea/force"  # a run tagged ea/force=true rebuilds every partition it asks for
RETRY_DEAD_LETTERS_TAG = "ea/retry_dead_letters"
CONSUMED, CHECKS, MEMO, MEMO_REASON = "consumed", "checks", "memo", "memo_reason"
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

    ``assets``: upstream assets, same batch; ``settings``: keys of
    :meth:`PipelineResource.setting_versions`; ``earlier``: every earlier partition of these assets
    (snapshot sources compare a batch with all before it)."""

    assets: tuple[dg.AssetKey, ...] = ()
    settings: tuple[str, ...] = ()
    earlier: tuple[dg.AssetKey, ...] = ()

    def deps(self) -> list[dg.AssetKey]:
        """The Dagster dependencies this declares: upstream assets and the settings' source assets."""
        return [*self.assets, *(dg.AssetKey(name) for name in self.settings)]


def partition_versions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str] | None = None
) -> dict[str, str]:
    """The latest data version of each partition of ``key`` (all, or those named), in one query."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=partitions
    )
    return {p: t[DATA_VERSION_TAG] for p, t in tags.items() if DATA_VERSION_TAG in t}


def consumed_versions(
    instance: dg.DagsterInstance, consumes: Consumes, batch: str, settings: Mapping[str, str]
) -> dict[str, str]:
    """The versions of everything ``consumes`` names, as they are now."""
    out: dict[str, str] = {}
    for key in consumes.assets:
        out[key.to_user_string()] = partition_versions(instance, key, [batch]).get(batch, MISSING)
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
        self.batch = context.partition_key
        self.keys = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
        self.consumed = {"code": context.assets_def.code_versions_by_key.get(self.keys[0]) or "", **consumed}
        tags = context.run.tags
        self.force = "forced by the run tag ea/force" if tags.get(FORCE_TAG) == "true" else force
        self.records = {key: previous_record(context.instance, key, self.batch) for key in self.keys}

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
            yield dg.MaterializeResult(
                asset_key=key,
                data_version=dg.DataVersion((mat.tags or {})[DATA_VERSION_TAG]),  # type: ignore[union-attr]
                metadata={**metadata, MEMO: "kept", MEMO_REASON: decision.reason},
            )
            yield from check_results(key, list(checks.value) if checks is not None else [])  # type: ignore[arg-type]

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
        )
        yield from check_results(key, checks)


def consumed_json(value: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(value.items())))
