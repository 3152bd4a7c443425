"""The one code path that decides what runs: used by the landing sensor and by ``sync``.

1. Scan the landing zone; refuse unsafe folder names; hash every (source, batch).
2. Register new batches as dynamic partitions and record landing observations.
3. Plan each partition by comparing consumed input versions with current ones.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from embedding_assets.defs.assets import layer_key
from embedding_assets.defs.partitions import BATCHES
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.state import EARLIER_DEPS_KEY, key_str, state_for
from embedding_assets.ingest.landing import EMPTY_HASH, LandingScan, scan_landing
from embedding_assets.lib.planner import (
    EARLIER,
    Node,
    PartitionPlan,
    earlier_key,
    earlier_version,
    plan_partition,
)

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
    steps: dict[str, str] = {}
    for ad in assets:
        if not isinstance(ad, dg.AssetsDefinition) or not ad.is_materializable:
            continue
        for key in ad.keys:
            if len(ad.keys) > 1 and not ad.can_subset:
                steps[key_str(key)] = ad.node_def.name
            upstream = tuple(key_str(d) for d in ad.asset_deps.get(key, ()))
            name = key_str(key)
            layer, _, source = name.partition("/")
            contract = (f"contract/{source}",) if layer in ("silver", "quarantine") else ()
            raw_earlier = ad.metadata_by_key.get(key, {}).get(EARLIER_DEPS_KEY)
            earlier_of = getattr(raw_earlier, "value", raw_earlier) or []
            earlier = tuple(earlier_key(str(k)) for k in earlier_of)  # type: ignore[union-attr]
            deps[name] = upstream + CONFIG_DEPS.get(name, ()) + contract + earlier
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
        ordered.append(Node(key, deps[key], steps.get(key, "")))

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

    @property
    def blocked_why(self) -> dict[str, dict[str, str]]:
        """{batch: {asset: the failed blocking check's message}} where the block starts."""
        return {b: dict(p.why) for b, p in sorted(self.plans.items()) if p.why}


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
        for node in nodes:
            for dep in node.deps:
                if dep.startswith(EARLIER) and dep not in sources:
                    of = dep.removeprefix(EARLIER)
                    versions = {p: s[of].data_version for p, s in state.items() if of in s}
                    sources[dep] = earlier_version(versions, batch)
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


HOST_TAG, PID_TAG, PID_START_TAG = "ea/host", "ea/pid", "ea/pid_start"


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not mistaken for the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tags() -> dict[str, str]:
    """Tags that let a later sync on this host tell whether the run's process is still alive."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: _process_start(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) == start


def reap_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs started in-process on this host by a process that is gone (killed, crashed): mark them
    failed and free their concurrency slots, so their partitions are neither 'busy' forever nor
    holding the embedding pool. Their partitions stay stale, so the plan runs them again."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=ACTIVE_RUN_STATUSES, tags={HOST_TAG: socket.gethostname()})
    )
    reaped = []
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if not pid or _alive(pid, run.tags.get(PID_START_TAG, "")):
            continue
        instance.report_run_failed(run, f"the process running it (pid {pid}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning(
            "run %s (partition %s) lost its process; marked failed",
            run.run_id,
            run.tags.get("dagster/partition"),
        )
        reaped.append(run.run_id)
    return reaped
