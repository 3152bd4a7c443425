"""What the Dagster instance knows: each partition's latest data version and consumed inputs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from embedding_assets.lib.planner import Materialized, earlier_version

INPUTS_KEY = "ea/inputs"
BLOCKED_KEY = "ea/blocked"
EARLIER_DEPS_KEY = "ea/earlier_deps"  # asset metadata: keys whose earlier partitions are inputs


def key_str(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _materialized(record: dg.EventLogRecord) -> Materialized | None:
    mat = record.asset_materialization
    if mat is None:
        return None
    version = mat.tags.get("dagster/data_version") if mat.tags else None
    inputs_meta = mat.metadata.get(INPUTS_KEY)
    raw: Any = inputs_meta.value if inputs_meta is not None else {}
    inputs: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    blocked_meta = mat.metadata.get(BLOCKED_KEY)
    blocked = str(blocked_meta.value) if blocked_meta is not None and blocked_meta.value else None
    return Materialized(
        data_version=version or "",
        inputs={str(k): str(v) for k, v in inputs.items()},
        blocked=blocked,
    )


def latest_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str] | None = None
) -> dict[str, Materialized]:
    """Latest materialisation of every partition of ``key`` (or of the partitions named)."""
    found: dict[str, Materialized] = {}
    wanted = set(partitions) if partitions is not None else None
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(wanted) if wanted else None),
            limit=1000,
            cursor=cursor,
            ascending=False,
        )
        for record in result.records:
            partition = record.partition_key
            if partition is None or partition in found:
                continue
            mat = _materialized(record)
            if mat is not None:
                found[partition] = mat
        if not result.has_more or (wanted is not None and wanted <= set(found)):
            return found
        cursor = result.cursor


def current_versions(
    instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey], partition: str
) -> dict[str, str]:
    """Data versions of the given assets' latest materialisation of one partition."""
    out: dict[str, str] = {}
    for key in keys:
        found = latest_by_partition(instance, key, [partition]).get(partition)
        if found is not None:
            out[key_str(key)] = found.data_version
    return out


def state_for(
    instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey], partitions: Iterable[str]
) -> dict[str, dict[str, Materialized]]:
    """{partition: {asset key: Materialized}} for the partitions asked about."""
    parts = list(partitions)
    out: dict[str, dict[str, Materialized]] = {p: {} for p in parts}
    for key in keys:
        for partition, mat in latest_by_partition(instance, key).items():
            if partition in out:
                out[partition][key_str(key)] = mat
    return out


def inputs_metadata(inputs: Mapping[str, str]) -> dict[str, dg.MetadataValue]:
    return {INPUTS_KEY: dg.MetadataValue.json(dict(sorted(inputs.items())))}


def earlier_partitions_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> str:
    """The version of every partition of ``key`` before ``partition`` (see ``earlier_version``)."""
    found = latest_by_partition(instance, key)
    return earlier_version({p: m.data_version for p, m in found.items()}, partition)
