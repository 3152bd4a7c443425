"""The JSON Schema of a contract file, shipped in the package, and errors that name the field.

Editors can validate contracts with it (``# yaml-language-server: $schema=...``); the pipeline
validates every contract with it when the definitions load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from embedding_assets.contracts.model import STEP_KINDS, ContractError

CONTRACT_SCHEMA_PATH = Path(__file__).resolve().parent / "contract.schema.json"


@cache
def load_schema() -> dict[str, Any]:
    """The contract schema, checked against the draft 2020-12 meta-schema once."""
    schema: dict[str, Any] = json.loads(CONTRACT_SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema())


def _as_json(raw: object) -> object:
    """Mapping keys as text, as an editor sees them: YAML reads ``versions: {1: ...}`` with int keys,
    which ``propertyNames`` would otherwise not check at all."""
    if isinstance(raw, dict):
        return {str(k): _as_json(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_as_json(v) for v in raw]
    return raw


def _described(error: ValidationError) -> Iterator[tuple[str, str]]:
    """One error as (dotted field path, short message) pairs; several for several unexpected keys."""
    parts = [str(p) for p in error.absolute_path]

    def at(*more: str) -> str:
        return ".".join([*parts, *more]) or "<root>"

    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [str(k) for k in error.instance if k not in allowed]
        for key in extra:
            yield at(key), "unexpected key"
        if extra:
            return
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [str(k) for k in error.validator_value if k not in error.instance]
        named = [k for k in missing if repr(k) in error.message] or missing[:1]
        yield at(*named[:1]), "is required"
        return
    if "propertyNames" in error.absolute_schema_path:
        yield at(str(error.instance)), f"key {error.instance!r} does not match {error.validator_value!r}"
        return
    if error.validator == "oneOf":
        if len(parts) == 4 and parts[0] == "migrations" and parts[2] == "steps":
            yield at(), f"a migration step is exactly one of: {', '.join(STEP_KINDS)}"
            return
        yield at(), _no_branch_fits(error)
        return
    yield at(), error.message


def _no_branch_fits(error: ValidationError) -> str:
    """'5 is not of type 'string' or 'array'' rather than the complaint of one branch only."""
    shallow = [e for e in error.context or [] if not e.relative_path]
    if shallow and all(e.validator in ("type", "enum") for e in shallow):
        wanted = []
        for e in shallow:
            if e.validator == "type":
                wanted.append(f"of type {e.validator_value!r}")
            else:
                wanted.append(f"one of {list(e.validator_value)!r}")
        return f"{error.instance!r} is not " + " or ".join(dict.fromkeys(wanted))
    inner = best_match(error.context or [])
    return inner.message if inner is not None else error.message


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


def _path_order(found: tuple[str, str]) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Document order of paths: ``steps.2`` before ``steps.10``."""
    where, message = found
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in where.split(".")), message


def schema_errors(raw: object) -> list[tuple[str, str]]:
    """Every violation as (dotted field path, short message), sorted by path."""
    errors = _validator().iter_errors(_as_json(raw))
    found = {pair for e in errors for leaf in _leaves(e) for pair in _described(leaf)}
    return sorted(found, key=_path_order)


def validate_contract_document(raw: object, path: Path) -> None:
    """Raise :class:`ContractError` naming the file and the first field at fault, the rest after it."""
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: the contract must be a YAML mapping, not {type(raw).__name__}")
    errors = schema_errors(raw)
    if not errors:
        return
    (where, message), rest = errors[0], errors[1:]
    more = ""
    if rest:
        listed = "; ".join(f"field '{w}': {m}" for w, m in rest)
        more = f" (and {len(rest)} more: {listed})"
    raise ContractError(f"{path}: field '{where}': {message}{more}")
