"""The column-wise JSON decoder against the row parser: the same fields, versions and reasons for
every record, whichever path a record takes, on hostile lines and on random ones."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embedding_assets.contracts.load import load_contract, load_contracts
from embedding_assets.contracts.model import Contract
from embedding_assets.ingest.landing import RAW_SCHEMA, read_raw_batch
from embedding_assets.refine import decode
from embedding_assets.refine import silver as silver_lib
from embedding_assets.refine.decode import column_decodable, decode_columns
from embedding_assets.refine.parse import datetime_expr, parse_datetime
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests.conftest import SAMPLE

CONTRACT = """\
source: kettles
format: jsonl
version: 1
owner: quality@lumen-home.example
id: id
title: title
text: [title, body]
updated_at: updated
deleted: {field: status, values: [gone]}
metadata: [flag, count, channel]
fields:
  id: {type: str, required: true, max_length: 40}
  title: {type: str, required: true}
  body: {type: str, required: true}
  flag: {type: bool}
  count: {type: int}
  channel: {type: str, default: email}
  status: {type: str}
  updated: {type: datetime, required: true}
"""

GOOD = {"id": "K-1", "title": "Kettle", "body": "It stops early.", "updated": "2026-11-01T10:00:00Z"}

HOSTILE: list[bytes] = [
    json.dumps(GOOD).encode(),
    json.dumps({**GOOD, "flag": True, "status": None, "extra": {"nested": [1, 2.5, None]}}).encode(),
    json.dumps({**GOOD, "count": 3}).encode(),  # a number: 3
    json.dumps({**GOOD, "count": 3.0}).encode(),  # 3.0, which polars would write as 3
    json.dumps({**GOOD, "count": 1e-7}).encode(),
    json.dumps({**GOOD, "count": -0.0}).encode(),
    b'{"id": "K-2", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "count": NaN}',
    b'{"id": "K-3", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "count": Infinity}',
    b'{"id": "K-4", "title": "first", "title": "second", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-5", "title": "T\\ud800", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-6", "title": "T \\ud83d\\ude00 \\u00e9", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"\\u0069d": "K-7", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-8", "title": "T", "body": {"nested": "object"}, "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-9", "title": "T", "body": ["a", "list"], "updated": "2026-11-01T10:00:00Z"}',
    b'\xef\xbb\xbf{"id": "K-10", "title": "BOM", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-11", "title": "NUL\x00", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-12", "title": "bad \xff bytes", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'["K-13", "a list"]',
    b'"K-14"',
    b"null",
    b"42",
    b'{"id": "K-15", "title": "truncated',
    b'{"id": "K-16", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z"} trailing',
    b'{"id": "K-17", "title": "tab\tinside", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-18", "title": "bad \\q escape", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-19", "title": "T",}',
    b"{'id': 'K-20'}",
    b'\t {"id": "K-21", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z"}\r ',
    b'{"ID": "K-22", "Title": "case", "body": "b", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-23", "title": "escapes \\" \\\\ \\/ \\b \\f \\n \\r \\t", "body": "b", "updated": "x"}',
    b'{"id": "K-24", "title": "title", "body": "body", "updated": "2026-11-01T10:00:00Z"}',
    b'{"id": "K-25", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "flag": false}',
    b'{"id": "K-26", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "channel": null}',
    b'{"id": "K-27", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "status": "gone"}',
    b'{"id": "K-28", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z", "flag": tru}',
    b"{}",
    b'{"id": "K-29", "title": "\xc3\xa9t\xc3\xa9 \xe2\x80\xa8 \xf0\x9f\x98\x80", "body": "b", "updated": "y"}',
    b'{"id": "K-30", "title": "T", "body": "b", "updated": "2026-11-01T10:00:00Z"}\xc2\xa0',
    b'{"id": "K-31", "meta": {"id": "inner"}, "title": "T", "body": "b", "updated": "z"}',
]


@pytest.fixture(autouse=True)
def row_by_row_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failing pieces are halved down to single rows, so every row polars can decode is decoded by
    it and compared (the pipeline stops halving at a few dozen rows)."""
    monkeypatch.setattr(decode, "_SMALLEST_PIECE", 1)
    monkeypatch.setattr(decode, "_FAILURE_BUDGET", 10_000)


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Contract:
    path = tmp_path_factory.mktemp("contracts") / "kettles.yaml"
    path.write_text(CONTRACT)
    return load_contract(path)


