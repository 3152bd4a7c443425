"""gold/documents of one batch, from every source's silver rows of the batch: a source's own
documents, a snapshot source's tombstones, and each entity fused from its member sources (their
rows of the batch and, for the entities those rows touch, each member's newest row before it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from embedding_assets.contracts.model import PL_TYPES, Contract, Entity, metadata_fields
from embedding_assets.core.lake import Lake
from embedding_assets.gold.documents import (
    latest_documents,
    snapshot_tombstones,
    union_documents,
    with_metadata_columns,
)
from embedding_assets.gold.fusion import fuse, member_rows
from embedding_assets.refine.tables import FIELD_PREFIX, SILVER_SCHEMA


@dataclass(frozen=True)
class Assembled:
    documents: pl.DataFrame
    deletions: int  # snapshot tombstones
    problems: list[str]  # snapshots that would delete more than their contract allows


def silver_schema(contract: Contract) -> pl.Schema:
    """A source's silver table: the documents' columns, and every contract field typed (f_<name>)."""
    typed = {f"{FIELD_PREFIX}{n}": PL_TYPES[spec.type] for n, spec in contract.fields.items()}
    return pl.Schema({**SILVER_SCHEMA, **typed})


def entities_of(contracts: Mapping[str, Contract]) -> dict[str, Entity]:
    return {c.entity.name: c.entity for c in contracts.values() if c.entity is not None}


@dataclass(frozen=True)
class Earlier:
    """Each source's silver rows of the batches before ``batch``: the lake's, except for a batch
    ``pending`` holds rows of (a dry run's predictions, not written yet), whose rows stand in. Read
    once per source: a snapshot source that is also an entity member needs them twice."""

    lake: Lake
    batch: str
    pending: Mapping[str, pl.DataFrame]
    _read: dict[str, pl.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    def silver(self, contract: Contract) -> pl.DataFrame:
        """A member's rows with its typed ``f_`` columns (fusion reads them); any other source's
        with silver's own columns."""
        if contract.source not in self._read:
            self._read[contract.source] = self._silver(contract)
        return self._read[contract.source]

    def _silver(self, contract: Contract) -> pl.DataFrame:
        schema = silver_schema(contract) if contract.entity is not None else SILVER_SCHEMA
        rows = self.lake.read(f"silver/{contract.source}", schema, pl.col("batch") < self.batch)
        extra = self.pending.get(contract.source)
        if extra is None or not extra.height:
            return rows
        extra = _typed(extra.filter(pl.col("batch") < self.batch), contract).select(list(schema))
        replaced = extra["batch"].unique().implode()
        return pl.concat([rows.filter(~pl.col("batch").is_in(replaced)), extra.cast(schema)])  # type: ignore[arg-type]


def assemble(
    lake: Lake,
    contracts: Mapping[str, Contract],
    silvers: Mapping[str, pl.DataFrame],
    batch: str,
    pending: Mapping[str, pl.DataFrame] | None = None,
) -> Assembled:
    """The batch's gold documents, with every metadata field as a column. ``silvers``: each
    source's silver rows of the batch (a member's with its ``f_`` columns); ``pending``: see
    :class:`Earlier`."""
    earlier = Earlier(lake, batch, pending or {})
    tombstones = {s: tombstones_of(earlier, c, silvers[s], batch) for s, c in contracts.items() if c.snapshot}
    entities = entities_of(contracts)
    members = {s for e in entities.values() for s in e.sources}
    current = {
        s: pl.concat([silvers[s], tombstones[s][0]], how="diagonal_relaxed")
        if s in tombstones
        else silvers[s]
        for s in contracts
    }
    own = [current[s] for s in contracts if s not in members]
    fused = [fuse_entity(earlier, e, contracts, current) for e in entities.values()]
    documents = with_metadata_columns(union_documents([*own, *fused]), metadata_fields(contracts))
    problems = [p for _, p in tombstones.values() if p]
    return Assembled(documents, sum(t.height for t, _ in tombstones.values()), problems)


def fuse_entity(
    earlier: Earlier, entity: Entity, contracts: Mapping[str, Contract], current: Mapping[str, pl.DataFrame]
) -> pl.DataFrame:
    """The entity's documents for the keys its members' rows of the batch touch, each fused from
    every member's newest row up to the batch."""
    now = {s: member_rows(entity, s, _typed(current[s], contracts[s])) for s in entity.sources}
    touched = pl.concat([f.select("key") for f in now.values()]).unique()
    rows = []
    for source in entity.sources:
        contract = contracts[source]
        before = member_rows(entity, source, earlier.silver(contract))
        mapped = pl.concat([before.join(touched, on="key", how="semi"), now[source]])
        rows.append(latest_documents(mapped.rename({"key": "doc_id"})).rename({"doc_id": "key"}))
    return fuse(entity, pl.concat(rows), earlier.batch)


def _typed(frame: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """``frame`` with every typed field column of the source (null where it lacks one: tombstones)."""
    schema = silver_schema(contract)
    return frame.with_columns(
        pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame.columns
    )


def tombstones_of(
    earlier: Earlier, contract: Contract, current: pl.DataFrame, batch: str
) -> tuple[pl.DataFrame, str]:
    """A snapshot source's deletions implied by this batch, and the problem if there are too many."""
    before = earlier.silver(contract)
    found = snapshot_tombstones(current, before, batch)
    live_before = latest_documents(before).filter(~pl.col("deleted")).height
    limit = contract.max_snapshot_delete_rate
    if found.height and found.height > limit * live_before:
        return found, (
            f"{contract.source}: the snapshot deletes {found.height} of {live_before} documents "
            f"(more than max_delete_rate {limit:.0%})"
        )
    return found, ""
