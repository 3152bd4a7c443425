import os
import time
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
    assert len(scan.batches) == 12  # six sources, two batches each
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


def test_a_file_still_being_written_is_not_hashed_until_it_settles(root: Path) -> None:
    from embedding_assets.defs.triggers import look

    contracts = load_contracts(root / "contracts")
    growing = root / "landing" / "helpdesk" / "2026-11-20" / "tickets.jsonl"
    growing.parent.mkdir()
    growing.write_text('{"ticket_id": "T-1", "subject": "half')
    scan = scan_landing(root / "landing", contracts)
    first = look(scan, {}, {}, settle_s=5, now_s=time.time())
    assert "helpdesk/2026-11-20" not in first.hashed
    assert [b.key for b in first.unsettled] == ["helpdesk/2026-11-20"]
    assert "helpdesk/2026-11-01" in first.hashed  # older files are settled at once
    pending = {b.key: b.stat_digest for b in first.unsettled}
    with growing.open("a") as handle:  # the writer goes on: size and mtime move
        handle.write(' written"}\n')
    scan = scan_landing(root / "landing", contracts)
    second = look(scan, {}, pending, settle_s=5, now_s=time.time())
    assert "helpdesk/2026-11-20" not in second.hashed
    pending = {b.key: b.stat_digest for b in second.unsettled}
    third = look(scan_landing(root / "landing", contracts), {}, pending, settle_s=5, now_s=time.time())
    assert "helpdesk/2026-11-20" in third.hashed  # same stats on two looks: the writer is done


def test_a_look_hashes_only_batches_whose_stats_moved(root: Path) -> None:
    from embedding_assets.defs.triggers import look

    contracts = load_contracts(root / "contracts")
    scan = scan_landing(root / "landing", contracts)
    seen = {b.key: b.stat_digest for b in scan.batches}
    assert look(scan, seen, {}, settle_s=0, now_s=time.time()).hashed == {}
    touched = root / "landing" / "catalog" / "2026-11-01" / "products.csv"
    touched.write_bytes(touched.read_bytes())
    os.utime(touched, ns=(time.time_ns() - 10**10, time.time_ns() - 10**10))
    moved = look(scan_landing(root / "landing", contracts), seen, {}, settle_s=5, now_s=time.time())
    assert list(moved.hashed) == ["catalog/2026-11-01"]


def test_sync_waits_one_relook_not_the_whole_settle_time_for_a_fresh_copy(root: Path) -> None:
    """Files copied a moment ago (fresh mtimes) settle on the next look that sees the same sizes
    and times, about a second later, however long ``landing_settle_s`` is; one that grows between
    the looks waits another look."""
    from embedding_assets.config import Settings
    from embedding_assets.contracts.load import read_contracts
    from embedding_assets.defs.sync import RELOOK_S, settled_scan

    settings = Settings.for_root(root, landing_settle_s=30.0)
    growing = root / "landing" / "helpdesk" / "2026-11-20" / "tickets.jsonl"
    growing.parent.mkdir()
    growing.write_text('{"ticket_id": "T-1", "subject": "half')
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # the writer finishes during the first wait
            with growing.open("a") as handle:
                handle.write(' written"}\n')

    lines: list[str] = []
    scan, unsettled = settled_scan(settings, read_contracts(root / "contracts"), lines.append, sleep)
    assert unsettled == []
    assert "helpdesk/2026-11-20" in {b.key for b in scan.batches}
    assert slept == [RELOOK_S, RELOOK_S] and RELOOK_S <= 1.0
    assert lines and "helpdesk/2026-11-20" in lines[0]
