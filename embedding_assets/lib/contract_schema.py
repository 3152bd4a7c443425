"""The JSON Schema of a contract file, shipped in the package, and errors that name the field.

Editors can validate contracts with it (``# yaml-language-server: $schema=...``); the pipeline
validates every contract with it when the definitions load.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

CONTRACT_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "contract.schema.json"
STEP_KINDS = "rename, add, cast, split, merge, drop"


@cache
def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(CONTRACT_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


def _path(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            parts.append(str(extra[0]))
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    return ".".join(p for p in parts if p) or "<root>"


def _message(error: ValidationError) -> str:
    if error.validator == "additionalProperties":
        return "unexpected key"
    if error.validator == "required":
        return "is required"
    if error.validator == "oneOf":
        parts = [str(p) for p in error.absolute_path]
        if len(parts) == 4 and parts[0] == "migrations" and parts[2] == "steps":
            return f"a migration step is exactly one of: {STEP_KINDS}"
        inner = best_match(error.context or [])
        return inner.message if inner is not None else error.message
    return error.message


def _leaves(error: ValidationError) -> list[ValidationError]:
    """For a 'one of' failure, the errors of the branch the value was meant for: the branch with no
    top-level type mismatch and the fewest errors (a mapping given for a field spec is judged as a
    spec; ``{rename: {from: a}}`` as a rename missing its ``to``)."""
    if error.validator != "oneOf" or not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for e in error.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)

    def score(errors: list[ValidationError]) -> tuple[int, int, int]:
        shallow = [e for e in errors if not e.relative_path]
        mismatch = any(e.validator in ("type", "enum") for e in shallow)
        return (int(mismatch), len(shallow), len(errors))

    best = min(branches.values(), key=score)
    if score(best)[0] or (all(not e.relative_path for e in best) and len(branches) > 2):
        return [error]  # no branch fits: say what the choices are
    return [leaf for e in best for leaf in _leaves(e)]


def schema_errors(raw: object) -> list[tuple[str, str]]:
    """Every violation as (dotted field path, short message), sorted by path."""
    validator = Draft202012Validator(load_schema())
    found = {(_path(leaf), _message(leaf)) for e in validator.iter_errors(raw) for leaf in _leaves(e)}
    return sorted(found)


def validate_contract_document(raw: object, path: Path) -> None:
    """Raise :class:`ContractError` naming the file and the first field at fault (and how many more)."""
    from embedding_assets.lib.contracts import ContractError

    if not isinstance(raw, dict):
        raise ContractError(f"{path}: the contract must be a YAML mapping")
    errors = schema_errors(raw)
    if not errors:
        return
    (where, message), rest = errors[0], errors[1:]
    more = ""
    if rest:
        listed = "; ".join(f"field '{w}': {m}" for w, m in rest[:3])
        more = f" (and {len(rest)} more: {listed})"
    raise ContractError(f"{path}: field '{where}': {message}{more}")
