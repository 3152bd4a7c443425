"""How soon a landed batch became searchable: its landed -> searchable lag, and the batches that
wait longer than their sources' freshness SLA (``freshness_sla_minutes`` in the contract)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.contracts.model import Contract
from embedding_assets.ingest.landing import LandingBatch, UnsafeLandingError, batch_files


def arrived_at(files: Iterable[Path]) -> float | None:
    """When the newest of these files arrived here (epoch seconds): the later of its modification
    and inode-change times, since a copy or a move keeps the first but not the second."""
    times = []
    for path in files:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        times.append(max(st.st_mtime, st.st_ctime))
    return max(times, default=None)


@dataclass(frozen=True)
class Landed:
    batch: str
    at: float  # when its newest file arrived (epoch seconds)
    sla_s: float  # the strictest SLA of its sources

    def lag_s(self, searchable_at: float, since: float = 0.0) -> float:
        """Seconds from landing (or from ``since``, when later: a model added after the batch
        landed) to ``searchable_at``."""
        return max(0.0, searchable_at - max(self.at, since))


def landed_batches(found: Iterable[LandingBatch], contracts: Mapping[str, Contract]) -> dict[str, Landed]:
    """Each batch's landing time (its sources' newest file) and SLA (its sources' strictest)."""
    out: dict[str, Landed] = {}
    for b in found:
        at = arrived_at(b.files)
        if at is None:
            continue
        sla = contracts[b.source].freshness_sla_minutes * 60.0
        seen = out.get(b.batch)
        out[b.batch] = (
            Landed(b.batch, max(at, seen.at), min(sla, seen.sla_s)) if seen else Landed(b.batch, at, sla)
        )
    return out


def landed_batch(landing_dir: Path, contracts: Mapping[str, Contract], batch: str) -> Landed | None:
    """One batch's landing (None: no source has files for it, or it was refused)."""
    found = []
    for source, contract in contracts.items():
        folder = landing_dir / source / batch
        try:
            at = arrived_at(batch_files(folder, contract.format)) if folder.is_dir() else None
        except UnsafeLandingError:
            at = None
        if at is not None:
            found.append((at, contract.freshness_sla_minutes * 60.0))
    if not found:
        return None
    return Landed(batch, max(at for at, _ in found), min(sla for _, sla in found))


@dataclass(frozen=True)
class Overdue:
    batch: str
    waited_s: float
    sla_s: float

    def line(self) -> str:
        return (
            f"batch {self.batch} landed {self.waited_s / 60:.1f} min ago and is not searchable yet "
            f"(SLA {self.sla_s / 60:g} min)"
        )


def overdue(
    landed: Mapping[str, Landed], searchable_at: Mapping[str, float | None], now: float
) -> list[Overdue]:
    """Batches not searchable since they last landed, past their SLA. ``searchable_at``: when the
    serving model's index last took each batch (None: never)."""
    out = []
    for batch, found in sorted(landed.items()):
        at = searchable_at.get(batch)
        if (at is None or at < found.at) and now - found.at > found.sla_s:
            out.append(Overdue(batch, now - found.at, found.sla_s))
    return out
