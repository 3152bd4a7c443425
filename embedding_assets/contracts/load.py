"""Reading ``data/contracts/<source>.yaml``: YAML, then the JSON Schema, then the rules a schema cannot say."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedding_assets.contracts.entity import read_entities
from embedding_assets.contracts.model import (
    PII_KINDS,
    RESERVED_COLUMNS,
    Contract,
    ContractError,
    DeletedMarker,
    DriftRules,
    FieldSpec,
    Member,
    Migration,
    MigrationStep,
    PiiRules,
    QualityRules,
    StreamSpec,
    field_error,
    metadata_fields,
)
from embedding_assets.contracts.schema import validate_contract_document
from embedding_assets.core.strict_yaml import StrictYAMLError, load_strict


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
    validate_contract_document(raw, path)
    source = raw["source"]
    if path.stem != source:
        raise field_error(path, "source", f"'{source}' must equal the file name '{path.stem}'")
    snapshot = raw.get("snapshot", False)
    snapshot = {"enabled": snapshot} if isinstance(snapshot, bool) else snapshot
    contract = Contract(
        source=source,
        format=raw["format"],
        id=raw["id"],
        text=_as_str_list(raw["text"]),
        path=path,
        version=int(raw.get("version", 1)),
        owner=raw.get("owner"),
        description=raw.get("description"),
        freshness_sla_minutes=float(raw.get("freshness_sla_minutes", 10.0)),
        title=raw.get("title"),
        updated_at=raw.get("updated_at"),
        deleted=_deleted_marker(raw.get("deleted")),
        metadata=_as_str_list(raw["metadata"]) if raw.get("metadata") else (),
        fields=_fields(raw.get("fields") or {}),
        quality=_quality(raw.get("quality") or {}),
        pii=PiiRules({**dict.fromkeys(PII_KINDS, "mask"), **(raw.get("pii") or {})}),
        stream=_stream(raw.get("stream"), source),
        member=_member(raw.get("entity")),
        snapshot=bool(snapshot.get("enabled", True)),
        max_snapshot_delete_rate=float(snapshot.get("max_delete_rate", 0.5)),
        version_field=raw.get("version_field"),
        versions={int(v): tuple(spec["fields"]) for v, spec in (raw.get("versions") or {}).items()},
        migrations=_migrations(raw.get("migrations") or []),
    )
    _check_references(contract, path)
    return contract


def _member(raw: Mapping[str, Any] | None) -> Member | None:
    if not raw:
        return None
    return Member(
        str(raw["name"]),
        {str(k): str(v) for k, v in (raw.get("fields") or {}).items()},
        raw.get("key_case", ""),
    )


def _stream(raw: Mapping[str, Any] | None, source: str) -> StreamSpec | None:
    if not raw:
        return None
    return StreamSpec(**{"durable": f"embedding-assets-{source}", **raw})


def _fields(raw: Mapping[str, Any]) -> dict[str, FieldSpec]:
    """Field specs by name; a bare type name (``score: float``) is a spec with only a type."""
    fields: dict[str, FieldSpec] = {}
    for name, spec in raw.items():
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
    return fields


def _deleted_marker(raw: Any) -> DeletedMarker | None:
    """The deletion marker: a field name alone means the field is true."""
    if raw is None:
        return None
    marker = {"field": raw} if isinstance(raw, str) else raw
    values = marker.get("values", [True])
    return DeletedMarker(field=marker["field"], values=tuple(str(v).strip().lower() for v in values))


def _migrations(raw: list[Mapping[str, Any]]) -> tuple[Migration, ...]:
    return tuple(
        Migration(
            from_version=int(m["from"]),
            to_version=int(m["to"]),
            steps=tuple(MigrationStep(kind, args) for step in m["steps"] for kind, args in step.items()),
        )
        for m in raw
    )


def _check_references(contract: Contract, path: Path) -> None:
    declared = set(contract.fields)  # a field not declared is an optional str
    for name in contract.metadata:
        if name in RESERVED_COLUMNS:
            raise field_error(path, "metadata", f"'{name}' is a reserved index column; rename the field")
    if contract.updated_at and contract.field_spec(contract.updated_at).type not in ("datetime", "str"):
        raise field_error(path, f"fields.{contract.updated_at}.type", "updated_at must be a datetime field")
    for name, spec in contract.fields.items():
        if spec.default is not None and spec.allowed is not None and str(spec.default) not in spec.allowed:
            raise field_error(
                path, f"fields.{name}.default", f"'{spec.default}' is not one of {list(spec.allowed)}"
            )
    if contract.version_field and contract.version_field in declared:
        raise field_error(path, "version_field", "the version field is read before typing; do not declare it")
    for i, m in enumerate(contract.migrations):
        if not m.from_version < m.to_version <= contract.version:
            raise field_error(
                path, f"migrations.{i}", f"from {m.from_version} to {m.to_version} must go up to at most "
                f"the current version {contract.version}"
            )  # fmt: skip
    for v in contract.versions:
        if v >= contract.version:
            raise field_error(
                path, f"versions.{v}", f"an earlier version must be below the current {contract.version}"
            )


def load_contract(path: Path) -> Contract:
    """One contract file, read with the strict YAML loader (no aliases, merge keys or tags; at
    most 256 KiB). Every problem is a :class:`ContractError` of one line naming the file."""
    try:
        raw = load_strict(path.read_bytes(), "the contract")
    except StrictYAMLError as exc:
        raise ContractError(f"{path}: not a valid contract: {exc}; fix the file and sync again") from None
    except OSError as exc:
        raise ContractError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_contract(raw, path)


@dataclass(frozen=True)
class ContractSet:
    """The contracts that load, and one line per contract file that does not (by its stem, the
    source it is for): a broken contract holds back its own source only."""

    contracts: dict[str, Contract]
    problems: dict[str, str] = field(default_factory=dict)


def read_contracts(contracts_dir: Path) -> ContractSet:
    """Every ``*.yaml`` contract in the folder, keyed and sorted by source name, the broken ones
    set aside with their problem."""
    if not contracts_dir.is_dir():
        raise ContractError(f"{contracts_dir}: contracts folder does not exist")
    good: dict[str, Contract] = {}
    problems: dict[str, str] = {}
    for path in sorted(contracts_dir.glob("*.y*ml")):
        try:
            contract = load_contract(path)
        except ContractError as exc:
            problems[path.stem] = str(exc).splitlines()[0]
        else:
            good[contract.source] = contract
    good, held = read_entities(contracts_dir, good)
    metadata_fields(good)  # metadata types must agree across sources
    return ContractSet(good, {**problems, **held})


def contract_version(contract: Contract) -> str:
    """Hash of the contract file (and of its entity's file): a changed contract re-runs silver for
    every batch, a changed entity rebuilds gold."""
    files = [contract.path]
    if contract.member is not None:  # found by name, so a contract read alone has the same version
        folder = contract.path.parent / "entities"
        files += [
            f
            for f in (folder / f"{contract.member.entity}.yaml", folder / f"{contract.member.entity}.yml")
            if f.is_file()
        ]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def load_contracts(contracts_dir: Path) -> dict[str, Contract]:
    """Every contract, or :class:`ContractError` naming each broken one."""
    found = read_contracts(contracts_dir)
    if found.problems:
        raise ContractError("; ".join(found.problems.values()))
    return found.contracts
