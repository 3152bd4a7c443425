"""Which (asset, partition) pairs must run: a state comparison, not an event stream.

An asset is stale when the data versions of its inputs differ from the ones it consumed at its
last materialisation. Comparing state (rather than reacting to "a dependency was updated"
events) means a failed run leaves the partition stale, so the next tick or sync picks it up
again, and an upstream re-run that produced identical content triggers nothing downstream.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Materialized:
    data_version: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    blocked: str | None = None  # the failed blocking check, if any


@dataclass(frozen=True)
class PartitionPlan:
    partition: str
    status: Mapping[str, Status]

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
    versions of things that are observed rather than materialised (landing hashes, settings)."""
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
        if any(mat.inputs.get(d) != v for d, v in current.items()):
            status[node.key] = Status.RUN
        elif mat.blocked:
            status[node.key] = Status.BLOCKED
        else:
            status[node.key] = Status.FRESH
    return PartitionPlan(partition, status)
