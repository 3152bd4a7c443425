"""What a source contract declares: fields, types, deletion markers, versions, migrations and quality rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


PL_TYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("us", "UTC"),
}


class ContractError(ValueError):
    """A contract file is broken; the message names the file and the field."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = "str"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    max_length: int | None = None
    default: Any = None  # filled in where a record lacks the field (and backfilled onto the index)


@dataclass(frozen=True)
class DeletedMarker:
    """A row is a deletion when ``field`` holds one of ``values`` (compared as lower-case text)."""

    field: str
    values: tuple[str, ...] = ("true",)

    def matches(self, value: object) -> bool:
        if value is None:
            return False
        return str(value).strip().lower() in self.values


STEP_KINDS = ("rename", "add", "cast", "split", "merge", "drop")


@dataclass(frozen=True)
class MigrationStep:
    kind: str  # one of STEP_KINDS
    args: Mapping[str, Any]

    def describe(self) -> str:
        return f"{self.kind} {dict(self.args)}"


@dataclass(frozen=True)
class Migration:
    from_version: int
    to_version: int
    steps: tuple[MigrationStep, ...]


FUSION_RULES = ("priority", "first_non_null", "recency")


@dataclass(frozen=True)
class Member:
    """How a source maps onto an entity: its id is the entity key (compared in ``key_case``, upper
    or lower, where sources write keys differently), and ``fields`` maps entity field -> its field."""

    entity: str
    fields: Mapping[str, str]
    key_case: str = ""


@dataclass(frozen=True)
class FieldRule:
    """How an entity field is chosen among its sources' rows (see :mod:`embedding_assets.gold.fusion`)."""

    rule: str = "priority"
    priority: tuple[str, ...] = ()  # this field's own source order (default: the entity's)


@dataclass(frozen=True)
class Entity:
    """``data/contracts/entities/<name>.yaml``: one gold document per entity, fused from the rows its
    member sources hold about it, field by field."""

    name: str
    path: Path
    sources: tuple[str, ...]  # priority order, highest first
    members: Mapping[str, Member]
    fields: Mapping[str, FieldRule]
    types: Mapping[str, str]  # entity field -> contract type, as its sources declare it
    title: str | None = None
    text: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    owner: str | None = None

    def order(self, field: str) -> tuple[str, ...]:
        return self.fields[field].priority or self.sources


@dataclass(frozen=True)
class StreamSpec:
    """A NATS JetStream stream the source is consumed from, in micro-batches into the landing zone:
    a micro-batch closes at ``max_messages`` or after ``max_seconds``, whichever comes first."""

    subject: str
    stream: str
    url: str = "nats://127.0.0.1:4222"
    durable: str = ""  # the consumer's durable name (default: embedding-assets-<source>)
    max_messages: int = 500
    max_seconds: float = 5.0
    max_message_bytes: int = 1 << 20  # a bigger message lands as a quarantine row with the reason
    max_deliver: int = 5  # a message failing this many deliveries goes to the dead-letter table


PII_KINDS = ("email", "iban", "card", "phone")  # the order they are looked for in
PII_ACTIONS = ("mask", "drop", "keep")


@dataclass(frozen=True)
class PiiRules:
    """What silver does with each kind of personal data in the text fields: ``mask`` (replace
    it with a placeholder: the default), ``drop`` (remove it) or ``keep``."""

    actions: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, "mask"))

    @property
    def active(self) -> dict[str, str]:
        """The kinds looked for, in order, with their action (kept kinds are not looked for)."""
        chosen = {kind: self.actions.get(kind, "mask") for kind in PII_KINDS}
        return {kind: action for kind, action in chosen.items() if action != "keep"}


@dataclass(frozen=True)
class DriftRules:
    reference_batches: int = 4
    max_psi: float = 0.25
    max_ks: float = 0.3
    max_centroid_distance: float = 0.15
    block: bool = False


@dataclass(frozen=True)
class QualityRules:
    """Thresholds a batch is held to; every one has a default, a contract overrides any."""

    max_quarantine_rate: float = 0.05
    max_missing_rate: Mapping[str, float] = field(default_factory=dict)  # "*" = every optional field
    outlier_max_z: float = 6.0
    outlier_max_rate: float = 0.02
    outlier_block: bool = False
    near_duplicate_threshold: float = 0.9
    near_duplicate_action: str = "flag"  # or "drop"
    duplicate_action: str = "drop"  # exact duplicates by normalised text: "drop" or "flag"
    max_replacement_share: float = 0.01
    max_entity_share: float = 0.05
    drift: DriftRules = field(default_factory=DriftRules)

    def missing_threshold(self, name: str) -> float | None:
        return self.max_missing_rate.get(name, self.max_missing_rate.get("*"))


