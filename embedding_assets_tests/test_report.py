"""The quality report: valid markdown whatever the names and messages hold, counts in their number,
and numeric figures on every check outcome."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import polars as pl
import pytest

from embedding_assets.contracts.load import load_contract
from embedding_assets.ingest.landing import RAW_SCHEMA
from embedding_assets.refine.report import BatchQuality, CheckOutcome, assess
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests import malformed

CHECKS = [
    "silver_schema",
    "rows_accounted",
    "contract_compatible",
    "quarantine_rate",
    "length_outliers",
    "missing_values",
    "drift",
]


def _raw(lines: list[bytes]) -> pl.DataFrame:
    return pl.DataFrame(
        [("tickets.jsonl", i + 1, r, None) for i, r in enumerate(lines)], schema=RAW_SCHEMA, orient="row"
    )


def _quality(**changes: object) -> BatchQuality:
    fields: dict[str, object] = {
        "source": "tickets",
        "batch": "b1",
        "contract_version": 2,
        "rows_read": 4,
        "silver_rows": 2,
        "quarantined": 1,
        "quarantine_rate": 0.25,
        "max_quarantine_rate": 0.5,
        "by_rule": {"invalid_json": 1},
        "duplicates": 1,
        "near_duplicates_dropped": 0,
        "near_duplicates_flagged": 0,
        "superseded": 0,
        "versions": {"2": 3, "-1": 1},
        "migrated": 0,
        "outliers": 0,
        "outlier_rate": 0.0,
        "missing_rates": {"priority": 0.5},
        "reference_batches": [],
        "checks": [
            CheckOutcome("rows_accounted", True, True, "read 4 = silver 2 + quarantined 1 + duplicates 1")
        ],
    }
    fields.update(changes)
    return BatchQuality(**fields)  # type: ignore[arg-type]


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row, split on unescaped pipes (a backslash escapes one character)."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, cell, escaped = [], "", False
    for ch in line[1:-1]:
        if escaped:
            cell, escaped = cell + ch, False
        elif ch == "\\":
            cell, escaped = cell + ch, True
        elif ch == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += ch
    return [*cells, cell]


def _assert_tables_are_two_columns(md: str) -> None:
    for line in md.splitlines():
        if line.startswith("|") and line != "|---|---|":
            assert len(_cells(line)) == 2, line


@pytest.fixture
def tickets(tmp_path: Path):  # type: ignore[no-untyped-def]
    malformed.write_fixture(tmp_path)
    return load_contract(tmp_path / "contracts" / "tickets.yaml")


def test_markdown_escapes_pipes_and_newlines_in_every_cell() -> None:
    quality = _quality(
        batch="b|1",
        by_rule={"bad|rule": 2},
        missing_rates={"odd|field": 0.5},
        drift={"psi_a|b": 0.1},
        reference_batches=["r|0"],
        checks=[
            CheckOutcome("silver_schema", False, True, "column 'a|b' failed\nsecond line"),
            CheckOutcome("drift", True, False, "ends in a backslash \\|"),
        ],
    )
    md = quality.markdown()
    _assert_tables_are_two_columns(md)
    assert "| bad\\|rule | 2 |" in md
    assert "| odd\\|field | 50.0% |" in md
    assert "| drift vs r\\|0 | value |" in md and "| psi_a\\|b | 0.1000 |" in md
    assert "| silver_schema | BLOCK: column 'a\\|b' failed second line |" in md
    assert "| drift | pass: ends in a backslash \\\\\\| |" in md
    assert "**tickets / b\\|1**" in md


def test_markdown_escapes_the_robust_z_bars_of_the_outlier_check(tickets) -> None:  # type: ignore[no-untyped-def]
    result = bronze_to_silver(tickets, _raw([raw for _, raw in malformed.LINES]), "b1")
    quality = assess(tickets, result, "b1", pl.DataFrame())
    assert "|robust z|" in quality.check("length_outliers").message  # the message itself is unchanged
    md = quality.markdown()
    assert "\\|robust z\\|" in md and " |robust z|" not in md
    _assert_tables_are_two_columns(md)


def test_unreadable_versions_are_named_not_printed_as_v_minus_one() -> None:
    md = _quality(versions={"-1": 3, "1": 2, "2": 1}).markdown()
    assert "| contract versions | v1: 2, v2: 1, unreadable: 3 |" in md
    assert "v-1" not in md
    assert "| contract versions | unreadable: 1 |" in _quality(versions={"-1": 1}).markdown()
    assert "| contract versions | - |" in _quality(versions={}).markdown()


def test_counts_are_in_their_number(tickets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = bronze_to_silver(tickets, _raw([raw for _, raw in malformed.LINES]), "b1")
    reference = result.silver.with_columns(pl.lit("b0").alias("batch"))
    quality = assess(tickets, result, "b1", reference)
    rate = quality.check("quarantine_rate").message
    assert "missing_id (2 rows)" in rate and "invalid_json (1 row)" in rate and "(1 rows)" not in rate
    assert "18 of 25 rows quarantined" in rate
    assert quality.check("drift").message == "within thresholds vs 1 reference batch"
    # one text far longer than the rest: "1 text", not "1 texts"
    rows = [
        json.dumps(
            {
                "id": f"T{i}",
                "title": f"Lamp {i}",
                "body": malformed.BODIES[i % 7],
                "updated": "2026-11-01T00:00:00Z",
            }
        )
        for i in range(20)
    ]
    rows.append(
        json.dumps({"id": "LONG", "title": "Lamp", "body": "Long. " * 90, "updated": "2026-11-01T00:00:00Z"})
    )
    outliers = assess(
        tickets, bronze_to_silver(tickets, _raw([r.encode() for r in rows]), "b1"), "b1", reference
    )
    assert outliers.check("length_outliers").message.startswith("1 text with |robust z| > ")
    # one row of a version no migration leads from
    (tmp_path / "v" / "tickets.yaml").parent.mkdir()
    contract = tmp_path / "v" / "tickets.yaml"
    contract.write_text((tmp_path / "contracts" / "tickets.yaml").read_text() + "version_field: schema\n")
    unknown = bronze_to_silver(
        load_contract(contract), _raw([json.dumps({"schema": 7, "id": "Z"}).encode()]), "b1"
    )
    assert unknown.breaking[0].startswith("1 row is contract version [7] (by field 'schema')")


def test_every_check_carries_numeric_figures(tickets) -> None:  # type: ignore[no-untyped-def]
    result = bronze_to_silver(tickets, _raw([raw for _, raw in malformed.LINES]), "b1")
    reference = result.silver.with_columns(pl.lit("b0").alias("batch"))
    quality = assess(tickets, result, "b1", reference, schema_failures=["one", "two"])
    assert [c.name for c in quality.checks] == CHECKS
    figures = {c.name: c.figures for c in quality.checks}
    assert figures["silver_schema"] == {"schema_failures": 2}
    assert figures["rows_accounted"] == {
        "rows_read": 25,
        "silver_rows": result.silver.height,
        "quarantined": 18,
        "duplicates_dropped": result.duplicates_dropped,
        "duplicate_rate": quality.duplicate_rate,
    }
    assert figures["contract_compatible"] == {"breaking_changes": 0}
    assert figures["quarantine_rate"] == {
        "quarantine_rate": 0.72,
        "max_quarantine_rate": 0.9,
        "quarantined": 18,
    }
    assert figures["length_outliers"] == {"outlier_rate": quality.outlier_rate, "outliers": quality.outliers}
    assert figures["missing_values"] == {"max_missing_rate": max(quality.missing_rates.values())}
    assert figures["drift"] == quality.drift and set(quality.drift) >= {"psi_length", "ks_length"}
    assert "duplicate_rate" not in figures["drift"]
    for values in figures.values():
        assert all(type(v) in (int, float) for v in values.values()), values


def test_figures_when_there_is_nothing_to_measure(tickets) -> None:  # type: ignore[no-untyped-def]
    quality = assess(tickets, bronze_to_silver(tickets, _raw([]), "b1"), "b1", pl.DataFrame())
    assert quality.duplicate_rate == 0.0
    assert quality.check("missing_values").figures == {"max_missing_rate": 0.0}
    assert quality.check("drift").figures == {}
    assert quality.check("rows_accounted").figures["duplicate_rate"] == 0.0


def test_duplicate_rate_is_duplicates_per_row_read() -> None:
    assert _quality(duplicates=1, rows_read=4).duplicate_rate == 0.25
    assert _quality(duplicates=0, rows_read=0).duplicate_rate == 0.0


def test_json_round_trip_keeps_figures_and_reads_reports_stored_before_them(tickets) -> None:  # type: ignore[no-untyped-def]
    result = bronze_to_silver(tickets, _raw([raw for _, raw in malformed.LINES]), "b1")
    quality = assess(tickets, result, "b1", pl.DataFrame())
    again = BatchQuality.from_json(quality.to_json())
    assert again == quality and again.check("quarantine_rate").figures["quarantined"] == 18
    old = asdict(quality)
    for check in old["checks"]:
        del check["figures"]
    legacy = BatchQuality.from_json(json.dumps(old))
    assert all(c.figures == {} for c in legacy.checks)
    assert [c.message for c in legacy.checks] == [c.message for c in quality.checks]
