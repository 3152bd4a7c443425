"""The shipped JSON Schema of contract files: the sample contracts pass, broken ones name the field."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedding_assets.contracts.load import parse_contract
from embedding_assets.contracts.model import ContractError
from embedding_assets.contracts.schema import (
    CONTRACT_SCHEMA_PATH,
    load_schema,
    schema_errors,
    validate_contract_document,
)
from embedding_assets_tests.conftest import SAMPLE

FULL: dict[str, Any] = {
    "source": "tickets",
    "format": "jsonl",
    "version": 3,
    "version_field": "schema",
    "owner": "quality@lumen-home.example",
    "description": "Every key a contract may have.",
    "id": "id",
    "title": "title",
    "text": ["title", "body"],
    "updated_at": "updated",
    "deleted": {"field": "status", "values": ["deleted", True]},
    "metadata": ["priority", "language"],
    "snapshot": {"enabled": False, "max_delete_rate": 0.3},
    "fields": {
        "id": {"type": "str", "required": True, "max_length": 16, "description": "ticket id"},
        "title": "str",
        "body": {"type": "str", "required": True},
        "priority": {"type": "str", "allowed": ["low", "high"], "default": "low"},
        "language": {"type": "str", "default": "en"},
        "status": {"type": "str"},
        "updated": {"type": "datetime", "required": True},
    },
    "versions": {"1": {"fields": ["id", "subject", "summary", "details"], "description": "the first export"}},
    "migrations": [
        {
            "from": 1,
            "to": 2,
            "steps": [
                {"rename": {"from": "subject", "to": "title"}},
                {"merge": {"fields": ["summary", "details"], "into": "body", "separator": "\n\n"}},
                {"split": {"field": "legacy", "into": ["a", "b"]}},
                {"drop": {"field": "a"}},
            ],
        },
        {
            "from": 2,
            "to": 3,
            "steps": [{"add": {"field": "language", "default": "en"}}, {"cast": {"field": "b", "to": "int"}}],
        },
    ],
    "quality": {
        "max_quarantine_rate": 0.1,
        "max_missing_rate": {"priority": 0.5},
        "length_outliers": {"max_z": 5, "max_rate": 0.05, "block": True},
        "near_duplicates": {"threshold": 0.85, "action": "drop"},
        "duplicates": {"action": "flag"},
        "garbage": {"max_replacement_share": 0.02, "max_entity_share": 0.1},
        "drift": {
            "reference_batches": 3,
            "max_psi": 0.2,
            "max_ks": 0.25,
            "max_centroid_distance": 0.1,
            "block": True,
        },
    },
}


# The brief's example, as YAML: version keys are read as ints, the step list has all six kinds.
FULL_YAML = """
source: catalog
format: csv
version: 2
version_field: schema_version
owner: team@example.com
description: free text
id: sku
title: name
text: [name, description]
updated_at: updated
deleted: {field: status, values: [retired, false, 0]}
metadata: [category, price_eur]
snapshot: true
fields:
  sku: {type: str, required: true, max_length: 32, allowed: [a, b, 3, true], default: "x", description: "..."}
  name: str
  description: {type: str, default: null}
  summary: {}
  details: {type: str}
  category: {type: str}
  price_eur: {type: float, default: 0.0}
  language: {type: str, default: en}
  updated: {type: datetime, required: true}
  status: {type: str}
  schema_version: {type: int}
versions:
  1: {fields: [sku, name, desc, updated], description: "..."}
migrations:
  - from: 1
    to: 2
    description: the PIM's second export
    steps:
      - rename: {from: desc, to: description}
      - add: {field: language, default: en}
      - cast: {field: price_eur, to: float}
      - split: {field: description, into: [summary, details], separator: "\\n\\n"}
      - merge: {fields: [summary, details], into: description}
      - drop: {field: legacy_flag}
quality:
  max_quarantine_rate: 0.05
  max_missing_rate: 0.2
  length_outliers: {max_z: 6.0, max_rate: 0.02, block: false}
  near_duplicates: {threshold: 0.9, action: drop}
  duplicates: {action: drop}
  garbage: {max_replacement_share: 0.01, max_entity_share: 0.05}
  drift: {reference_batches: 4, max_psi: 0.25, max_ks: 0.3, max_centroid_distance: 0.15, block: false}
