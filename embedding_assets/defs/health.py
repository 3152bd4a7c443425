"""Damaged state, found before ``sync`` or ``repair`` act on it.

Each lake table is checked against the last Delta version its assets recorded on their
materialisations in Dagster (``delta_version``), so a table that went backwards is caught, as
is a log with a gap or a data file that is missing or truncated. ``embedding-assets restore``
recovers a table and records, as an observation of the same assets, the version it accepted.
An index that went missing or empty is rebuilt from the embeddings table, re-embedding nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from embedding_assets.contracts.model import Contract
from embedding_assets.core.health import Damage, Recovered, recover, table_damage
from embedding_assets.defs.embed import DEAD_LETTER_TABLE
from embedding_assets.defs.keys import EMBEDDINGS, GOLD_CHUNKS, GOLD_DOCUMENTS, VECTOR_INDEX, layer_key
from embedding_assets.defs.repair import RepairReport, repair_index
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.registry import ModelSpec

ACCEPTED = "ea/accepted_delta_version"  # on a restore's observation: the version it accepted
RECENT = 25  # materialisations read per asset for the highest recorded version
Writers = dict[str, list[tuple[dg.AssetKey, str]]]  # table -> (asset, metadata key of its version)


def table_writers(contracts: Mapping[str, Contract]) -> Writers:
    """Every lake table, with the assets that write it and where they record its version."""
    out: Writers = {}
    for source in contracts:
        for layer in ("bronze", "silver", "quarantine"):
            out[f"{layer}/{source}"] = [(layer_key(layer, source), "delta_version")]
    out["gold/documents"] = [(GOLD_DOCUMENTS, "delta_version")]
    out["gold/chunks"] = [(GOLD_CHUNKS, "delta_version")]
    out["embeddings"] = [(EMBEDDINGS, "delta_version")]
    out[DEAD_LETTER_TABLE] = [(EMBEDDINGS, "dead_letter_delta_version")]
    return out


def _value(metadata: Mapping[str, dg.MetadataValue], name: str) -> int | None:
    entry = metadata.get(name)
    value = getattr(entry, "value", None)
    return int(value) if isinstance(value, int) and value >= 0 else None


def recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey, name: str) -> int | None:
    """The highest version of a table recorded by ``key``'s recent materialisations, since the
    last version a restore accepted (which counts itself)."""
    accepted = [
        (r.storage_id, _value(r.asset_observation.metadata, ACCEPTED))  # type: ignore[union-attr]
        for r in instance.fetch_observations(key, limit=RECENT).records
        if r.asset_observation is not None and ACCEPTED in r.asset_observation.metadata
    ]
    floor, best = accepted[0] if accepted else (-1, None)
    for record in instance.fetch_materializations(key, limit=RECENT).records:
        if record.storage_id > floor and record.asset_materialization is not None:
            found = _value(record.asset_materialization.metadata, name)
            best = found if best is None or (found is not None and found > best) else best
    return best


def lake_damage(instance: dg.DagsterInstance, pipeline: PipelineResource) -> list[Damage]:
    lake, out = pipeline.lake(), []
    for table, writers in table_writers(pipeline.contracts()).items():
        versions = [v for k, n in writers if (v := recorded_version(instance, k, n)) is not None]
        damage = table_damage(table, lake.uri(table), max(versions) if versions else None)
        if damage is not None:
            out.append(damage)
    return out


def damage_report(damage: list[Damage]) -> str:
    """Every damaged table, and how to recover it."""
    lines = [d.render() for d in damage]
    lines += [
        "nothing was changed. To recover each table from its last intact version (Delta time travel; "
        "the damaged folder is kept beside it), then rebuild what it lost:",
        *(f"  embedding-assets restore {d.table}" for d in damage),
        "  embedding-assets sync --force",
    ]
    return "\n".join(lines)


def restore(
    instance: dg.DagsterInstance, pipeline: PipelineResource, table: str, version: int | None = None
) -> str:
    """Make ``table`` readable from its last intact version (or accept the version it went back
    to), and record the version accepted on its assets."""
    writers = table_writers(pipeline.contracts())
    if table not in writers:
        raise ValueError(f"unknown lake table {table!r}; tables: {', '.join(sorted(writers))}")
    uri, keys = pipeline.lake().uri(table), [k for k, _ in writers[table]]
    versions = [v for k, n in writers[table] if (v := recorded_version(instance, k, n)) is not None]
    damage = table_damage(table, uri, max(versions) if versions else None)
    if damage is None and version is None:
        return f"lake table {table}: nothing to restore"
    done: Recovered | None = None
    as_is = damage is not None and (damage.problem.startswith("missing") or "went back" in damage.problem)
    if version is not None or not as_is:
        done = recover(table, uri, version)
    current = pipeline.lake().version(table)
    accepted = done.new_version if done else (-1 if current is None else current)
    for key in dict.fromkeys(keys):
        instance.report_runless_asset_event(
            dg.AssetObservation(asset_key=key, metadata={ACCEPTED: accepted, "ea/restored": table})
        )
    what = (
        f"rewrote it from version {done.version} ({done.rows} rows); the damaged table is kept at {done.kept_aside}"
        if done
        else f"accepted version {accepted} as it is"
        if accepted >= 0
        else "accepted that it is gone (sync rebuilds it)"
    )
    return f"lake table {table}: {what}. Now run `embedding-assets sync --force` to rebuild what it lost."


def index_lost(instance: dg.DagsterInstance, pipeline: PipelineResource, spec: ModelSpec) -> bool:
    """A model's index table was written before (a recent ``vector_index`` materialisation names
    it), but it is now missing or empty. A model's first table is not lost, only new."""
    table = pipeline.index_table(spec)
    records = instance.fetch_materializations(VECTOR_INDEX, limit=RECENT).records
    written = any(
        getattr(r.asset_materialization.metadata.get("table"), "value", None) == table.name
        for r in records
        if r.asset_materialization is not None
    )
    return written and (not table.exists() or table.open().count_rows() == 0)


def rebuild_lost_indexes(instance: dg.DagsterInstance, pipeline: PipelineResource) -> dict[str, RepairReport]:
    """Rebuild every active model's lost index from the embeddings table (nothing that is stored
    is re-embedded); by model name."""
    return {
        spec.name: repair_index(instance, pipeline, spec)
        for spec in pipeline.active_models()
        if index_lost(instance, pipeline, spec)
    }
