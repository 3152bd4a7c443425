"""Silver on small frames: every malformed class quarantined with its reason, exact accounting,
migrations, breaking changes, deduplication and the quality report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from embedding_assets.contracts.load import load_contract, parse_contract
from embedding_assets.contracts.model import ContractError
from embedding_assets.ingest.landing import RAW_SCHEMA
from embedding_assets.refine.migrations import detect_version, migrate
from embedding_assets.refine.report import assess
from embedding_assets.refine.silver import SilverResult, bronze_to_silver
from embedding_assets.refine.tables import FIELD_PREFIX
from embedding_assets_tests import malformed


def _raw(lines: list[bytes]) -> pl.DataFrame:
    return pl.DataFrame(
        [("tickets.jsonl", i + 1, r, None) for i, r in enumerate(lines)], schema=RAW_SCHEMA, orient="row"
    )


@pytest.fixture
def tickets(tmp_path: Path):  # type: ignore[no-untyped-def]
    malformed.write_fixture(tmp_path)
    return load_contract(tmp_path / "contracts" / "tickets.yaml")


def test_every_malformed_class_is_quarantined_with_its_reason(tickets) -> None:  # type: ignore[no-untyped-def]
    assert len(malformed.malformed_classes()) >= 15
    result = bronze_to_silver(tickets, _raw([raw for _, raw in malformed.LINES]), "b1")
    # exact accounting: 25 read = 5 silver + 18 quarantined + 1 duplicate + 1 superseded
    assert result.rows_read == len(malformed.LINES) == 25
    assert result.silver.height == 5
    assert result.quarantine.height == 18
    assert result.duplicates_dropped == 2 and result.superseded == 1
    assert result.accounted
    assert set(result.silver["doc_id"]) == malformed.VALID_IDS
    by_line = {line: rule for line, (rule, _) in enumerate(malformed.LINES, start=1)}
    for row in result.rejected.iter_rows(named=True):
        expected = by_line[row["_line"]]
        rules = [r.split(":")[0] for r in row["reasons"]]
        assert expected in rules, f"line {row['_line']}: expected {expected}, got {row['reasons']}"
        assert row["kind"] == {"duplicate": "duplicate", "superseded": "superseded"}.get(expected, "invalid")
        assert row["raw"]  # the raw payload travels with every reason
    assert set(result.reasons()["rule"]) >= malformed.malformed_classes()
    # the conflicting update's loser names the winner; the winner is the newer body
    loser = result.rejected.filter(pl.col("kind") == "superseded").row(0, named=True)
    assert loser["doc_id"] == "tickets:FS-002" and loser["duplicate_of"] == "tickets.jsonl:2"
    assert (
        result.silver.filter(pl.col("doc_id") == "tickets:FS-002")["text"]
        .item()
        .endswith(malformed.BODIES[2])
    )
    for marker in malformed.GARBAGE_MARKERS:
        assert not result.silver["text"].str.contains(marker, literal=True).any()


def test_a_row_breaking_several_rules_carries_every_reason(tickets) -> None:  # type: ignore[no-untyped-def]
    bad = json.dumps({"id": "X" * 40, "title": "", "body": "", "priority": "zzz", "updated": "soon"})
    result = bronze_to_silver(tickets, _raw([bad.encode()]), "b1")
    rules = sorted(r.split(":")[0] for r in result.quarantine["reasons"][0])
    assert rules == [
        "bad_timestamp",
        "empty_text",
        "missing_required",
        "missing_required",
        "not_allowed",
        "too_long",
    ]


def test_typed_fields_are_silver_columns(tickets) -> None:  # type: ignore[no-untyped-def]
    result = bronze_to_silver(tickets, _raw([raw for rule, raw in malformed.LINES if rule is None]), "b1")
    assert result.silver.schema[f"{FIELD_PREFIX}score"] == pl.Float64
    assert result.silver.schema[f"{FIELD_PREFIX}escalated"] == pl.Boolean
    assert (
        result.silver.filter(pl.col("doc_id") == "tickets:FS-003")[f"{FIELD_PREFIX}escalated"].item() is True
    )


def _near_contract(tmp_path: Path, action: str):  # type: ignore[no-untyped-def]
    malformed.write_fixture(tmp_path)
    path = tmp_path / "contracts" / "tickets.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["quality"]["near_duplicates"] = {"threshold": 0.8, "action": action}
    path.write_text(yaml.safe_dump(raw))
    return load_contract(path)


@pytest.mark.parametrize("action", ["flag", "drop"])
def test_near_duplicates_are_flagged_or_dropped_as_the_contract_says(tmp_path: Path, action: str) -> None:
    contract = _near_contract(tmp_path, action)
    long = " ".join(malformed.BODIES[:5])
    lines = [
        json.dumps({"id": "A", "title": "Notes", "body": long, "updated": "2026-11-01T00:00:00Z"}),
        json.dumps(
            {
                "id": "B",
                "title": "Notes",
                "body": long.replace("flickers", "blinks"),
                "updated": "2026-11-01T00:00:00Z",
            }
        ),
        json.dumps(
            {"id": "C", "title": "Other", "body": malformed.BODIES[0], "updated": "2026-11-01T00:00:00Z"}
        ),
        json.dumps(
            {"id": "D", "title": "notes", "body": "  " + long.upper(), "updated": "2026-11-01T00:00:00Z"}
        ),
    ]
    result = bronze_to_silver(contract, _raw([line.encode() for line in lines]), "b1")
    assert result.accounted
    # D is an exact duplicate of A once case and whitespace are normalised: always dropped
    dup = result.rejected.filter(pl.col("kind") == "duplicate")
    assert dup["doc_id"].to_list() == ["tickets:D"] and dup["duplicate_of"].to_list() == ["tickets:A"]
    if action == "flag":
        assert result.silver.height == 3
        flagged = result.silver.filter(pl.col("near_duplicate_of").is_not_null())
        assert flagged.select("doc_id", "near_duplicate_of").rows() == [("tickets:B", "tickets:A")]
    else:
        assert result.silver["doc_id"].to_list() == ["tickets:A", "tickets:C"]
        near = result.rejected.filter(pl.col("kind") == "near_duplicate")
        assert near["doc_id"].to_list() == ["tickets:B"] and "Jaccard" in near["reason"][0]


V2 = {
    "source": "tickets",
    "format": "jsonl",
    "version": 3,
    "version_field": "schema",
    "owner": "quality@lumen-home.example",
    "id": "id",
    "title": "title",
    "text": ["title", "body"],
    "updated_at": "updated",
    "metadata": ["priority", "language", "score"],
    "fields": {
        "id": {"type": "str", "required": True},
        "title": {"type": "str", "required": True},
        "body": {"type": "str", "required": True},
        "priority": {"type": "str"},
        "language": {"type": "str"},
        "score": {"type": "float"},
        "updated": {"type": "datetime", "required": True},
    },
    "versions": {1: {"fields": ["id", "subject", "summary", "details", "prio", "score", "updated"]}},
    "migrations": [
        {
            "from": 1,
            "to": 2,
            "steps": [
                {"rename": {"from": "subject", "to": "title"}},
                {"merge": {"fields": ["summary", "details"], "into": "body"}},
                {"rename": {"from": "prio", "to": "priority"}},
            ],
        },
        {
            "from": 2,
            "to": 3,
            "steps": [
                {"add": {"field": "language", "default": "en"}},
                {"cast": {"field": "score", "to": "float"}},
            ],
        },
    ],
}


def _v3(tmp_path: Path, **changes: object):  # type: ignore[no-untyped-def]
    raw = {k: v for k, v in {**V2, **changes}.items() if v is not None}
    path = tmp_path / "tickets.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_contract(path)


def test_v1_rows_migrate_in_a_chain_to_the_current_contract(tmp_path: Path) -> None:
    contract = _v3(tmp_path)
    v1 = {
        "schema": 1,
        "id": "T1",
        "subject": "Kettle",
        "summary": "Stops early.",
        "details": "Twice a day.",
        "prio": "high",
        "score": "0.7",
        "updated": "2026-11-01T00:00:00Z",
    }
    v3 = {
        "schema": 3,
        "id": "T2",
        "title": "Lamp",
        "body": "Flickers.",
        "language": "de",
        "score": 0.1,
        "updated": "2026-11-01T00:00:00Z",
    }
    assert detect_version(contract, v1) == 1
    migrated = migrate(contract, v1)
    assert migrated.record == {
        "id": "T1",
        "title": "Kettle",
        "body": "Stops early.\n\nTwice a day.",
        "priority": "high",
        "score": 0.7,
        "language": "en",
        "updated": "2026-11-01T00:00:00Z",
    }
    result = bronze_to_silver(contract, _raw([json.dumps(v1).encode(), json.dumps(v3).encode()]), "b1")
    assert result.quarantine.height == 0 and not result.breaking
    assert result.versions == {1: 1, 3: 1} and result.migrated == 1
    row = result.silver.filter(pl.col("doc_id") == "tickets:T1").row(0, named=True)
    assert row["title"] == "Kettle" and row["f_language"] == "en" and row["f_score"] == 0.7
    assert json.loads(row["metadata"]) == {"language": "en", "priority": "high", "score": 0.7}


def test_version_detected_from_shape_when_rows_do_not_name_it(tmp_path: Path) -> None:
    contract = _v3(tmp_path, version_field=None)
    v1 = {
        "id": "T1",
        "subject": "Kettle",
        "summary": "Stops.",
        "prio": "low",
        "updated": "2026-11-01T00:00:00Z",
    }
    assert detect_version(contract, v1) == 1
    assert detect_version(contract, {"id": "T", "title": "x", "body": "y", "updated": "z"}) == 3


def test_a_breaking_change_without_migration_names_the_field(tmp_path: Path) -> None:
    contract = _v3(tmp_path, version_field=None)
    # The source renamed body to description with no contract change: v3 shape minus a required field.
    rows = [
        json.dumps(
            {"id": f"T{i}", "title": "Lamp", "description": "Flickers.", "updated": "2026-11-01T00:00:00Z"}
        )
        for i in range(4)
    ]
    result = bronze_to_silver(contract, _raw([r.encode() for r in rows]), "b1")
    assert len(result.breaking) == 1
    assert "field 'body'" in result.breaking[0] and "description" in result.breaking[0]
    quality = assess(contract, result, "b1", pl.DataFrame())
    check = quality.check("contract_compatible")
    assert not check.passed and check.blocking and "field 'body'" in check.message
    # a version the contract has no migration from is breaking as well, naming the version field
    unknown = bronze_to_silver(_v3(tmp_path), _raw([json.dumps({"schema": 7, "id": "Z"}).encode()]), "b1")
    assert unknown.breaking and "field 'schema'" in unknown.breaking[0]
    assert unknown.quarantine["reasons"][0][0].startswith("no_migration")


def test_quarantine_rate_check_names_rules_and_counts(tmp_path: Path) -> None:
    malformed.write_fixture(tmp_path, max_quarantine_rate=0.05)
    contract = load_contract(tmp_path / "contracts" / "tickets.yaml")
    result = bronze_to_silver(contract, _raw([raw for _, raw in malformed.LINES]), "b1")
    quality = assess(contract, result, "b1", pl.DataFrame())
    check = quality.check("quarantine_rate")
    assert not check.passed and check.blocking
    assert "18 of 25 rows quarantined" in check.message and "missing_id (2 rows)" in check.message
    assert quality.check("rows_accounted").passed
    md = quality.markdown()
    assert "| quarantined | 18 (72.0%, max 5%) |" in md and "| mojibake | 1 |" in md


def test_drift_figures_against_the_reference_batches(tickets) -> None:  # type: ignore[no-untyped-def]
    def batch(name: str, priority: str, body: Callable[[int], str]) -> SilverResult:
        lines = [
            json.dumps(
                {
                    "id": f"{name}{i}",
                    "title": "T",
                    "body": body(i),
                    "priority": priority,
                    "updated": "2026-11-01T00:00:00Z",
                }
            ).encode()
            for i in range(30)
        ]
        return bronze_to_silver(tickets, _raw(lines), name)

    def short(i: int) -> str:
        return "Short note. " * (1 + i % 3)

    reference = pl.concat(
        [batch("a", "low", short).silver, batch("b", "low", short).silver], how="diagonal_relaxed"
    )
    calm = assess(tickets, batch("c", "low", short), "c", reference)
    assert calm.drift["psi_priority"] < 0.01 and calm.check("drift").passed
    assert calm.reference_batches == ["a", "b"]
    shifted = batch("d", "high", lambda _: "A much longer report about the boiler. " * 14)
    drift = assess(tickets, shifted, "d", reference)
    assert drift.drift["psi_priority"] > 1 and drift.drift["ks_length"] > 0.9
    assert (
        not drift.check("drift").passed and not drift.check("drift").blocking
    )  # warns unless the contract blocks


def test_broken_contracts_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "tickets.yaml"
    for changes, field in [
        ({"metadata": ["priority", "vector"]}, "metadata"),
        ({"version_field": "title"}, "version_field"),
        ({"migrations": [{"from": 2, "to": 5, "steps": [{"drop": {"field": "x"}}]}]}, "migrations.0"),
    ]:
        path.write_text(yaml.safe_dump({**V2, **changes}))
        with pytest.raises(ContractError) as err:
            load_contract(path)
        assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)
    with pytest.raises(ContractError, match="fields.score.type"):
        parse_contract({**V2, "fields": {**V2["fields"], "score": {"type": "decimal"}}}, path)  # type: ignore[dict-item]