def _raw(lines: list[bytes]) -> pl.DataFrame:
    rows = [("k.jsonl", i + 1, line, None) for i, line in enumerate(lines)]
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


def _both_ways(contract: Contract, lines: list[bytes]) -> tuple[silver_lib._Parsed, silver_lib._Parsed]:
    bronze = _raw(lines)
    return silver_lib._parse_batch(contract, bronze), silver_lib._parse_rows(contract, bronze)


def test_hostile_lines_read_the_same_column_wise_as_row_by_row(contract: Contract) -> None:
    assert column_decodable(contract)
    mixed, loop = _both_ways(contract, HOSTILE)
    assert mixed.frame.equals(loop.frame, null_equal=True)
    decoded = decode_columns(contract, _raw(HOSTILE)["raw"])
    # The plain rows did take the column-wise path (so this test compares two paths, not one).
    assert set(decoded.rows.tolist()) == {0, 1, 27, 28, 29, 31, 32, 33, 35, 36}


def test_a_few_bad_lines_among_many_leave_the_rest_column_wise(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode, "_SMALLEST_PIECE", 64)
    monkeypatch.setattr(decode, "_FAILURE_BUDGET", 2)
    lines = [json.dumps({**GOOD, "id": f"K-{i}", "body": f"Body {i}."}).encode() for i in range(2000)]
    for at in (5, 700, 1999):
        lines[at] = b'{"id": "broken", "title": '
    decoded = decode_columns(contract, _raw(lines)["raw"])
    assert decoded.rows.size >= 2000 - 3 * 64 and not {5, 700, 1999} & set(decoded.rows.tolist())
    mixed, loop = _both_ways(contract, lines)
    assert mixed.frame.equals(loop.frame, null_equal=True)


def _random_value(rng: random.Random) -> object:
    alphabet = 'ab "\\/\n\t\u00e9\u2028\U0001f600{}[]:,0123456789-.eE'
    kind = rng.randrange(9)
    if kind < 4:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    return [None, True, False, rng.randrange(-(10**6), 10**6), rng.uniform(-1e9, 1e9)][kind - 4]


def _random_line(rng: random.Random) -> bytes:
    names = ["id", "title", "body", "flag", "count", "channel", "status", "updated", "other"]
    record = {rng.choice(names): _random_value(rng) for _ in range(rng.randrange(9))}
    text = json.dumps(record, ensure_ascii=rng.random() < 0.3)
    if rng.random() < 0.15:  # a damaged line: cut, a byte flipped, a key repeated
        cut = rng.randrange(len(text) + 1)
        text = rng.choice(
            [text[:cut], text[:cut] + "\x00" + text[cut:], text.replace("{", '{"id": "x", ', 1)]
        )
    return text.encode("utf-8", errors="surrogatepass")


def test_random_lines_read_the_same_column_wise_as_row_by_row(contract: Contract) -> None:
    rng = random.Random(20261206)
    lines = [_random_line(rng) for _ in range(3000)]
    mixed, loop = _both_ways(contract, lines)
    assert mixed.frame.equals(loop.frame, null_equal=True)
    assert decode_columns(contract, _raw(lines)["raw"]).rows.size > 300


