"""The landing zone: ``<landing>/<source>/<batch>/<files>``, its content hashes and raw records."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from embedding_assets.contracts.model import SAFE_NAME, Contract

RAW_SCHEMA = {"file": pl.String, "line": pl.Int64, "raw": pl.Binary, "header": pl.Binary}
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
_SUFFIXES = {
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "csv": (".csv",),
    "parquet": (".parquet",),
    "markdown": (".md", ".markdown"),
    "text": (".txt", ".text", ".html", ".htm"),
}


def name_problem(name: str) -> str | None:
    """Why a source or batch folder name is refused, or None when it is safe."""
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "contains control characters"
    if ".." in name:
        return "contains '..'"
    if "/" in name or "\\" in name:
        return "contains a slash"
    if not SAFE_NAME.match(name):
        return "must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"
    return None


@dataclass(frozen=True)
class LandingBatch:
    source: str
    batch: str
    files: tuple[Path, ...]
    content_hash: str


@dataclass(frozen=True)
class LandingScan:
    batches: tuple[LandingBatch, ...]
    rejected: tuple[str, ...]  # one human-readable line per refused folder

    @property
    def batch_names(self) -> list[str]:
        return sorted({b.batch for b in self.batches})

    def hashes(self) -> dict[tuple[str, str], str]:
        return {(b.source, b.batch): b.content_hash for b in self.batches}


def batch_files(batch_dir: Path, fmt: str) -> tuple[Path, ...]:
    suffixes = _SUFFIXES[fmt]
    return tuple(sorted(p for p in batch_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes))


def _add_file(digest: Any, rel: str, data: bytes) -> None:
    digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())


def files_hash(files: tuple[Path, ...], root: Path) -> str:
    """sha256 over (relative path, sha256 of bytes) of every file, in path order."""
    if not files:
        return EMPTY_HASH
    digest = hashlib.sha256()
    for path in files:
        _add_file(digest, path.relative_to(root).as_posix(), path.read_bytes())
    return digest.hexdigest()


def scan_landing(landing_dir: Path, contracts: dict[str, Contract]) -> LandingScan:
    batches: list[LandingBatch] = []
    rejected: list[str] = []
    if not landing_dir.is_dir():
        return LandingScan((), ())
    for source_dir in sorted(p for p in landing_dir.iterdir() if p.is_dir()):
        problem = name_problem(source_dir.name)
        if problem:
            rejected.append(f"refused source folder {source_dir.name!r}: {problem}")
            continue
        contract = contracts.get(source_dir.name)
        if contract is None:
            rejected.append(f"ignored source folder {source_dir.name!r}: no contract in the contracts folder")
            continue
        for batch_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            problem = name_problem(batch_dir.name)
            if problem:
                rejected.append(f"refused batch folder {source_dir.name}/{batch_dir.name!r}: {problem}")
                continue
            files = batch_files(batch_dir, contract.format)
            batches.append(LandingBatch(contract.source, batch_dir.name, files, files_hash(files, batch_dir)))
    return LandingScan(tuple(batches), tuple(rejected))


@dataclass(frozen=True)
class RawBatch:
    records: pl.DataFrame  # file, line, raw, header
    content_hash: str  # the same hash scan_landing reports, of the very bytes read
    files: int


def read_raw_batch(contract: Contract, batch_dir: Path) -> RawBatch:
    """Every record of a landing batch as its exact bytes, with file and line for lineage.

    JSONL: one record per non-blank line. CSV: the bytes of each record (quoted newlines
    included) plus the header bytes. Markdown and text: one record per file. Parquet: one
    JSON object per row, the closest thing to "bytes as received" a columnar file has.
    """
    files = batch_files(batch_dir, contract.format) if batch_dir.is_dir() else ()
    rows: list[tuple[str, int, bytes, bytes | None]] = []
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(batch_dir).as_posix()
        data = path.read_bytes()  # read once: the hash and the records come from the same bytes
        _add_file(digest, rel, data)
        if contract.format == "jsonl":
            for number, line in enumerate(data.split(b"\n"), start=1):
                line = line.rstrip(b"\r")
                if line.strip():
                    rows.append((rel, number, line, None))
        elif contract.format == "csv":
            rows.extend(_csv_records(rel, data))
        elif contract.format == "parquet":
            frame = pl.read_parquet(io.BytesIO(data))
            for number, record in enumerate(frame.iter_rows(named=True), start=1):
                rows.append((rel, number, json.dumps(record, default=str).encode(), None))
        else:
            rows.append((rel, 1, data, None))
    content_hash = digest.hexdigest() if files else EMPTY_HASH
    return RawBatch(pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row"), content_hash, len(files))


def _csv_records(rel: str, data: bytes) -> list[tuple[str, int, bytes, bytes | None]]:
    lines = data.splitlines(keepends=True)
    if not lines:
        return []
    header = lines[0].rstrip(b"\r\n")
    out: list[tuple[str, int, bytes, bytes | None]] = []
    # csv.reader tracks physical lines, so a record's exact bytes are the lines it consumed.
    text_lines = [ln.decode("utf-8", errors="surrogateescape") for ln in lines]
    reader = csv.reader(iter(text_lines[1:]))
    start = 1
    while True:
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error:
            pass
        end = reader.line_num + 1
        raw = b"".join(lines[start:end]).rstrip(b"\r\n")
        if raw.strip():
            out.append((rel, start + 1, raw, header))
        start = end
    return out
