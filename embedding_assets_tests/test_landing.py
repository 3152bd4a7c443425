from pathlib import Path

import pytest

from embedding_assets.contracts.load import load_contracts
from embedding_assets.ingest.landing import name_problem, read_raw_batch, scan_landing
from embedding_assets_tests.conftest import SAMPLE


@pytest.mark.parametrize("name", ["..", "a..b", "a/b", "bad\x07name", "tab\tname", "-lead", ""])
def test_unsafe_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["2026-11-01", "initial-load", "batch_7.v2"])
def test_safe_names_pass(name: str) -> None:
    assert name_problem(name) is None


def test_scan_hashes_each_source_batch_and_refuses_bad_folders(root: Path) -> None:
    (root / "landing" / "helpdesk" / "bad..batch").mkdir()
    (root / "landing" / "helpdesk" / "ctl\x01batch").mkdir()
    contracts = load_contracts(root / "contracts")
    scan = scan_landing(root / "landing", contracts)
    assert scan.batch_names == ["2026-11-01", "2026-11-08"]
    assert len(scan.batches) == 6
    assert len(scan.rejected) == 2
    assert all("refused batch folder" in line for line in scan.rejected)
    before = scan.hashes()
    again = scan_landing(root / "landing", contracts).hashes()
    assert before == again  # stable
    (root / "landing" / "catalog" / "2026-11-01" / "products.csv").write_text("sku,name\nA,B\n")
    changed = scan_landing(root / "landing", contracts).hashes()
    assert [k for k in before if before[k] != changed[k]] == [("catalog", "2026-11-01")]


def test_csv_records_keep_exact_bytes_with_quoted_newlines(tmp_path: Path) -> None:
    contracts = load_contracts(SAMPLE / "contracts")
    batch = tmp_path / "b"
    batch.mkdir()
    payload = b'sku,name,description\r\nA,"Two\r\nlines",x\r\nB,plain,"a, b"\r\n'
    (batch / "p.csv").write_bytes(payload)
    raw = read_raw_batch(contracts["catalog"], batch).records
    assert raw["raw"].to_list() == [b'A,"Two\r\nlines",x', b'B,plain,"a, b"']
    assert raw["line"].to_list() == [2, 4]
    assert raw["header"][0] == b"sku,name,description"


def test_jsonl_records_keep_bytes_and_line_numbers(tmp_path: Path) -> None:
    contracts = load_contracts(SAMPLE / "contracts")
    batch = tmp_path / "b"
    batch.mkdir()
    (batch / "t.jsonl").write_bytes(b'{"a": 1}\r\n\n{"b": \xff}\n')
    raw = read_raw_batch(contracts["helpdesk"], batch).records
    assert raw["raw"].to_list() == [b'{"a": 1}', b'{"b": \xff}']
    assert raw["line"].to_list() == [1, 3]


def test_read_hash_matches_scan_hash(root: Path) -> None:
    contracts = load_contracts(root / "contracts")
    scan = scan_landing(root / "landing", contracts).hashes()
    for (source, batch), digest in scan.items():
        landed = read_raw_batch(contracts[source], root / "landing" / source / batch)
        assert landed.content_hash == digest
    missing = read_raw_batch(contracts["helpdesk"], root / "landing" / "helpdesk" / "no-such-batch")
    assert missing.records.height == 0 and missing.files == 0
