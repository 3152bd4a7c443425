"""The one code path that decides what runs: used by the landing sensor and by ``sync``.

1. Scan the landing zone; refuse unsafe folder names; hash every (source, batch).
2. Register new batches as dynamic partitions and record landing observations.
3. Plan each partition by comparing consumed input versions with current ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from embedding_assets.defs.assets import layer_key
from embedding_assets.defs.partitions import BATCHES
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.state import key_str, state_for
from embedding_assets.lib.landing import EMPTY_HASH, LandingScan, scan_landing
from embedding_assets.lib.planner import Node, PartitionPlan, plan_partition

log = logging.getLogger(__name__)

CONFIG_DEPS: dict[str, tuple[str, ...]] = {
    "gold/chunks": ("config/chunker",),
    "embeddings": ("config/model",),
    "vector_index": ("config/model",),
}
ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def pipeline_nodes(assets: Sequence[dg.AssetsDefinition]) -> list[Node]:
    """Materialisable assets in topological order, with their deps (sources and settings included)."""
    deps: dict[str, tuple[str, ...]] = {}
    for ad in assets:
        if not isinstance(ad, dg.AssetsDefinition) or not ad.is_materializable:
            continue
        for key in ad.keys:
            upstream = tuple(key_str(d) for d in ad.asset_deps.get(key, ()))
            name = key_str(key)
            layer, _, source = name.partition("/")
            contract = (f"contract/{source}",) if layer in ("silver", "quarantine") else ()
            deps[name] = upstream + CONFIG_DEPS.get(name, ()) + contract
    ordered: list[Node] = []
    done: set[str] = set()

    def visit(key: str, trail: tuple[str, ...] = ()) -> None:
        if key in done or key not in deps:
            return
        if key in trail:
            raise ValueError(f"cycle in the asset graph at {key}")
        for d in deps[key]:
            visit(d, (*trail, key))
        done.add(key)
        ordered.append(Node(key, deps[key]))

    for name in sorted(deps):
        visit(name)
    return ordered


@dataclass
class SyncPlan:
    scan: LandingScan
    new_partitions: list[str]
    observations: list[dg.AssetObservation]
    plans: dict[str, PartitionPlan] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)

    @property
    def runs(self) -> dict[str, list[str]]:
        """{batch: asset keys to materialise now}, in batch order, skipping busy partitions."""
        return {b: p.to_run for b, p in sorted(self.plans.items()) if p.to_run and b not in self.busy}

    @property
    def blocked(self) -> dict[str, list[str]]:
        return {b: p.blocked for b, p in sorted(self.plans.items()) if p.blocked}


def active_partitions(instance: dg.DagsterInstance) -> set[str]:
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES))
    return {
        r.dagster_run.tags["dagster/partition"] for r in records if "dagster/partition" in r.dagster_run.tags
    }


def plan_sync(
    instance: dg.DagsterInstance, nodes: Sequence[Node], pipeline: PipelineResource, *, skip_busy: bool = True
) -> SyncPlan:
    contracts = pipeline.contracts()
    scan = scan_landing(pipeline.landing_dir_path(), contracts)
    for line in scan.rejected:
        log.warning(line)
    known = set(instance.get_dynamic_partitions(BATCHES))
    batch_names = scan.batch_names
    new = [b for b in batch_names if b not in known]
    partitions = sorted(known | set(batch_names))
    landing = scan.hashes()
    config = pipeline.config_versions(contracts)
    state = state_for(instance, [dg.AssetKey.from_user_string(n.key) for n in nodes], partitions)
    plans: dict[str, PartitionPlan] = {}
    observations: list[dg.AssetObservation] = []
    for batch in partitions:
        # A source with no folder in this batch is an empty landing partition.
        sources = {f"landing/{s}": landing.get((s, batch), EMPTY_HASH) for s in contracts}
        sources.update(config)
        plans[batch] = plan_partition(batch, nodes, sources, state[batch])
        for source in contracts:
            bronze = state[batch].get(f"bronze/{source}")
            current = sources[f"landing/{source}"]
            if bronze is None or bronze.inputs.get(f"landing/{source}") != current:
                observations.append(
                    dg.AssetObservation(
                        asset_key=layer_key("landing", source),
                        partition=batch,
                        tags={"dagster/data_version": current},
                    )
                )
    busy = active_partitions(instance) if skip_busy else set()
    return SyncPlan(scan=scan, new_partitions=new, observations=observations, plans=plans, busy=busy)


def register(instance: dg.DagsterInstance, plan: SyncPlan) -> None:
    """What the sensor returns in its SensorResult, applied directly (for in-process sync)."""
    if plan.new_partitions:
        instance.add_dynamic_partitions(BATCHES, plan.new_partitions)
    for observation in plan.observations:
        instance.report_runless_asset_event(observation)
