"""The landing zone: ``<landing>/<source>/<batch>/<files>``, its content hashes and raw records."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Mapping
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
    """One source's files in one batch folder, as ``stat`` saw them: nothing is read yet."""

    source: str
    batch: str
    folder: Path
    files: tuple[Path, ...]
    stats: tuple[tuple[str, int, int], ...]  # (relative path, size, mtime in ns) per file

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch}"

    @property
    def stat_digest(self) -> str:
        """Changes when a file is added, removed, resized or touched: the cue to hash again."""
        return hashlib.sha256(repr(self.stats).encode()).hexdigest()[:32]

    @property
    def newest_mtime_s(self) -> float:
        return max((mtime for _, _, mtime in self.stats), default=0) / 1e9

    def content_hash(self) -> str:
        """The delivery's identity: sha256 over (relative path, sha256 of bytes) of every file."""
        return files_hash(self.files, self.folder)


@dataclass(frozen=True)
class LandingScan:
    batches: tuple[LandingBatch, ...]
    rejected: tuple[str, ...]  # one human-readable line per refused folder

    @property
    def batch_names(self) -> list[str]:
        return sorted({b.batch for b in self.batches})

    def hashes(self) -> dict[tuple[str, str], str]:
        """Every (source, batch)'s content hash: reads every file."""
        return {(b.source, b.batch): b.content_hash() for b in self.batches}


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


def _batch(contract: Contract, folder: Path) -> LandingBatch:
    files = batch_files(folder, contract.format)
    stats = []
    for path in files:
        st = path.stat()
        stats.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return LandingBatch(contract.source, folder.name, folder, files, tuple(stats))


def _folders(parent: Path, what: str, rejected: list[str]) -> list[Path]:
    """Sub-folders with safe names, sorted; unsafe ones are refused with a line naming them."""
    found = []
    for path in sorted(p for p in parent.iterdir() if p.is_dir()):
        problem = name_problem(path.name)
        if problem:
            rejected.append(
                f"refused {what} folder {path.relative_to(parent.parent).as_posix()!r}: {problem}"
            )
        else:
            found.append(path)
    return found


def scan_landing(landing_dir: Path, contracts: Mapping[str, Contract]) -> LandingScan:
    """Every (source, batch) folder of the landing zone with its files' sizes and times."""
    batches: list[LandingBatch] = []
    rejected: list[str] = []
    if not landing_dir.is_dir():
        return LandingScan((), ())
    for source_dir in _folders(landing_dir, "source", rejected):
        contract = contracts.get(source_dir.name)
        if contract is None:
            rejected.append(f"ignored source folder {source_dir.name!r}: no contract in the contracts folder")
            continue
        batches += [_batch(contract, folder) for folder in _folders(source_dir, "batch", rejected)]
    return LandingScan(tuple(batches), tuple(rejected))


def settled(batch: LandingBatch, seen_before: str | None, now_s: float, settle_s: float) -> bool:
    """Whether a batch's files have stopped changing, so that reading them gives the whole delivery:
    either the last look saw the same sizes and times, or nothing was written for ``settle_s``."""
    return batch.stat_digest == seen_before or now_s - batch.newest_mtime_s >= settle_s


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
