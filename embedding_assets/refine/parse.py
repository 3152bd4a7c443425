"""One raw record to fields (JSONL, CSV, Parquet, Markdown, text), and field text to typed values."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from typing import Any

import polars as pl

from embedding_assets.contracts.model import Contract, FieldSpec
from embedding_assets.core.strict_yaml import StrictYAMLError, load_strict
from embedding_assets.ingest.stream import REJECTED
from embedding_assets.refine.extract import extract_html, extract_pdf

BOM = "\ufeff"
_TRUE = {"true", "1", "yes", "y", "t"}


_FALSE = {"false", "0", "no", "n", "f"}
EXTRACTORS = {"html": extract_html, "pdf": extract_pdf}
_HALF_SURROGATE = "a \\u escape gives half of a surrogate pair, which is not text"


def parse_record(
    contract: Contract, raw: bytes, header: bytes | None, file: str
) -> tuple[dict[str, Any], list[str]]:
    """One raw record to a field mapping, or the reasons it cannot be read."""
    if contract.format in EXTRACTORS:  # whole files in their own encodings: bytes go to the extractor
        return EXTRACTORS[contract.format](raw, _stem(file))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, [f"invalid_utf8: byte {exc.start}"]
    text = text.removeprefix(BOM)  # a file's byte-order mark reaches its first record
    if "\x00" in text:
        return {}, ["nul_byte: the record contains NUL characters"]
    fmt = contract.format
    if fmt in ("jsonl", "parquet"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return {}, [f"invalid_json: {exc.msg} at column {exc.colno}"]
        if not isinstance(value, dict):
            return {}, [f"not_an_object: a JSON {type(value).__name__} is not a record"]
        if REJECTED in value:  # a streamed message that could not land as it was: its reason
            return {}, [str(value[REJECTED])]
        if "\\u" in text and _lone_surrogate(value):
            return {}, [f"invalid_json: {_HALF_SURROGATE}"]
        return value, []
    if fmt == "csv":
        head = next(csv.reader([(header or b"").decode("utf-8", errors="replace").removeprefix(BOM)]), [])
        if _unterminated_quote(text):
            return {}, ["unterminated_quote: a quoted field is not closed on this line"]
        try:
            cells = next(csv.reader(text.splitlines(keepends=True) or [""]), [])
        except csv.Error as exc:
            return {}, [f"invalid_csv: {exc}"]
        if len(cells) != len(head):
            return {}, [f"csv_column_count: {len(cells)} cells for {len(head)} columns"]
        return {k: (v if v != "" else None) for k, v in zip(head, cells, strict=True)}, []
    if fmt == "markdown":
        return _parse_markdown(text, file)
    return {"path": _stem(file), "body": text}, []


def _stem(file: str) -> str:
    """The file's name without folder and suffix: the id of a one-file record."""
    return file.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in a parsed JSON or YAML value holds an unpaired surrogate (both
    keep ``\\ud800`` as it is; it cannot be stored as UTF-8)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def _unterminated_quote(text: str) -> bool:
    try:
        next(csv.reader(text.splitlines(keepends=True) or [""], strict=True), None)
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _parse_markdown(text: str, file: str) -> tuple[dict[str, Any], list[str]]:
    stem = _stem(file)
    front: dict[str, Any] = {}
    body = text
    if text.startswith("---"):
        parts = text.split("\n---", 1)
        if len(parts) != 2:
            return {}, ["invalid_front_matter: no closing '---'"]
        try:
            loaded = load_strict(parts[0].lstrip("-").strip(), "the front matter") or {}
        except StrictYAMLError as exc:
            return {}, [f"invalid_front_matter: {exc}"]
        if not isinstance(loaded, dict):
            return {}, ["invalid_front_matter: not a mapping"]
        if _lone_surrogate(loaded):  # YAML's "\ud800" is kept as it is, as json.loads keeps it
            return {}, [f"invalid_front_matter: {_HALF_SURROGATE}"]
        front = loaded
        body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    record = {"path": stem, **front, "body": body.strip()}
    return record, []


def as_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def parse_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def typed_expr(col: str, spec: FieldSpec) -> pl.Expr:
    src = pl.col(col)
    if spec.type == "int":
        return (
            src.str.strip_chars()
            .cast(pl.Float64, strict=False)
            .pipe(lambda e: pl.when(e == e.round(0)).then(e.cast(pl.Int64, strict=False)).otherwise(None))
        )
    if spec.type == "float":
        return src.str.strip_chars().cast(pl.Float64, strict=False)
    if spec.type == "bool":
        low = src.str.strip_chars().str.to_lowercase()
        return pl.when(low.is_in(list(_TRUE))).then(True).when(low.is_in(list(_FALSE))).then(False)
    if spec.type == "datetime":
        return datetime_expr(src)
    return src


# The common shape, 2026-11-01T10:00:00Z, which polars parses exactly as parse_datetime does: a
# four-digit year from 1000 (Python has no year 0), seconds below 60 (chrono would take a leap
# second); a day or month out of range fails in both. Every other text goes to parse_datetime.
_UTC_SECONDS = r"^[1-9]\d{3}-\d{2}-\d{2}T\d{2}:[0-5]\d:[0-5]\dZ$"


def datetime_expr(src: pl.Expr) -> pl.Expr:
    """:func:`parse_datetime` of each text as a UTC datetime: in polars for the common shape, in
    Python only for the rest."""
    utc = pl.Datetime("us", "UTC")
    text = src.str.strip_chars()
    fast = (
        pl.when(text.str.contains(_UTC_SECONDS))
        .then(text.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%SZ", strict=False))
        .dt.replace_time_zone("UTC")
    )
    rest = pl.when(fast.is_null()).then(src).map_elements(parse_datetime, return_dtype=utc, skip_nulls=True)
    return pl.coalesce(fast, rest)
