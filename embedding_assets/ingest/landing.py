"""The landing zone: ``<landing>/<source>/<batch>/<files>``, its content hashes and raw records."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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
    "html": (".html", ".htm"),
    "pdf": (".pdf",),
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
    complete: bool = False  # its writer dropped a _SUCCESS marker: finished, no need to settle

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
    held: Mapping[str, str] = field(default_factory=dict)  # batch -> why it must wait (a broken contract)

    @property
    def batch_names(self) -> list[str]:
        return sorted({b.batch for b in self.batches})

    def hashes(self) -> dict[tuple[str, str], str]:
        """Every (source, batch)'s content hash: reads every file."""
        return {(b.source, b.batch): b.content_hash() for b in self.batches}


class UnsafeLandingError(ValueError):
    """A landing path that is a link, or not a regular file or folder: it is never read."""


def _walk(folder: Path, suffixes: tuple[str, ...], unsafe: list[str]) -> list[Path]:
    """Regular files under ``folder`` with one of ``suffixes``, never following a link; every
    link, device, socket or pipe met on the way is named in ``unsafe``."""
    found = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink():
                unsafe.append(f"{path} is a symbolic link")
            elif entry.is_dir(follow_symlinks=False):
                found += _walk(path, suffixes, unsafe)
            elif not entry.is_file(follow_symlinks=False):
                unsafe.append(f"{path} is not a regular file")
            elif path.suffix.lower() in suffixes:
                found.append(path)
    return found


def batch_files(batch_dir: Path, fmt: str) -> tuple[Path, ...]:
    """The batch's files of its format, in path order. Raises :class:`UnsafeLandingError` when
    the folder or anything in it is a link (a link could lead out of the landing zone)."""
    unsafe: list[str] = []
    if batch_dir.is_symlink():
        unsafe.append(f"{batch_dir} is a symbolic link")
    files = [] if unsafe else _walk(batch_dir, _SUFFIXES[fmt], unsafe)
    if unsafe:
        raise UnsafeLandingError(f"{'; '.join(unsafe)}: landing reads only regular files in real folders")
    return tuple(sorted(files))