def test_silver_is_the_same_whichever_path_a_row_took(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    lines = HOSTILE + [_random_line(rng) for _ in range(500)]
    lines += [
        json.dumps({k: v for k, v in GOOD.items() if k != "body"} | {"id": f"N-{i}"}).encode()
        for i in range(3)
    ]
    fast = bronze_to_silver(contract, _raw(lines), "b1")
    monkeypatch.setattr(silver_lib, "decode_columns", lambda c, raw: decode_columns(c, raw[:0]))
    slow = bronze_to_silver(contract, _raw(lines), "b1")
    assert fast.silver.equals(slow.silver, null_equal=True)
    assert fast.rejected.equals(slow.rejected, null_equal=True)
    assert (fast.versions, fast.migrated, fast.breaking) == (slow.versions, slow.migrated, slow.breaking)


def test_a_required_field_missing_everywhere_names_the_unknown_fields_of_decoded_rows(
    contract: Contract,
) -> None:
    """The breaking-change message reads the keys of column-wise rows only when it needs them."""
    lines = [
        json.dumps({"id": f"K-{i}", "heading": "T", "body": "b", "updated": "2026-11-01T10:00:00Z"}).encode()
        for i in range(300)
    ]
    result = bronze_to_silver(contract, _raw(lines), "b1")
    assert decode_columns(contract, _raw(lines)["raw"]).rows.size == 300
    assert result.breaking == [
        "field 'title' is required by contract v1 but missing from all 300 live rows; the rows have "
        "unknown fields ['heading']: add a migration (rename/add) or fix the source"
    ]


def test_the_sample_help_desk_batches_decode_column_wise_whole() -> None:
    helpdesk = load_contracts(SAMPLE / "contracts")["helpdesk"]
    for batch in ("2026-11-01", "2026-11-08"):
        raw = read_raw_batch(helpdesk, SAMPLE / "landing" / "helpdesk" / batch).records["raw"]
        decoded = decode_columns(helpdesk, raw)
        assert decoded.rows.size > 0.9 * raw.len()
        assert np.all(np.diff(decoded.rows) > 0)


def test_contracts_with_versions_keep_the_row_parser(tmp_path: Path) -> None:
    path = tmp_path / "kettles.yaml"
    path.write_text(CONTRACT.replace("version: 1\n", "version: 1\nversion_field: schema\n"))
    assert not column_decodable(load_contract(path))


DATETIMES = [
    "2026-11-01T10:00:00Z", " 2026-11-01T10:00:00Z ", "2024-02-29T12:00:00Z", "9999-12-31T23:59:59Z",
    "0999-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2023-02-29T12:00:00Z", "2026-02-30T10:00:00Z",
    "2026-13-01T10:00:00Z", "2026-11-01T24:00:00Z", "2026-11-01T23:59:60Z", "2026-11-01T10:00:00+02:00",
    "2026-11-01", "2026-11-01T10:00:00.123Z", "2026-11-01t10:00:00z", "2026-11-01T10:00:00", "garbage", "",
    None,
]  # fmt: skip


def test_datetimes_parse_in_polars_exactly_as_in_python() -> None:
    got = pl.DataFrame({"t": DATETIMES}, schema={"t": pl.String}).select(datetime_expr(pl.col("t")))["t"]
    assert got.to_list() == [parse_datetime(v) for v in DATETIMES]
    assert got.null_count() == 10


def test_many_bad_lines_stop_the_halving_and_go_to_the_row_parser(
    contract: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Halving pays for a few bad rows; with many, failed decodes are capped at twice the rows."""
    monkeypatch.setattr(decode, "_SMALLEST_PIECE", 64)
    monkeypatch.setattr(decode, "_FAILURE_BUDGET", 2)
    lines = [json.dumps({**GOOD, "id": f"K-{i}"}).encode() for i in range(4096)]
    lines = [b'{"id": "K", "body": {"nested": "x"}}' if i % 7 == 0 else line for i, line in enumerate(lines)]
    tried: list[int] = []
    real = decode._decode_piece
    monkeypatch.setattr(
        decode, "_decode_piece", lambda raw, names: (tried.append(raw.len()), real(raw, names))[1]
    )
    decoded = decode_columns(contract, _raw(lines)["raw"])
    assert sum(tried) <= 3 * len(lines) and decoded.rows.size < len(lines) * 6 // 7
    mixed, loop = _both_ways(contract, lines)
    assert mixed.frame.equals(loop.frame, null_equal=True)
