"""JSON lines decoded column-wise by polars, for the records the row parser would read the same way.

The row parser (:func:`~embedding_assets.refine.parse.parse_record`, migration, defaults) is exact
for every record, but it is a Python call per row. For a contract with a single shape and no
version field, migration leaves a record as it is, so its fields are its JSON values as text, and
polars decodes those in Rust. It agrees with ``json.loads`` and ``as_text`` except where the
*plain* mask below sends a row to the row parser instead:

- a byte-order mark or a NUL: the row parser strips the one and names the other as a reason;
- a ``\\u`` escape: polars turns a lone surrogate into NUL where ``json.loads`` keeps it (the row
  parser quarantines it), and an escaped key could spell a field's name;
- a number, ``NaN`` or ``Infinity``: polars writes ``1e-07`` as ``0.0000001`` and ``1e5`` as
  ``100000``, Python as ``1e-07`` and ``100000.0``;
- a field's key twice: ``json.loads`` keeps the last value, polars the first;
- anything but an object (a truncated line among them).

Whatever else polars refuses (bytes that are not UTF-8, invalid JSON, a nested value in a field)
fails the whole piece it decodes; such a piece is halved until the failing rows are alone, and
those go to the row parser. A test holds both paths equal on hostile and random lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedding_assets.contracts.model import Contract
from embedding_assets.ingest.stream import REJECTED
from embedding_assets.refine.parse import BOM, as_text

# A piece this small that still fails is left to the row parser whole, as is every failing piece
# once failed decodes have covered _FAILURE_BUDGET times the rows (many bad rows: halving stops
# paying, and the row parser takes them).
_SMALLEST_PIECE = 64
_FAILURE_BUDGET = 2
_PLAIN_NAME = re.compile(r"\w+")  # no JSON escape but \u (always sent to the row parser) spells it
_OPENS = r"^[ \t\n\r]*\{"  # an object, after JSON's own whitespace (what json.loads allows)
_CLOSES = r"\}[ \t\n\r]*$"
_NUMBER_VALUE = r"\"[ \t\n\r]*:[ \t\n\r]*[-0-9NI]"  # a key followed by a number, NaN or Infinity


@dataclass(frozen=True)
class Decoded:
    """Rows decoded column-wise: ``rows`` are their positions in the input, ascending, and
    ``fields`` holds ``raw::<field>`` as text for each of them, in that order."""

    rows: np.ndarray
    fields: pl.DataFrame


def column_decodable(contract: Contract) -> bool:
    """Whether the contract's records can take the column-wise path at all: JSON records of a
    single shape, with no version field, whose field names no JSON escape but ``\\u`` can spell."""
    return (
        contract.format in ("jsonl", "parquet")
        and contract.version_field is None
        and len(contract.shapes()) == 1
        and not contract.migrations
        and all(_PLAIN_NAME.fullmatch(name) for name in contract.referenced_fields)
    )


def decode_columns(contract: Contract, raw: pl.Series) -> Decoded:
    """The rows of ``raw`` (the records' bytes) that decode column-wise exactly as the row parser
    reads them, with their fields as text and the contract's defaults filled in; the other rows
    are for the row parser. Nothing is decoded for a contract that is not column-decodable."""
    names = contract.referenced_fields
    if not column_decodable(contract) or raw.len() == 0:
        return Decoded(np.empty(0, dtype=np.int64), _empty_fields(names))
    rows: list[np.ndarray] = []
    frames: list[pl.DataFrame] = []
    pending, failed = [(0, raw.len())], 0
    while pending:
        start, length = pending.pop()
        try:
            found, fields = _decode_piece(raw.slice(start, length), names)
        except pl.exceptions.PolarsError:  # not UTF-8, not JSON, a nested value: halve and retry
            failed += length
            if length > _SMALLEST_PIECE and failed <= _FAILURE_BUDGET * raw.len():
                half = length // 2
                pending += [(start + half, length - half), (start, half)]
            continue
        rows.append(found + start)
        frames.append(fields)
    if not rows:
        return Decoded(np.empty(0, dtype=np.int64), _empty_fields(names))
    order = np.argsort(np.concatenate(rows), kind="stable")
    fields = pl.concat(frames)[order] if len(frames) > 1 else frames[0]
    return Decoded(np.concatenate(rows)[order], _with_defaults(contract, fields))


def _decode_piece(raw: pl.Series, names: tuple[str, ...]) -> tuple[np.ndarray, pl.DataFrame]:
    """(positions of the plain rows of ``raw``, their fields); raises where polars cannot decode."""
    text = raw.cast(pl.String)
    plain = _plain(text, names)
    dtype = pl.Struct({name: pl.String for name in names})
    decoded = text.filter(plain).str.json_decode(dtype).struct.unnest()
    return plain.arg_true().to_numpy().astype(np.int64), decoded.rename(lambda c: f"raw::{c}")


def _plain(text: pl.Series, names: tuple[str, ...]) -> pl.Series:
    """Rows whose every field polars reads as ``json.loads`` and ``as_text`` do (module docstring)."""
    keys = text.str.extract_many([f'"{name}"' for name in names])
    suspect = (
        text.str.starts_with(BOM)
        | text.str.contains("\x00", literal=True)
        | text.str.contains("\\u", literal=True)
        | text.str.contains(f'"{REJECTED}"', literal=True)  # a streamed message's reason, for the row parser
        | text.str.contains(_NUMBER_VALUE)
        | ~text.str.contains(_OPENS)
        | ~text.str.contains(_CLOSES)
        | (keys.list.len() != keys.list.n_unique())  # a key twice (or a value that spells a key)
    )
    return ~suspect.fill_null(True)


def _with_defaults(contract: Contract, fields: pl.DataFrame) -> pl.DataFrame:
    """A missing or null field takes the contract's default, as the row parser gives it."""
    defaults = {name: spec.default for name, spec in contract.fields.items() if spec.default is not None}
    return fields.with_columns(
        pl.col(f"raw::{name}").fill_null(pl.lit(as_text(default), dtype=pl.String))
        for name, default in defaults.items()
    )


def _empty_fields(names: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema={f"raw::{name}": pl.String for name in names})