def read_landing_file(path: Path) -> bytes:
    """A landing file's bytes, refusing a link swapped in since the scan (``O_NOFOLLOW``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if path.is_symlink():
            raise UnsafeLandingError(f"{path} is a symbolic link: landing reads only regular files") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _add_file(digest: Any, rel: str, data: bytes) -> None:
    digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())


def files_hash(files: tuple[Path, ...], root: Path) -> str:
    """sha256 over (relative path, sha256 of bytes) of every file, in path order."""
    if not files:
        return EMPTY_HASH
    digest = hashlib.sha256()
    for path in files:
        _add_file(digest, path.relative_to(root).as_posix(), read_landing_file(path))
    return digest.hexdigest()


def _batch(contract: Contract, folder: Path) -> LandingBatch:
    files = batch_files(folder, contract.format)
    stats = []
    for path in files:
        st = path.stat()
        stats.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return LandingBatch(
        contract.source, folder.name, folder, files, tuple(stats), (folder / "_SUCCESS").is_file()
    )


def _folders(parent: Path, what: str, rejected: list[str]) -> list[Path]:
    """Sub-folders with safe names, sorted; unsafe ones are refused with a line naming them."""
    found = []
    for path in sorted(p for p in parent.iterdir() if p.is_dir() or p.is_symlink()):
        problem = "a symbolic link (landing reads only real folders)" if path.is_symlink() else None
        problem = problem or name_problem(path.name)
        if problem:
            rejected.append(
                f"refused {what} folder {path.relative_to(parent.parent).as_posix()!r}: {problem}"
            )
        else:
            found.append(path)
    return found


def scan_landing(
    landing_dir: Path, contracts: Mapping[str, Contract], broken: Mapping[str, str] | None = None
) -> LandingScan:
    """Every (source, batch) folder of the landing zone with its files' sizes and times. A source
    whose contract is ``broken`` (source -> problem) holds back every batch it has a folder in:
    rebuilding such a batch's gold without the source would delete the source's documents."""
    batches: list[LandingBatch] = []
    rejected: list[str] = []
    held: dict[str, str] = {}
    if not landing_dir.is_dir():
        return LandingScan((), ())
    for source_dir in _folders(landing_dir, "source", rejected):
        contract = contracts.get(source_dir.name)
        if contract is None and source_dir.name in (broken or {}):
            problem = (broken or {})[source_dir.name]
            rejected.append(f"held back source {source_dir.name!r}: {problem}")
            for folder in _folders(source_dir, "batch", []):
                held[folder.name] = f"the contract of {source_dir.name!r} is broken: {problem}"
            continue
        if contract is None:
            rejected.append(f"ignored source folder {source_dir.name!r}: no contract in the contracts folder")
            continue
        for folder in _folders(source_dir, "batch", rejected):
            try:
                batches.append(_batch(contract, folder))
            except UnsafeLandingError as exc:
                rejected.append(f"refused batch {source_dir.name}/{folder.name}: {exc}")
    return LandingScan(tuple(b for b in batches if b.batch not in held), tuple(rejected), held)


def settled(batch: LandingBatch, seen_before: str | None, now_s: float, settle_s: float) -> bool:
    """Whether a batch's files have stopped changing, so that reading them gives the whole delivery:
    its writer marked it complete (``_SUCCESS``), the last look saw the same sizes and times, or
    nothing was written for ``settle_s``."""
    return batch.complete or batch.stat_digest == seen_before or now_s - batch.newest_mtime_s >= settle_s


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
    frames = [pl.DataFrame(schema=RAW_SCHEMA)]
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(batch_dir).as_posix()
        data = read_landing_file(path)  # read once: the hash and the records come from the same bytes
        _add_file(digest, rel, data)
        if contract.format == "jsonl":
            frames.append(_jsonl_records(rel, data))
            continue
        if contract.format == "csv":
            rows = _csv_records(rel, data)
        elif contract.format == "parquet":
            frame = pl.read_parquet(io.BytesIO(data))
            rows = [
                (rel, number, json.dumps(record, default=str).encode(), None)
                for number, record in enumerate(frame.iter_rows(named=True), start=1)
            ]
        else:
            rows = [(rel, 1, data, None)]
        frames.append(pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row"))
    content_hash = digest.hexdigest() if files else EMPTY_HASH
    return RawBatch(pl.concat(frames), content_hash, len(files))


def _jsonl_records(rel: str, data: bytes) -> pl.DataFrame:
    """One row per non-blank line (its number counts every physical line), without a trailing CR.
    Built column by column: a million ``(file, line, bytes, None)`` tuples cost seconds as rows."""
    lines = data.split(b"\n")
    if b"\r" in data:
        lines = list(map(bytes.rstrip, lines, itertools.repeat(b"\r")))
    filled = np.fromiter(map(len, map(bytes.strip, lines)), dtype=np.int64, count=len(lines)) > 0
    return pl.DataFrame(
        {
            "file": pl.repeat(rel, int(filled.sum()), dtype=pl.String, eager=True),
            "line": np.flatnonzero(filled) + 1,
            "raw": pl.Series(list(itertools.compress(lines, filled)), dtype=pl.Binary),
            "header": pl.repeat(None, int(filled.sum()), dtype=pl.Binary, eager=True),
        },
        schema=RAW_SCHEMA,
    )


def _csv_record(lines: list[str], start: int) -> tuple[int, list[str] | None]:
    """The record starting at physical line ``start``: the line after it, and its cells (None
    when the parser refuses it). ``csv.reader`` counts the physical lines it consumed."""
    reader = csv.reader(lines[j] for j in range(start, len(lines)))
    try:
        cells = next(reader)
    except csv.Error:
        cells = None
    return start + max(reader.line_num, 1), cells


def _csv_records(rel: str, data: bytes) -> list[tuple[str, int, bytes, bytes | None]]:
    """One row per CSV record, as its exact bytes (quoted newlines included) with the header.

    A record that runs over several physical lines but does not parse to the header's width
    is an unterminated quote swallowing the rows after it: only its own line is kept as the
    record (silver quarantines it), and reading resumes on the next line, so no row is lost."""
    lines = data.splitlines(keepends=True)
    if not lines:
        return []
    header = lines[0].rstrip(b"\r\n")
    text_lines = [ln.decode("utf-8", errors="surrogateescape") for ln in lines]
    width = len(next(csv.reader([text_lines[0].removeprefix("\ufeff")]), []))
    out: list[tuple[str, int, bytes, bytes | None]] = []
    start = 1
    while start < len(lines):
        end, cells = _csv_record(text_lines, start)
        if end - start > 1 and (cells is None or len(cells) != width):
            end = start + 1
        raw = b"".join(lines[start:end]).rstrip(b"\r\n")
        if raw.strip():
            out.append((rel, start + 1, raw, header))
        start = end
    return out
