"""Source contracts: ``data/contracts/<source>.yaml`` declares how a source's rows are read and typed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FORMATS = ("jsonl", "csv", "parquet", "markdown", "text")
FIELD_TYPES = ("str", "int", "float", "bool", "datetime")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ContractError(ValueError):
    """A contract file is broken; the message names the file and the field."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = "str"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class DeletedMarker:
    """A row is a deletion when ``field`` holds one of ``values`` (compared as lower-case text)."""

    field: str
    values: tuple[str, ...] = ("true",)

    def matches(self, value: object) -> bool:
        if value is None:
            return False
        return str(value).strip().lower() in self.values


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
    max_quarantine_rate: float = 0.05
    snapshot: bool = False  # each batch is the full set: a document missing from it is deleted
    max_snapshot_delete_rate: float = 0.5  # a snapshot deleting more than this share is held back

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


def _fail(path: Path, where: str, message: str) -> ContractError:
    return ContractError(f"{path}: field '{where}': {message}")


def _as_str_list(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise _fail(path, where, "expected a name or a non-empty list of names")


def parse_contract(raw: Any, path: Path) -> Contract:
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: the contract must be a YAML mapping")
    known = {
        "source",
        "format",
        "version",
        "owner",
        "description",
        "id",
        "title",
        "text",
        "updated_at",
        "deleted",
        "metadata",
        "fields",
        "quality",
        "snapshot",
    }
    for key in raw:
        if key not in known:
            raise _fail(path, str(key), f"unknown key; expected one of {sorted(known)}")
    for key in ("source", "format", "id", "text"):
        if key not in raw:
            raise _fail(path, key, "is required")
    source = raw["source"]
    if not isinstance(source, str) or not SAFE_NAME.match(source):
        raise _fail(path, "source", "must match [A-Za-z0-9][A-Za-z0-9._-]*")
    if path.stem != source:
        raise _fail(path, "source", f"'{source}' must equal the file name '{path.stem}'")
    fmt = raw["format"]
    if fmt not in FORMATS:
        raise _fail(path, "format", f"'{fmt}' is not one of {list(FORMATS)}")
    if not isinstance(raw["id"], str) or not raw["id"]:
        raise _fail(path, "id", "must be a column name")
    fields: dict[str, FieldSpec] = {}
    raw_fields = raw.get("fields") or {}
    if not isinstance(raw_fields, dict):
        raise _fail(path, "fields", "must be a mapping of field name to spec")
    for name, spec in raw_fields.items():
        spec = spec or {}
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict):
            raise _fail(path, f"fields.{name}", "must be a mapping")
        ftype = spec.get("type", "str")
        if ftype not in FIELD_TYPES:
            raise _fail(path, f"fields.{name}.type", f"'{ftype}' is not one of {list(FIELD_TYPES)}")
        allowed = spec.get("allowed")
        max_length = spec.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
            raise _fail(path, f"fields.{name}.max_length", "must be a positive integer")
        fields[str(name)] = FieldSpec(
            name=str(name),
            type=ftype,
            required=bool(spec.get("required", False)),
            allowed=tuple(str(v) for v in allowed) if allowed is not None else None,
            max_length=max_length,
        )
    deleted = None
    if raw.get("deleted") is not None:
        marker = raw["deleted"]
        if isinstance(marker, str):
            marker = {"field": marker}
        if not isinstance(marker, dict) or not isinstance(marker.get("field"), str):
            raise _fail(path, "deleted", "expected {field: <name>, values: [...]}")
        values = marker.get("values", [True])
        deleted = DeletedMarker(field=marker["field"], values=tuple(str(v).strip().lower() for v in values))
    quality = raw.get("quality") or {}
    rate = quality.get("max_quarantine_rate", 0.05)
    if not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise _fail(path, "quality.max_quarantine_rate", "must be a number between 0 and 1")
    snapshot = raw.get("snapshot", False)
    if isinstance(snapshot, bool):
        snapshot = {"enabled": snapshot}
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("enabled", True), bool):
        raise _fail(path, "snapshot", "expected true, false or {enabled: true, max_delete_rate: 0.5}")
    delete_rate = snapshot.get("max_delete_rate", 0.5)
    if not isinstance(delete_rate, int | float) or not 0 <= delete_rate <= 1:
        raise _fail(path, "snapshot.max_delete_rate", "must be a number between 0 and 1")
    version = raw.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise _fail(path, "version", "must be a positive integer")
    contract = Contract(
        source=source,
        format=fmt,
        id=raw["id"],
        text=_as_str_list(path, "text", raw["text"]),
        path=path,
        version=version,
        owner=raw.get("owner"),
        description=raw.get("description"),
        title=raw.get("title"),
        updated_at=raw.get("updated_at"),
        deleted=deleted,
        metadata=_as_str_list(path, "metadata", raw["metadata"]) if raw.get("metadata") else (),
        fields=fields,
        max_quarantine_rate=float(rate),
        snapshot=bool(snapshot.get("enabled", True)),
        max_snapshot_delete_rate=float(delete_rate),
    )
    if contract.updated_at and contract.field_spec(contract.updated_at).type not in ("datetime", "str"):
        raise _fail(path, f"fields.{contract.updated_at}.type", "updated_at must be a datetime field")
    return contract


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
    contracts = [load_contract(p) for p in sorted(contracts_dir.glob("*.y*ml"))]
    return {c.source: c for c in contracts}
