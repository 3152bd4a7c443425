"""Source contracts: ``data/contracts/<source>.yaml`` declares how a source's rows are read and typed."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

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
    title: str | None = None
    updated_at: str | None = None
    deleted: DeletedMarker | None = None
    metadata: tuple[str, ...] = ()
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    quality: QualityRules = field(default_factory=QualityRules)
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


def _fail(path: Path, where: str, message: str) -> ContractError:
    return ContractError(f"{path}: field '{where}': {message}")


def _as_str_list(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _quality(raw: Mapping[str, Any]) -> QualityRules:
    missing = raw.get("max_missing_rate", {})
    outliers = raw.get("length_outliers") or {}
    near = raw.get("near_duplicates") or {}
    garbage = raw.get("garbage") or {}
    drift = raw.get("drift") or {}
    base, base_drift = QualityRules(), DriftRules()
    return QualityRules(
        max_quarantine_rate=float(raw.get("max_quarantine_rate", base.max_quarantine_rate)),
        max_missing_rate={"*": float(missing)} if isinstance(missing, int | float) else dict(missing),
        outlier_max_z=float(outliers.get("max_z", base.outlier_max_z)),
        outlier_max_rate=float(outliers.get("max_rate", base.outlier_max_rate)),
        outlier_block=bool(outliers.get("block", base.outlier_block)),
        near_duplicate_threshold=float(near.get("threshold", base.near_duplicate_threshold)),
        near_duplicate_action=str(near.get("action", base.near_duplicate_action)),
        duplicate_action=str((raw.get("duplicates") or {}).get("action", base.duplicate_action)),
        max_replacement_share=float(garbage.get("max_replacement_share", base.max_replacement_share)),
        max_entity_share=float(garbage.get("max_entity_share", base.max_entity_share)),
        drift=DriftRules(
            reference_batches=int(drift.get("reference_batches", base_drift.reference_batches)),
            max_psi=float(drift.get("max_psi", base_drift.max_psi)),
            max_ks=float(drift.get("max_ks", base_drift.max_ks)),
            max_centroid_distance=float(drift.get("max_centroid_distance", base_drift.max_centroid_distance)),
            block=bool(drift.get("block", base_drift.block)),
        ),
    )


def parse_contract(raw: Any, path: Path) -> Contract:
    """A contract from its parsed YAML: the JSON Schema first (shape and types, every error named
    by its field path), then the rules a schema cannot say (names that must refer to fields)."""
    from embedding_assets.lib.contract_schema import validate_contract_document

    validate_contract_document(raw, path)
    source = raw["source"]
    if path.stem != source:
        raise _fail(path, "source", f"'{source}' must equal the file name '{path.stem}'")
    fields: dict[str, FieldSpec] = {}
    for name, spec in (raw.get("fields") or {}).items():
        spec = {"type": spec} if isinstance(spec, str) else (spec or {})
        allowed = spec.get("allowed")
        fields[str(name)] = FieldSpec(
            name=str(name),
            type=spec.get("type", "str"),
            required=bool(spec.get("required", False)),
            allowed=tuple(str(v) for v in allowed) if allowed is not None else None,
            max_length=spec.get("max_length"),
            default=spec.get("default"),
        )
    deleted = None
    if raw.get("deleted") is not None:
        marker = raw["deleted"]
        marker = {"field": marker} if isinstance(marker, str) else marker
        values = marker.get("values", [True])
        deleted = DeletedMarker(field=marker["field"], values=tuple(str(v).strip().lower() for v in values))
    snapshot = raw.get("snapshot", False)
    snapshot = {"enabled": snapshot} if isinstance(snapshot, bool) else snapshot
    version = int(raw.get("version", 1))
    contract = Contract(
        source=source,
        format=raw["format"],
        id=raw["id"],
        text=_as_str_list(raw["text"]),
        path=path,
        version=version,
        owner=raw.get("owner"),
        description=raw.get("description"),
        title=raw.get("title"),
        updated_at=raw.get("updated_at"),
        deleted=deleted,
        metadata=_as_str_list(raw["metadata"]) if raw.get("metadata") else (),
        fields=fields,
        quality=_quality(raw.get("quality") or {}),
        snapshot=bool(snapshot.get("enabled", True)),
        max_snapshot_delete_rate=float(snapshot.get("max_delete_rate", 0.5)),
        version_field=raw.get("version_field"),
        versions={int(v): tuple(spec["fields"]) for v, spec in (raw.get("versions") or {}).items()},
        migrations=tuple(
            Migration(
                from_version=int(m["from"]),
                to_version=int(m["to"]),
                steps=tuple(MigrationStep(kind, args) for step in m["steps"] for kind, args in step.items()),
            )
            for m in raw.get("migrations") or []
        ),
    )
    _check_references(contract, path)
    return contract


def _check_references(contract: Contract, path: Path) -> None:
    declared = set(contract.fields)  # a field not declared is an optional str
    for name in contract.metadata:
        if name in RESERVED_COLUMNS:
            raise _fail(path, "metadata", f"'{name}' is a reserved index column; rename the field")
    if contract.updated_at and contract.field_spec(contract.updated_at).type not in ("datetime", "str"):
        raise _fail(path, f"fields.{contract.updated_at}.type", "updated_at must be a datetime field")
    for name, spec in contract.fields.items():
        if spec.default is not None and spec.allowed is not None and str(spec.default) not in spec.allowed:
            raise _fail(
                path, f"fields.{name}.default", f"'{spec.default}' is not one of {list(spec.allowed)}"
            )
    if contract.version_field and contract.version_field in declared:
        raise _fail(path, "version_field", "the version field is read before typing; do not declare it")
    for i, m in enumerate(contract.migrations):
        if not m.from_version < m.to_version <= contract.version:
            raise _fail(
                path, f"migrations.{i}", f"from {m.from_version} to {m.to_version} must go up to at most "
                f"the current version {contract.version}"
            )  # fmt: skip
    for v in contract.versions:
        if v >= contract.version:
            raise _fail(
                path, f"versions.{v}", f"an earlier version must be below the current {contract.version}"
            )


def load_contract(path: Path) -> Contract:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from exc
    return parse_contract(raw, path)


def contract_version(contract: Contract) -> str:
    """Hash of the contract file: a changed contract re-runs silver for every batch."""
    return hashlib.sha256(contract.path.read_bytes()).hexdigest()


def load_contracts(contracts_dir: Path) -> dict[str, Contract]:
    """Every ``*.yaml`` contract in the folder, keyed and sorted by source name."""
    if not contracts_dir.is_dir():
        raise ContractError(f"{contracts_dir}: contracts folder does not exist")
    contracts = {c.source: c for c in (load_contract(p) for p in sorted(contracts_dir.glob("*.y*ml")))}
    metadata_fields(contracts)  # metadata types must agree across sources
    return contracts


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
                raise _fail(
                    contract.path, f"fields.{name}.type",
                    f"metadata '{name}' is {spec.type} here but {found[name].type} in {owner[name]}'s contract",
                )  # fmt: skip
            if name not in found or found[name].default is None:
                found[name] = MetadataField(name, spec.type, spec.default)
                owner[name] = contract.source
    return dict(sorted(found.items()))
