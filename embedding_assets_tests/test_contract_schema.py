"""The shipped JSON Schema of contract files: the sample contracts pass, broken ones name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedding_assets.lib.contract_schema import (
    CONTRACT_SCHEMA_PATH,
    schema_errors,
    validate_contract_document,
)
from embedding_assets.lib.contracts import ContractError, parse_contract
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


def test_the_schema_ships_in_the_package() -> None:
    assert CONTRACT_SCHEMA_PATH.is_file() and CONTRACT_SCHEMA_PATH.parent.name == "embedding_assets"


@pytest.mark.parametrize("path", sorted((SAMPLE / "contracts").glob("*.yaml")), ids=lambda p: p.stem)
def test_sample_contracts_validate(path: Path) -> None:
    assert schema_errors(yaml.safe_load(path.read_text())) == []


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
        ("versions", {"one": {"fields": ["a"]}}, "versions"),
        ("deleted", {"values": ["x"]}, "deleted.field"),
    ],
)
def test_a_broken_contract_names_the_field(tmp_path: Path, where: str, value: object, field: str) -> None:
    raw = _broken(where, value)
    assert field in [path for path, _ in schema_errors(raw)]
    path = tmp_path / "tickets.yaml"
    with pytest.raises(ContractError) as err:
        validate_contract_document(raw, path)
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)