@dataclass(frozen=True)
class Contract:
    source: str
    format: str
    id: str
    text: tuple[str, ...]
    path: Path
    version: int = 1
    owner: str | None = None
    description: str | None = None
    freshness_sla_minutes: float = 10.0  # a landed batch must be searchable this soon
    title: str | None = None
    updated_at: str | None = None
    deleted: DeletedMarker | None = None
    metadata: tuple[str, ...] = ()
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    quality: QualityRules = field(default_factory=QualityRules)
    pii: PiiRules = field(default_factory=PiiRules)
    stream: StreamSpec | None = None  # consumed from NATS JetStream (format jsonl)
    member: Member | None = None  # this source's rows are fused into an entity
    entity: Entity | None = None  # that entity, once its file is read
    snapshot: bool = False  # each batch is the full set: a document missing from it is deleted
    max_snapshot_delete_rate: float = 0.5  # a snapshot deleting more than this share is held back
    version_field: str | None = None  # a record field that names the record's contract version
    versions: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # earlier versions' fields
    migrations: tuple[Migration, ...] = ()

    @property
    def max_quarantine_rate(self) -> float:
        return self.quality.max_quarantine_rate

    def field_spec(self, name: str) -> FieldSpec:
        return self.fields.get(name, FieldSpec(name=name))

    @property
    def referenced_fields(self) -> tuple[str, ...]:
        """Every field the pipeline reads, in a stable order."""
        names: list[str] = [self.id, *self.text]
        for extra in (self.title, self.updated_at, self.deleted.field if self.deleted else None):
            if extra:
                names.append(extra)
        names.extend(self.metadata)
        names.extend(self.fields)
        return tuple(dict.fromkeys(names))

    def shapes(self) -> dict[int, frozenset[str]]:
        """The field names a record of each known version has (the current one included)."""
        shapes = {v: frozenset(names) for v, names in self.versions.items()}
        shapes[self.version] = frozenset(self.fields or self.referenced_fields)
        return shapes


# Columns of gold and of the index that a metadata field must not shadow.
RESERVED_COLUMNS = frozenset(
    {
        "doc_id", "source", "source_id", "batch", "title", "text", "updated_at", "deleted", "metadata",
        "content_hash", "chunk_id", "chunk_index", "chunk_hash", "n_tokens", "vector", "near_duplicate_of",
    }
)  # fmt: skip


def field_error(path: Path, where: str, message: str) -> ContractError:
    return ContractError(f"{path}: field '{where}': {message}")


@dataclass(frozen=True)
class MetadataField:
    """A metadata column of gold and of the index: one type across every source that has it."""

    name: str
    type: str
    default: Any = None

    @property
    def dtype(self) -> pl.DataType:
        return PL_TYPES[self.type]


def metadata_fields(contracts: Mapping[str, Contract]) -> dict[str, MetadataField]:
    """The union of every contract's metadata fields, sorted by name."""
    found: dict[str, MetadataField] = {}
    owner: dict[str, str] = {}
    for contract in contracts.values():
        for name in contract.metadata:
            spec = contract.field_spec(name)
            if name in found and found[name].type != spec.type:
                raise field_error(
                    contract.path, f"fields.{name}.type",
                    f"metadata '{name}' is {spec.type} here but {found[name].type} in {owner[name]}'s contract",
                )  # fmt: skip
            if name not in found or found[name].default is None:
                found[name] = MetadataField(name, spec.type, spec.default)
                owner[name] = contract.source
        entity = contract.entity
        for name in entity.metadata if entity else ():
            kind = entity.types[name]  # type: ignore[union-attr]
            if name in found and found[name].type != kind:
                raise field_error(
                    entity.path, f"metadata.{name}",  # type: ignore[union-attr]
                    f"metadata '{name}' is {kind} here but {found[name].type} in {owner[name]}'s contract",
                )  # fmt: skip
            found.setdefault(name, MetadataField(name, kind))
            owner.setdefault(name, f"entity {entity.name}")  # type: ignore[union-attr]
    return dict(sorted(found.items()))
