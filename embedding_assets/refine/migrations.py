"""Contract versions: detect the version a record was written under, migrate it up to the current one.

A record names its version in the contract's ``version_field``, or its shape gives it away: the
known version whose field names overlap most with the record's keys (ties go to the newer one).
Migrations run in a chain, version by version, on the parsed record before it is typed, so
bronze keeps the raw bytes and silver always holds the current contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import polars as pl

from embedding_assets.contracts.model import Contract, Migration, MigrationStep

UNKNOWN_VERSION = -1


@dataclass(frozen=True)
class Migrated:
    record: dict[str, Any]
    version: int  # detected; UNKNOWN_VERSION when the version field holds something unreadable
    steps: int = 0  # migration steps applied
    reasons: list[str] = field(default_factory=list)


def detect_version(
    contract: Contract, record: Mapping[str, Any], memo: dict[frozenset[str], int] | None = None
) -> int:
    """The version ``record`` was written under. ``memo`` caches shape-based answers by key set."""
    if contract.version_field and record.get(contract.version_field) not in (None, ""):
        raw = str(record[contract.version_field]).strip().lower().removeprefix("v")
        try:
            return int(float(raw))
        except ValueError:
            return UNKNOWN_VERSION
    shapes = contract.shapes()
    if len(shapes) == 1:
        return contract.version
    keys = frozenset(k for k, v in record.items() if v is not None) - {contract.version_field}
    if memo is not None and keys in memo:
        return memo[keys]

    def score(version: int) -> tuple[float, int]:
        names = shapes[version]
        union = len(keys | names) or 1
        return len(keys & names) / union, version

    version = max(shapes, key=score)
    if memo is not None:
        memo[keys] = version
    return version


def migration_path(contract: Contract, start: int) -> list[Migration] | None:
    """Migrations from ``start`` up to the current version (greedy: the biggest step first)."""
    path: list[Migration] = []
    version = start
    while version != contract.version:
        options = [m for m in contract.migrations if m.from_version == version]
        if not options:
            return None
        step = max(options, key=lambda m: m.to_version)
        path.append(step)
        version = step.to_version
    return path


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _cast(value: Any, to: str) -> Any:
    """Best effort: a value that will not cast is left as it is, and typing quarantines it with a reason."""
    if value is None:
        return None
    try:
        if to == "int":
            number = float(value)
            return int(number) if number.is_integer() else value
        if to == "float":
            return float(value)
        if to == "bool":
            low = str(value).strip().lower()
            return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
                low, value
            )
    except (TypeError, ValueError):
        return value
    return str(value)


def apply_step(record: dict[str, Any], step: MigrationStep) -> None:
    a = step.args
    if step.kind == "rename":
        if a["from"] in record:
            record[a["to"]] = record.pop(a["from"])
    elif step.kind == "add":
        if record.get(a["field"]) is None:
            record[a["field"]] = a.get("default")
    elif step.kind == "cast":
        record[a["field"]] = _cast(record.get(a["field"]), a["to"])
    elif step.kind == "split":
        into: list[str] = list(a["into"])
        value = _text(record.get(a["field"]))
        parts = value.split(a.get("separator", "\n\n"), len(into) - 1) if value is not None else []
        if a["field"] not in into:
            record.pop(a["field"], None)
        for i, name in enumerate(into):
            record[name] = parts[i].strip() if i < len(parts) else None
    elif step.kind == "merge":
        sources: list[str] = list(a["fields"])
        texts = [t.strip() for t in (_text(record.get(n)) for n in sources) if t and t.strip()]
        joined = a.get("separator", "\n\n").join(texts)
        for name in sources:
            if name != a["into"]:
                record.pop(name, None)
        record[a["into"]] = joined or None
    elif step.kind == "drop":
        record.pop(a["field"], None)
    else:  # the JSON Schema admits no other kind
        raise ValueError(f"unknown migration step {step.kind!r}")


def migrate(
    contract: Contract, record: Mapping[str, Any], memo: dict[frozenset[str], int] | None = None
) -> Migrated:
    """The record under the current contract, or the reason it cannot get there."""
    version = detect_version(contract, record, memo)
    out = dict(record)
    if contract.version_field:
        out.pop(contract.version_field, None)
    if version == contract.version:
        return Migrated(out, version)
    if version == UNKNOWN_VERSION:
        value = record.get(contract.version_field or "")
        return Migrated(
            out,
            version,
            reasons=[
                f"unknown_version: field '{contract.version_field}' holds {value!r}, not a version number"
            ],
        )
    path = migration_path(contract, version)
    if path is None:
        return Migrated(
            out,
            version,
            reasons=[
                f"no_migration: record is contract v{version} and no migration leads from it to "
                f"v{contract.version}"
            ],
        )
    steps = 0
    for migration in path:
        for step in migration.steps:
            apply_step(out, step)
            steps += 1
    return Migrated(out, version, steps)


@dataclass(frozen=True)
class LiveFields:
    """What a batch's live records (parsed, not deleted) say about the contract's required fields,
    summed piece by piece: how many there are, which required fields some of them fill, and the
    keys every one of them has (computed only when a message needs them)."""

    rows: int
    filled: frozenset[str]
    common_keys: Callable[[], frozenset[str]]

    @classmethod
    def of(
        cls, contract: Contract, live: pl.DataFrame, keysets: Callable[[], Iterable[frozenset[str]]]
    ) -> LiveFields:
        """``live`` holds the live records as text, a column per contract field; ``keysets`` gives
        the sets of keys those records have."""
        required = [n for n, spec in contract.fields.items() if spec.required and spec.default is None]
        filled = [n for n in required if not (live[n].is_null() | (live[n] == "")).all()]
        common = cache(lambda: frozenset.intersection(*keysets()) if live.height else frozenset())
        return cls(live.height, frozenset(filled), common)

    def __add__(self, other: LiveFields) -> LiveFields:
        if not (self.rows and other.rows):
            return self if self.rows else other
        return LiveFields(
            self.rows + other.rows,
            self.filled | other.filled,
            cache(lambda: self.common_keys() & other.common_keys()),
        )


def breaking_fields(contract: Contract, live: LiveFields) -> list[str]:
    """A breaking change, named by field: required fields that no live record of the batch has
    (after migration), with the fields every record has that the contract does not know."""
    if not live.rows:
        return []
    problems = []
    for name, spec in contract.fields.items():
        if not (spec.required and spec.default is None) or name in live.filled:
            continue
        unknown = sorted(live.common_keys() - set(contract.referenced_fields))
        hint = f"; the rows have unknown fields {unknown}" if unknown else ""
        problems.append(
            f"field '{name}' is required by contract v{contract.version} but missing from all "
            f"{live.rows} live rows{hint}: add a migration (rename/add) or fix the source"
        )
    return problems
