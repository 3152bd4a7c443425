"""Random byte mutations of the sample files, through landing and silver: no crash, every record
read ends in silver or quarantine exactly once, and nothing names a file outside the batch."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from embedding_assets.contracts.load import load_contracts
from embedding_assets.ingest.landing import read_raw_batch
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests.conftest import SAMPLE

CASES = 510
SEED = 20261201
CONTRACTS = load_contracts(SAMPLE / "contracts")
SEEDS = {
    "catalog": SAMPLE / "landing" / "catalog" / "2026-11-01" / "products.csv",
    "helpdesk": SAMPLE / "landing" / "helpdesk" / "2026-11-01" / "tickets.jsonl",
    "guides": SAMPLE / "landing" / "guides" / "2026-11-01" / "guide-001.md",
}
NASTY = [
    b'"',
    b"\n",
    b"\r\n",
    b",",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff",
    b"{",
    b"}",
    b"---\n",
    b"&a",
    b"*a",
    b"\\",
]


def _head(data: bytes, lines: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[:lines])


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random edits: flip, insert, delete, duplicate a span, or splice in a nasty token."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(5)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 2:
            del out[at : at + rng.randint(1, 12)]
        elif kind == 3:
            out[at:at] = out[at : at + rng.randint(1, 40)]
        else:
            out[at:at] = rng.choice(NASTY)
    return bytes(out)


def test_mutated_deliveries_account_for_every_record(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    heads = {s: _head(p.read_bytes(), 7) for s, p in SEEDS.items()}
    for case in range(CASES):
        source = rng.choice(sorted(SEEDS))
        batch = tmp_path / f"case-{case}"
        batch.mkdir()
        name = f"f{case}{SEEDS[source].suffix}"
        (batch / name).write_bytes(mutate(heads[source], rng))
        raw = read_raw_batch(CONTRACTS[source], batch).records
        try:
            result = bronze_to_silver(CONTRACTS[source], raw, batch.name)
        except Exception as exc:  # pragma: no cover - the failure message names the case
            pytest.fail(f"case {case} ({source}) crashed: {type(exc).__name__}: {exc}")
        assert result.rows_read == raw.height, case
        assert result.accounted, (case, source)
        files = set(raw["file"].to_list())
        assert files <= {name}, case
        rejected_files = set(result.rejected["_file"].to_list())
        assert rejected_files <= {name}, case
        if result.silver.height:
            assert set(result.silver["batch"].to_list()) == {batch.name}, case