"""


def test_the_schema_ships_in_the_package() -> None:
    assert CONTRACT_SCHEMA_PATH.is_file() and CONTRACT_SCHEMA_PATH.parent.name == "contracts"
    shipped = files("embedding_assets.contracts") / "contract.schema.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == load_schema()


def _objects(node: object, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every sub-schema of the schema, with where it is."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((where, node))
        for key, sub in node.items():
            found += _objects(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            found += _objects(sub, f"{where}/{i}")
    return found


def test_the_schema_describes_every_property_and_closes_every_object() -> None:
    schema = load_schema()
    assert schema["$id"] == "https://embedding-assets.example/contract.schema.json" and schema["title"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    sub_schemas = _objects(schema)
    undescribed = [
        f"{where}/properties/{name}"
        for where, sub in sub_schemas
        if isinstance(sub.get("properties"), dict)
        for name, prop in sub["properties"].items()
        if "description" not in prop
    ]
    assert undescribed == []
    open_objects = [
        where
        for where, sub in sub_schemas
        if "properties" in sub and sub.get("additionalProperties") is not False
    ]
    assert open_objects == []


@pytest.mark.parametrize("path", sorted((SAMPLE / "contracts").glob("*.yaml")), ids=lambda p: p.stem)
def test_sample_contracts_validate(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


def test_the_example_with_every_key_validates_as_yaml() -> None:
    raw = yaml.safe_load(FULL_YAML)
    assert 1 in raw["versions"]  # YAML reads the version key as an int
    assert schema_errors(raw) == []
    assert [next(iter(step)) for step in raw["migrations"][0]["steps"]] == [
        "rename",
        "add",
        "cast",
        "split",
        "merge",
        "drop",
    ]


def test_every_key_validates_and_parses(tmp_path: Path) -> None:
    assert schema_errors(FULL) == []
    contract = parse_contract(FULL, tmp_path / "tickets.yaml")
    assert contract.version == 3 and len(contract.migrations) == 2
    assert [s.kind for m in contract.migrations for s in m.steps] == [
        "rename",
        "merge",
        "split",
        "drop",
        "add",
        "cast",
    ]
    assert contract.quality.near_duplicate_action == "drop" and contract.quality.drift.block


def _broken(path: str, value: object) -> dict[str, Any]:
    raw = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    node: Any = raw
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


@pytest.mark.parametrize(
    ("where", "value", "field"),
    [
        ("fields.priority.type", "decimal", "fields.priority.type"),
        ("surprise", 1, "surprise"),
        ("fields.id.maxlen", 3, "fields.id.maxlen"),
        ("source", KeyError, "source"),
        ("owner", KeyError, "owner"),
        ("migrations.0.steps.1", {"explode": {"field": "x"}}, "migrations.0.steps.1"),
        ("migrations.0.steps.0", {"rename": {"from": "subject"}}, "migrations.0.steps.0.rename.to"),
        ("text", [], "text"),
        ("quality.max_quarantine_rate", 1.5, "quality.max_quarantine_rate"),
        ("quality.near_duplicates.action", "keep", "quality.near_duplicates.action"),
        ("versions", {"one": {"fields": ["a"]}}, "versions.one"),
        ("versions", {0: {"fields": ["a"]}}, "versions.0"),
        ("versions.1", {"description": "no fields"}, "versions.1.fields"),
        ("deleted", {"values": ["x"]}, "deleted.field"),
        ("deleted.values", [], "deleted.values"),
        ("text", ["title", ""], "text.1"),
        ("text", 5, "text"),
        ("format", "xml", "format"),
        ("source", "-bad name", "source"),
        ("version", 0, "version"),
        ("fields.title", "decimal", "fields.title"),
        ("fields.id.max_length", 0, "fields.id.max_length"),
        ("snapshot", {"enabled": True, "max_delete_rate": 2}, "snapshot.max_delete_rate"),
        ("migrations.1.to", 1, "migrations.1.to"),
        ("migrations.1.steps", [], "migrations.1.steps"),
        (
            "migrations.0.steps.2",
            {"split": {"field": "legacy", "into": ["a"]}},
            "migrations.0.steps.2.split.into",
        ),
        ("migrations.1.steps.1", {"cast": {"field": "b", "to": "decimal"}}, "migrations.1.steps.1.cast.to"),
        ("quality.max_missing_rate", {"priority": -0.1}, "quality.max_missing_rate.priority"),
        ("quality.length_outliers.max_z", 0, "quality.length_outliers.max_z"),
        ("quality.near_duplicates.threshold", 0, "quality.near_duplicates.threshold"),
        ("quality.duplicates.action", "keep", "quality.duplicates.action"),
        ("quality.garbage.max_entity_share", 1.2, "quality.garbage.max_entity_share"),
        ("quality.drift.reference_batches", 0, "quality.drift.reference_batches"),
        ("quality.drift.max_psi", -1, "quality.drift.max_psi"),
        ("quality.drift.shift", 1, "quality.drift.shift"),
    ],
)
def test_a_broken_contract_names_the_field(tmp_path: Path, where: str, value: object, field: str) -> None:
    raw = _broken(where, value)
    assert field in [path for path, _ in schema_errors(raw)]
    path = tmp_path / "tickets.yaml"
    with pytest.raises(ContractError) as err:
        validate_contract_document(raw, path)
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        (
            "fields.priority.type",
            "floatt",
            ("fields.priority.type", "'floatt' is not one of ['str', 'int', 'float', 'bool', 'datetime']"),
        ),
        ("fields.id.maxlen", 3, ("fields.id.maxlen", "unexpected key")),
        ("source", KeyError, ("source", "is required")),
        (
            "migrations.0.steps.1",
            {"explode": {"field": "x"}},
            (
                "migrations.0.steps.1",
                "a migration step is exactly one of: rename, add, cast, split, merge, drop",
            ),
        ),
        (
            "migrations.0.steps.1",
            {"drop": {"field": "x"}, "add": {"field": "y"}},
            (
                "migrations.0.steps.1",
                "a migration step is exactly one of: rename, add, cast, split, merge, drop",
            ),
        ),
        ("text", [], ("text", "[] should be non-empty")),
        ("text", 5, ("text", "5 is not of type 'string' or of type 'array'")),
    ],
)
def test_messages_are_short_and_one_per_field(where: str, value: object, expected: tuple[str, str]) -> None:
    assert schema_errors(_broken(where, value)) == [expected]


def test_every_unexpected_key_is_named() -> None:
    raw = _broken("fields.id", {"type": "str", "foo": 1, "bar": 2})
    assert schema_errors(raw) == [("fields.id.bar", "unexpected key"), ("fields.id.foo", "unexpected key")]


def test_errors_are_in_document_order() -> None:
    raw = copy.deepcopy(FULL)
    raw["migrations"][0]["steps"] = [{"drop": {"field": f"f{i}"}} for i in range(11)]
    raw["migrations"][0]["steps"][2] = {"drop": {}}
    raw["migrations"][0]["steps"][10] = {"drop": {}}
    assert [where for where, _ in schema_errors(raw)] == [
        "migrations.0.steps.2.drop.field",
        "migrations.0.steps.10.drop.field",
    ]


def test_the_error_names_the_first_field_then_lists_the_rest(tmp_path: Path) -> None:
    raw = _broken("fields.price", {"type": "floatt"})
    del raw["owner"]
    raw["surprise"] = 1
    path = tmp_path / "tickets.yaml"
    with pytest.raises(ContractError) as err:
        validate_contract_document(raw, path)
    assert str(err.value) == (
        f"{path}: field 'fields.price.type': "
        "'floatt' is not one of ['str', 'int', 'float', 'bool', 'datetime'] "
        "(and 2 more: field 'owner': is required; field 'surprise': unexpected key)"
    )


def test_a_document_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tickets.yaml"
    with pytest.raises(ContractError, match="tickets.yaml: the contract must be a YAML mapping, not list"):
        validate_contract_document(["source: tickets"], path)
    validate_contract_document(FULL, path)  # a good one passes
