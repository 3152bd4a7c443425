"""Hostile input: nothing outside the landing zone is read, a broken contract holds back its own
source only, every format tolerates a BOM, a CSV's header and quoting are accounted for, and
search arguments can only narrow what they ask for. Real Delta tables, LanceDB and Dagster runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from embedding_assets.contracts.load import read_contracts
from embedding_assets.contracts.model import ContractError
from embedding_assets.core.strict_yaml import StrictYAMLError, load_strict
from embedding_assets.defs.sync import sync
from embedding_assets.index.filters import FilterError, checked_where
from embedding_assets.ingest.landing import UnsafeLandingError, read_raw_batch, scan_landing
from embedding_assets.refine.parse import parse_record
from embedding_assets_tests.conftest import CORE_SOURCES, SAMPLE, make_pipeline

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

B1, B2 = "2026-11-01", "2026-11-08"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def _quiet(_: str) -> None:
    pass


def _rows_anywhere(root: Path, needle: bytes) -> list[str]:
    """The lake tables and index files whose rows hold ``needle``."""
    found = []
    for log in (root / "lake").rglob("_delta_log"):
        frame = pl.read_delta(str(log.parent))
        hits = [
            frame[c].bin.contains(needle).any()
            if t == pl.Binary
            else frame[c].str.contains(needle.decode(), literal=True).any()
            for c, t in frame.schema.items()
            if t in (pl.Binary, pl.String)
        ]
        if any(hits):
            found.append(str(log.parent.relative_to(root)))
    for path in (root / "lancedb").rglob("*") if (root / "lancedb").is_dir() else []:
        if path.is_file() and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


# --- landing reads only regular files under its root ---------------------------------------


def test_a_symlinked_file_refuses_its_batch_and_nothing_from_it_is_written(
    root: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    secret = tmp_path / "outside" / "secret.jsonl"
    secret.parent.mkdir()
    secret.write_text('{"ticket_id": "T-SECRET", "subject": "root:x:0:0", "body": "TOPSECRETLINE"}\n')
    link = root / "landing" / "helpdesk" / B2 / "zz-link.jsonl"
    link.symlink_to(secret)
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert any("zz-link.jsonl is a symbolic link" in line for line in summary.rejected), summary.rejected
    assert _rows_anywhere(root, b"TOPSECRETLINE") == []
    assert B2 not in pl.read_delta(str(root / "lake" / "bronze" / "helpdesk"))["batch"].to_list()
    link.unlink()  # removed: the batch ingests as delivered, and still nothing of the secret
    again = sync(instance, make_pipeline(root), echo=_quiet)
    assert again.ok, again.render()
    assert B2 in pl.read_delta(str(root / "lake" / "bronze" / "helpdesk"))["batch"].to_list()
    assert _rows_anywhere(root, b"TOPSECRETLINE") == []


def test_a_symlinked_batch_folder_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-batch"
    outside.mkdir()
    (outside / "t.jsonl").write_text('{"ticket_id": "T-OUT", "subject": "s", "body": "OUTSIDE"}\n')
    (root / "landing" / "helpdesk" / "2026-12-01").symlink_to(outside, target_is_directory=True)
    contracts = read_contracts(root / "contracts").contracts
    scan = scan_landing(root / "landing", contracts)
    assert "2026-12-01" not in scan.batch_names
    assert any("helpdesk/2026-12-01" in r and "symbolic link" in r for r in scan.rejected)
    with pytest.raises(UnsafeLandingError, match="symbolic link"):
        read_raw_batch(contracts["helpdesk"], root / "landing" / "helpdesk" / "2026-12-01")


def test_a_link_inside_a_subfolder_and_a_fifo_are_refused(root: Path, tmp_path: Path) -> None:
    contracts = read_contracts(root / "contracts").contracts
    nested = root / "landing" / "guides" / B1 / "deep"
    nested.mkdir()
    (nested / "g.md").symlink_to("/etc/hostname")
    os.mkfifo(root / "landing" / "helpdesk" / B1 / "pipe.jsonl")
    scan = scan_landing(root / "landing", contracts)
    refused = "\n".join(scan.rejected)
    assert "deep/g.md is a symbolic link" in refused and "pipe.jsonl is not a regular file" in refused
    assert not any(b.batch == B1 and b.source in ("guides", "helpdesk") for b in scan.batches)


# --- contracts: a strict loader; a broken one holds back its own source -------------------


@pytest.mark.parametrize(
    "doc, problem",
    [
        (BOMB, "anchors and aliases"),
        ("base: &b {x: 1}\nc:\n  <<: *b\n", "anchors and aliases"),
        ("c:\n  <<: {x: 1}\n", "merge keys"),
        ("a: !!python/object/apply:os.system [ls]\n", "tag"),
        ("a: !custom 1\n", "tag"),
        ("a: " + "x" * 300_000 + "\n", "limit"),
    ],
)
def test_the_strict_loader_refuses_bombs_merges_tags_and_size(doc: str, problem: str) -> None:
    started = time.perf_counter()
    with pytest.raises(StrictYAMLError, match=problem):
        load_strict(doc)
    assert time.perf_counter() - started < 5


def test_a_yaml_bomb_contract_holds_back_its_source_and_the_rest_sync(
    root: Path, instance: dg.DagsterInstance
) -> None:
    assert sync(instance, make_pipeline(root), echo=_quiet).ok
    docs_before = pl.read_delta(str(root / "lake" / "gold" / "documents"))
    (root / "contracts" / "guides.yaml").write_text(BOMB)
    found = read_contracts(root / "contracts")
    assert sorted(found.contracts) == sorted(set(SAMPLE_SOURCES) - {"guides"})
    assert "anchors and aliases" in found.problems["guides"] and "\n" not in found.problems["guides"]
    (root / "landing" / "helpdesk" / "2026-11-15").mkdir()
    (root / "landing" / "helpdesk" / "2026-11-15" / "t.jsonl").write_bytes(
        (root / "landing" / "helpdesk" / B2 / "tickets.jsonl").read_bytes().splitlines(keepends=True)[0]
    )
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert not summary.ok
    assert set(summary.blocked) == {B1, B2}, summary.render()
    assert "guides.yaml" in summary.render() and "Traceback" not in summary.render()
    assert "2026-11-15" in pl.read_delta(str(root / "lake" / "gold" / "documents"))["batch"].to_list()
    docs_after = pl.read_delta(str(root / "lake" / "gold" / "documents")).filter(
        pl.col("batch") != "2026-11-15"
    )
    assert docs_after.sort("doc_id").equals(docs_before.sort("doc_id"))  # guides' documents stay


def test_a_broken_contract_is_one_line_and_search_keeps_working(
    root: Path, instance: dg.DagsterInstance
) -> None:
    assert sync(instance, make_pipeline(root), echo=_quiet).ok
    (root / "contracts" / "catalog.yaml").write_text("source: catalog\nformat: csv\nid: [unclosed\n")
    env = _cli_env(root)
    out = _cli(env, "sync")
    assert out.returncode != 0
    assert "catalog.yaml" in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr
    hits = _cli(env, "search", "kettle", "--mode", "fts", "--json")
    assert hits.returncode == 0, hits.stderr
    assert json.loads(hits.stdout)["hits"]


def test_a_strict_contract_load_names_every_broken_file(root: Path) -> None:
    from embedding_assets.contracts.load import load_contracts

    (root / "contracts" / "guides.yaml").write_text(BOMB)
    with pytest.raises(ContractError, match=r"guides\.yaml: not a valid contract: anchors"):
        load_contracts(root / "contracts")


# --- parsing: BOM, CSV header identity, unterminated quotes --------------------------------


def test_a_bom_is_stripped_in_every_text_format(root: Path) -> None:
    contracts = read_contracts(SAMPLE / "contracts").contracts
    csv_header = b"\xef\xbb\xbfsku,name,description,updated"
    fields, problems = parse_record(
        contracts["catalog"], b"A-1,Kettle,Boils,2026-11-01T00:00:00Z", csv_header, "p.csv"
    )
    assert problems == [] and fields["sku"] == "A-1"
    fields, problems = parse_record(
        contracts["helpdesk"], b'\xef\xbb\xbf{"ticket_id": "T-1"}', None, "t.jsonl"
    )
    assert problems == [] and fields["ticket_id"] == "T-1"
    md = "\ufeff---\ntitle: Hello\n---\nBody text\n".encode()
    fields, problems = parse_record(contracts["guides"], md, None, "g.md")
    assert problems == [] and fields["title"] == "Hello" and fields["body"] == "Body text"


def test_a_bom_csv_delivery_quarantines_nothing(root: Path, instance: dg.DagsterInstance) -> None:
    path = root / "landing" / "catalog" / B1 / "products.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert summary.ok, summary.render()
    table = root / "lake" / "quarantine" / "catalog"
    assert not table.exists() or pl.read_delta(str(table)).filter(pl.col("batch") == B1).height == 0


def test_a_redelivery_that_only_fixes_the_csv_header_rebuilds_gold(
    root: Path, instance: dg.DagsterInstance
) -> None:
    path = root / "landing" / "catalog" / B1 / "products.csv"
    good = path.read_bytes()
    header, rest = good.split(b"\n", 1)
    swapped = header.replace(b"name", b"TMP").replace(b"category", b"name").replace(b"TMP", b"category")
    path.write_bytes(swapped + b"\n" + rest)
    assert sync(instance, make_pipeline(root), echo=_quiet).ok
    titles = pl.read_delta(str(root / "lake" / "gold" / "documents")).filter(
        pl.col("doc_id") == "product:LH-KET-001"  # the catalogue names products (priority)
    )
    assert titles["title"].to_list() == ["kettle"]  # the swapped header, as delivered
    path.write_bytes(good)
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert summary.ok and summary.runs_by["batch"] == 1 and summary.runs_by["batch_model"] == 1, (
        summary.render()
    )
    docs = pl.read_delta(str(root / "lake" / "gold" / "documents")).filter(
        pl.col("doc_id") == "product:LH-KET-001"  # the catalogue names products (priority)
    )
    assert docs["title"].to_list() == ["Brew Kettle Gen 1"]


def test_an_unterminated_quote_quarantines_its_row_and_recovers_the_next(tmp_path: Path) -> None:
    contracts = read_contracts(SAMPLE / "contracts").contracts
    batch = tmp_path / "b"
    batch.mkdir()
    payload = b'sku,name,description\nA,"broken,x\nB,ok,"fine"\nC,"two\nlines",y\n'
    (batch / "p.csv").write_bytes(payload)
    raw = read_raw_batch(contracts["catalog"], batch).records
    assert raw["raw"].to_list() == [b'A,"broken,x', b'B,ok,"fine"', b'C,"two\nlines",y']
    _, problems = parse_record(contracts["catalog"], raw["raw"][0], raw["header"][0], "p.csv")
    assert problems and problems[0].startswith("unterminated_quote")


def test_csv_rows_in_equal_rows_out_with_an_unterminated_quote(
    root: Path, instance: dg.DagsterInstance
) -> None:
    path = root / "landing" / "catalog" / B1 / "products.csv"
    lines = path.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b',"', b',"UNCLOSED ', 1).replace(b'",', b",", 1)
    path.write_bytes(b"\n".join(lines))
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    silver = pl.read_delta(str(root / "lake" / "silver" / "catalog")).filter(pl.col("batch") == B1)
    quarantine = pl.read_delta(str(root / "lake" / "quarantine" / "catalog")).filter(pl.col("batch") == B1)
    physical = len([ln for ln in lines[1:] if ln.strip()])
    assert quarantine.height == 1 and "unterminated_quote" in str(quarantine["reasons"].to_list()[0])
    assert silver.height + quarantine.height == physical, summary.render()


# --- search: filters bound and narrowed, arguments checked ---------------------------------


def test_where_is_checked_against_the_columns() -> None:
    columns = ["source", "priority", "price_eur", "title"]
    assert checked_where("priority = 'high' AND price_eur > 10", columns)
    for bad in [
        "1=1) OR (source = 'catalog'",
        "priority = 'a'; DROP TABLE x",
        "nosuch = 1",
        "priority = 'a' -- comment",
        "(priority = 'a'",
        "sleep(10) = 1",
    ]:
        with pytest.raises(FilterError):
            checked_where(bad, columns)


def _cli_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EA_DATA_DIR": str(root),
        "EA_EMBEDDER": "hashing",
        "DAGSTER_HOME": str(root / "dagster"),
        "EA_LANDING_SETTLE_S": "0",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (Path(env["DAGSTER_HOME"])).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_search_arguments_give_one_line_and_exit_2(root: Path, instance: dg.DagsterInstance) -> None:
    assert sync(instance, make_pipeline(root), echo=_quiet).ok
    env = _cli_env(root)
    bypass = _cli(env, "search", "kettle", "--mode", "fts", "--json", "--source", "guides",
                  "--where", "1=1) OR (source = 'catalog'")  # fmt: skip
    assert bypass.returncode == 2 and "parenthesis" in bypass.stderr and not bypass.stdout
    narrowed = _cli(
        env,
        "search",
        "kettle",
        "--mode",
        "fts",
        "--json",
        "--source",
        "guides",
        "--where",
        "1=1 OR source = 'catalog'",
    )
    assert narrowed.returncode == 0, narrowed.stderr
    assert {h["source"] for h in json.loads(narrowed.stdout)["hits"]} <= {"guides"}
    for args, message in [
        (["-k", "0"], "between 1 and 1000"),
        (["-k", "-1"], "between 1 and 1000"),
        (["-k", "1001"], "between 1 and 1000"),
        (["--source", "nosuch"], "the index holds: guides, helpdesk, product"),
        (["--where", "nosuch = 1"], "unknown column 'nosuch'"),
        (["--index-version", "-1"], "--index-version must be between 1 and"),
    ]:
        out = _cli(env, "search", "kettle", "--mode", "fts", *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
