"""Which (asset, partition) pairs must run: a state comparison, not an event stream.

An asset is stale when the data versions of its inputs differ from the ones it consumed at its
last materialisation. Comparing state (rather than reacting to "a dependency was updated"
events) means a failed run leaves the partition stale, so the next tick or sync picks it up
again, and an upstream re-run that produced identical content triggers nothing downstream.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    FRESH = "fresh"
    RUN = "run"  # run now
    WAIT = "wait"  # an upstream runs first; decide after it has
    BLOCKED = "blocked"  # a blocking check failed here or upstream


@dataclass(frozen=True)
class Node:
    key: str
    deps: tuple[str, ...]
    step: str = ""  # assets computed by one step (a multi-asset) share it; they always run together

    @property
    def group(self) -> str:
        return self.step or self.key


@dataclass(frozen=True)
class Materialized:
    data_version: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    blocked: str | None = None  # the failed blocking check, if any


@dataclass(frozen=True)
class PartitionPlan:
    partition: str
    status: Mapping[str, Status]
    why: Mapping[str, str] = field(default_factory=dict)  # asset -> the failed blocking check's message

    @property
    def to_run(self) -> list[str]:
        return [k for k, s in self.status.items() if s is Status.RUN]

    @property
    def blocked(self) -> list[str]:
        return [k for k, s in self.status.items() if s is Status.BLOCKED]


def plan_partition(
    partition: str,
    nodes: Sequence[Node],
    sources: Mapping[str, str],
    state: Mapping[str, Materialized],
) -> PartitionPlan:
    """Plan one partition. ``nodes`` are in topological order; ``sources`` are the current
    versions of things that are observed rather than materialised (landing hashes, settings).

    Assets of one step run together: a run killed between a multi-asset's two materialisation
    events leaves one output recorded and the other not, and the step cannot run half of itself."""
    forced: set[str] = set()
    while True:
        status = _plan_once(nodes, sources, state, forced)
        running = {n.group for n in nodes if status[n.key] is Status.RUN}
        more = {n.key for n in nodes if n.group in running and status[n.key] is Status.FRESH} - forced
        if not more:
            why = {k: m.blocked for k, m in state.items() if m.blocked and status.get(k) is Status.BLOCKED}
            return PartitionPlan(partition, status, why)
        forced |= more


def _plan_once(
    nodes: Sequence[Node],
    sources: Mapping[str, str],
    state: Mapping[str, Materialized],
    forced: set[str],
) -> dict[str, Status]:
    status: dict[str, Status] = {}
    for node in nodes:
        upstream = [status.get(d, Status.FRESH) for d in node.deps]
        mat = state.get(node.key)
        if Status.BLOCKED in upstream:
            status[node.key] = Status.BLOCKED
            continue
        if mat is None:
            # Never materialised: it can run in the same run as its upstreams.
            ready = all(s in (Status.FRESH, Status.RUN) for s in upstream)
            status[node.key] = Status.RUN if ready else Status.WAIT
            continue
        if any(s in (Status.RUN, Status.WAIT) for s in upstream):
            status[node.key] = Status.WAIT
            continue
        current = {d: sources[d] if d in sources else state[d].data_version for d in node.deps}
        if node.key in forced or any(mat.inputs.get(d) != v for d, v in current.items()):
            status[node.key] = Status.RUN
        elif mat.blocked:
            status[node.key] = Status.BLOCKED
        else:
            status[node.key] = Status.FRESH
    return status


def forecast_runs(
    nodes: Sequence[Node],
    sources: Mapping[str, str],
    state: Mapping[str, Materialized],
    predicted: Mapping[str, str],
) -> list[str]:
    """Every asset of the partition that would run, over all the waves a sync would take.

    Like :func:`plan_partition`, but it does not wait for upstream runs to know their new data
    versions: ``predicted`` has them (an asset missing from it is assumed to change)."""
    version: dict[str, str] = {}
    runs: list[str] = []
    blocked: set[str] = set()
    for node in nodes:
        if any(d in blocked for d in node.deps):
            blocked.add(node.key)
            continue
        mat = state.get(node.key)
        current = {
            d: sources[d] if d in sources else version.get(d, state[d].data_version if d in state else "")
            for d in node.deps
        }
        if mat is None or any(mat.inputs.get(d) != v for d, v in current.items()):
            runs.append(node.key)
            version[node.key] = predicted.get(node.key, f"changed:{node.key}")
        elif mat.blocked:
            blocked.add(node.key)
        else:
            version[node.key] = mat.data_version
    groups = {n.group for n in nodes if n.key in runs}
    return [n.key for n in nodes if n.key in runs or (n.group in groups and n.key not in blocked)]


EARLIER = "earlier:"


def earlier_key(key: str) -> str:
    """The pseudo-input 'every earlier partition of ``key``' (snapshot sources read it)."""
    return f"{EARLIER}{key}"


def earlier_version(versions: Mapping[str, str], partition: str) -> str:
    """One version for the data versions of all partitions that sort before ``partition``."""
    digest = hashlib.sha256()
    for name in sorted(p for p in versions if p < partition):
        digest.update(f"{name}={versions[name]}\n".encode())
    return digest.hexdigest()
