"""Memoised asset partitions, as pure functions: what a partition consumed, and whether a run
that asks for it must rebuild it or may keep what the lake holds.

An asset partition is rebuilt when anything it consumed differs from what its latest
materialisation consumed (an upstream partition's data version, a setting, the contract, its own
code version, the snapshot of earlier partitions), when its output has gone from the lake, or when
a run forces it. Otherwise it writes nothing and keeps its data version. The Dagster side
(``defs/memo.py``) gathers the versions; the rule lives here, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

EARLIER = "earlier:"  # prefix of the consumed input "every earlier partition of <asset>"
MISSING = "<missing>"  # an input with no version yet (never materialised)


@dataclass(frozen=True)
class Previous:
    """The latest materialisation of an asset partition, as far as memoisation cares."""

    data_version: str
    consumed: Mapping[str, str]
    row_count: int | None = None


@dataclass(frozen=True)
class Decision:
    rebuild: bool
    reason: str
    changed: tuple[str, ...] = ()

    @property
    def skip(self) -> bool:
        return not self.rebuild


def changed_inputs(consumed: Mapping[str, str], before: Mapping[str, str]) -> tuple[str, ...]:
    """Names of the inputs whose version differs (or that appeared or disappeared)."""
    return tuple(sorted(k for k in consumed.keys() | before.keys() if consumed.get(k) != before.get(k)))


def decide(
    consumed: Mapping[str, str],
    previous: Previous | None,
    present: Callable[[], bool],
    force: str | None = None,
) -> Decision:
    """Rebuild or keep. ``present`` is asked last, since it may read the lake; ``force`` is the
    reason a run insists on a rebuild (a run tag, dead letters to retry), if any."""
    if force:
        return Decision(True, force)
    if previous is None:
        return Decision(True, "never materialised")
    changed = changed_inputs(consumed, previous.consumed)
    if changed:
        return Decision(True, f"consumed inputs changed: {', '.join(changed)}", changed)
    if not present():
        return Decision(True, "its output is no longer in the lake")
    return Decision(
        False, "every consumed input equals its last materialisation's, and its output is in the lake"
    )


def _digest_step(digest: hashlib._Hash, partition: str, version: str) -> None:
    digest.update(f"{partition}={version}\n".encode())


def versions_digest(versions: Mapping[str, str]) -> str:
    """One version for a set of partitions' data versions."""
    digest = hashlib.sha256()
    for name in sorted(versions):
        _digest_step(digest, name, versions[name])
    return digest.hexdigest()


def earlier_version(versions: Mapping[str, str], partition: str) -> str:
    """One version for the data versions of all partitions that sort before ``partition``."""
    digest = hashlib.sha256()
    for name in sorted(p for p in versions if p < partition):
        _digest_step(digest, name, versions[name])
    return digest.hexdigest()


def earlier_versions(versions: Mapping[str, str], partitions: Iterable[str]) -> dict[str, str]:
    """:func:`earlier_version` for many partitions at once, in one pass over ``versions``."""
    wanted = sorted(set(partitions))
    known = sorted(versions)
    out: dict[str, str] = {}
    digest = hashlib.sha256()
    i = 0
    for partition in wanted:
        while i < len(known) and known[i] < partition:
            _digest_step(digest, known[i], versions[known[i]])
            i += 1
        out[partition] = digest.copy().hexdigest()
    return out
