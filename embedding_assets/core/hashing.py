"""Stable content hashes: the data versions every asset reports."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import polars as pl

FIELD_SEP = "\x1f"  # after every part of :func:`sha256_text`
_FIELD_SEP = FIELD_SEP
_ROW_SEP = "\x1e"
_NULL = "\x00"


def sha256_text(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(_FIELD_SEP.encode())
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_hash(df: pl.DataFrame, columns: Sequence[str], sort_by: Sequence[str] | None = None) -> str:
    """Hash of the listed columns, independent of row order when ``sort_by`` is given.

    Values are rendered as text, so the hash does not depend on polars' internal
    row hashing, which may change between releases.
    """
    frame = df.select(columns)
    if sort_by:
        frame = frame.sort(list(sort_by), nulls_last=True)
    digest = hashlib.sha256(",".join(columns).encode())
    if frame.height == 0:
        return digest.hexdigest()
    rendered = frame.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null(_NULL) for c in columns], separator=_FIELD_SEP
        ).alias("row")
    )["row"]
    for block in _blocks(rendered.to_list(), 50_000):
        digest.update(_ROW_SEP.join(block).encode("utf-8"))
        digest.update(_ROW_SEP.encode())
    return digest.hexdigest()


def combine(hashes: Iterable[str]) -> str:
    return sha256_text(*hashes)


def _blocks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
