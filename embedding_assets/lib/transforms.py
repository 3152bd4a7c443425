"""Bronze to silver to gold: parsing, typing, validation, deduplication. Pure polars, no Dagster."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import yaml

from embedding_assets.lib.contracts import Contract, FieldSpec
from embedding_assets.lib.hashing import frame_hash, sha256_text

SILVER_SCHEMA = pl.Schema(
    {
        "doc_id": pl.String(),
        "source": pl.String(),
        "source_id": pl.String(),
        "batch": pl.String(),
        "title": pl.String(),
        "text": pl.String(),
        "updated_at": pl.Datetime("us", "UTC"),
        "deleted": pl.Boolean(),
        "metadata": pl.String(),
        "content_hash": pl.String(),
        "_file": pl.String(),
        "_line": pl.Int64(),
    }
)
QUARANTINE_SCHEMA = pl.Schema(
    {
        "source": pl.String(),
        "batch": pl.String(),
        "_file": pl.String(),
        "_line": pl.Int64(),
        "raw": pl.String(),
        "reasons": pl.List(pl.String()),
        "reason": pl.String(),
    }
)
GOLD_DOCUMENT_COLUMNS = [c for c in SILVER_SCHEMA if not c.startswith("_")]
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class SilverResult:
    silver: pl.DataFrame
    quarantine: pl.DataFrame
    rows_read: int
    duplicates_dropped: int
    superseded: int

    @property
    def accounted(self) -> bool:
        """Rows read = silver rows + quarantined rows + duplicates dropped."""
        return self.rows_read == self.silver.height + self.quarantine.height + self.duplicates_dropped


# --------------------------------------------------------------------------- parsing


def parse_record(
    contract: Contract, raw: bytes, header: bytes | None, file: str
) -> tuple[dict[str, Any], list[str]]:
    """One raw record to a field mapping, or the reasons it cannot be read."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, [f"invalid_utf8: byte {exc.start}"]
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
        return value, []
    if fmt == "csv":
        head = next(csv.reader([(header or b"").decode("utf-8", errors="replace")]), [])
        try:
            cells = next(csv.reader(text.splitlines(keepends=True) or [""]), [])
        except csv.Error as exc:
            return {}, [f"invalid_csv: {exc}"]
        if len(cells) != len(head):
            return {}, [f"csv_column_count: {len(cells)} cells for {len(head)} columns"]
        return {k: (v if v != "" else None) for k, v in zip(head, cells, strict=True)}, []
    if fmt == "markdown":
        return _parse_markdown(text, file)
    stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return {"path": stem, "body": text}, []


def _parse_markdown(text: str, file: str) -> tuple[dict[str, Any], list[str]]:
    stem = file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    front: dict[str, Any] = {}
    body = text
    if text.startswith("---"):
        parts = text.split("\n---", 1)
        if len(parts) != 2:
            return {}, ["invalid_front_matter: no closing '---'"]
        try:
            loaded = yaml.safe_load(parts[0].lstrip("-").strip()) or {}
        except yaml.YAMLError as exc:
            return {}, [f"invalid_front_matter: {str(exc).splitlines()[0]}"]
        if not isinstance(loaded, dict):
            return {}, ["invalid_front_matter: not a mapping"]
        front = loaded
        body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    record = {"path": stem, **front, "body": body.strip()}
    return record, []


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- typing


def _parse_datetime(value: str | None) -> datetime | None:
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


def _typed(col: str, spec: FieldSpec) -> pl.Expr:
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
        return src.map_elements(_parse_datetime, return_dtype=pl.Datetime("us", "UTC"))
    return src


def _field_rules(contract: Contract, name: str, deleted: pl.Expr) -> list[pl.Expr]:
    """Expressions that yield a reason string (or null) per row for one field."""
    spec = contract.field_spec(name)
    raw = pl.col(f"raw::{name}")
    typed = pl.col(f"typed::{name}")
    rules: list[pl.Expr] = [
        pl.when(raw.is_not_null() & raw.str.strip_chars().ne("") & typed.is_null()).then(
            pl.lit(f"bad_type: field '{name}' is not a valid {spec.type}")
        )
    ]
    if spec.required:
        rules.append(
            pl.when(~deleted & (raw.is_null() | raw.str.strip_chars().eq(""))).then(
                pl.lit(f"missing_required: field '{name}' is required")
            )
        )
    if spec.allowed is not None:
        rules.append(
            pl.when(raw.is_not_null() & ~raw.is_in(list(spec.allowed))).then(
                pl.lit(f"not_allowed: field '{name}' must be one of {list(spec.allowed)}")
            )
        )
    if spec.max_length is not None:
        rules.append(
            pl.when(raw.str.len_chars() > spec.max_length).then(
                pl.lit(f"too_long: field '{name}' is over {spec.max_length} characters")
            )
        )
    return rules


def bronze_to_silver(contract: Contract, bronze: pl.DataFrame, batch: str) -> SilverResult:
    """Parse, type, validate and deduplicate one batch of one source.

    ``bronze`` has the columns ``file``, ``line``, ``raw`` and ``header`` (bytes as received).
    Every row ends in exactly one place: silver, quarantine, or the duplicate count.
    """
    names = contract.referenced_fields
    parsed_rows: list[dict[str, Any]] = []
    for file, line, raw, header in bronze.select("file", "line", "raw", "header").iter_rows():
        record, reasons = parse_record(contract, raw, header, file)
        row: dict[str, Any] = {
            "_file": file,
            "_line": line,
            "_raw": raw.decode("utf-8", errors="replace"),
            "_parse": reasons,
        }
        for name in names:
            row[f"raw::{name}"] = _as_text(record.get(name))
        parsed_rows.append(row)
    schema: dict[str, pl.DataType] = {
        "_file": pl.String(),
        "_line": pl.Int64(),
        "_raw": pl.String(),
        "_parse": pl.List(pl.String()),
        **{f"raw::{n}": pl.String() for n in names},
    }
    frame = pl.DataFrame(parsed_rows, schema=schema, orient="row")
    frame = frame.with_columns(
        _typed(f"raw::{n}", contract.field_spec(n)).alias(f"typed::{n}") for n in names
    )

    marker = contract.deleted
    deleted = (
        pl.col(f"raw::{marker.field}")
        .str.strip_chars()
        .str.to_lowercase()
        .is_in(list(marker.values))
        .fill_null(False)
        if marker
        else pl.lit(False)
    )
    text_parts = [pl.col(f"raw::{n}").str.strip_chars() for n in contract.text]
    frame = frame.with_columns(
        deleted.alias("deleted"),
        pl.concat_str(text_parts, separator="\n\n", ignore_nulls=True).str.strip_chars().alias("text"),
    )
    rules: list[pl.Expr] = [
        pl.when(
            pl.col(f"raw::{contract.id}").is_null() | pl.col(f"raw::{contract.id}").str.strip_chars().eq("")
        ).then(pl.lit(f"missing_id: id field '{contract.id}' is null or empty")),
        pl.when(~pl.col("deleted") & pl.col("text").fill_null("").eq("")).then(
            pl.lit(f"empty_text: text fields {list(contract.text)} are empty or whitespace")
        ),
    ]
    for name in names:
        rules.extend(_field_rules(contract, name, pl.col("deleted")))
    frame = frame.with_columns(
        pl.concat_list([pl.col("_parse"), pl.concat_list(rules).list.drop_nulls()]).alias("reasons")
    )
    # A row that could not be parsed has no fields, so only its parse reasons are meaningful.
    frame = frame.with_columns(
        pl.when(pl.col("_parse").list.len() > 0)
        .then(pl.col("_parse"))
        .otherwise(pl.col("reasons"))
        .alias("reasons")
    )
    bad = frame.filter(pl.col("reasons").list.len() > 0)
    good = frame.filter(pl.col("reasons").list.len() == 0)

    quarantine = bad.select(
        pl.lit(contract.source).alias("source"),
        pl.lit(batch).alias("batch"),
        "_file",
        "_line",
        pl.col("_raw").alias("raw"),
        "reasons",
        pl.col("reasons").list.join("; ").alias("reason"),
    ).cast(QUARANTINE_SCHEMA)

    silver = _canonical(contract, good, batch)
    deduped, exact, superseded = deduplicate(silver)
    return SilverResult(
        silver=deduped,
        quarantine=quarantine,
        rows_read=bronze.height,
        duplicates_dropped=exact + superseded,
        superseded=superseded,
    )


def _canonical(contract: Contract, good: pl.DataFrame, batch: str) -> pl.DataFrame:
    meta_cols = list(contract.metadata)
    metadata = (
        good.select(
            pl.struct([pl.col(f"typed::{m}").alias(m) for m in meta_cols])
            .map_elements(
                lambda s: json.dumps(s, sort_keys=True, default=str, ensure_ascii=False),
                return_dtype=pl.String,
            )
            .alias("metadata")
        )["metadata"]
        if meta_cols and good.height
        else pl.Series("metadata", ["{}"] * good.height, dtype=pl.String)
    )
    updated = (
        pl.col(f"typed::{contract.updated_at}").cast(pl.Datetime("us", "UTC"))
        if contract.updated_at and contract.field_spec(contract.updated_at).type == "datetime"
        else (
            pl.col(f"raw::{contract.updated_at}").map_elements(
                _parse_datetime, return_dtype=pl.Datetime("us", "UTC")
            )
            if contract.updated_at
            else pl.lit(None, dtype=pl.Datetime("us", "UTC"))
        )
    )
    title = (
        pl.col(f"raw::{contract.title}").str.strip_chars()
        if contract.title
        else pl.lit(None, dtype=pl.String)
    )
    out = good.with_columns(metadata.alias("metadata")).select(
        (pl.lit(f"{contract.source}:") + pl.col(f"raw::{contract.id}").str.strip_chars()).alias("doc_id"),
        pl.lit(contract.source).alias("source"),
        pl.col(f"raw::{contract.id}").str.strip_chars().alias("source_id"),
        pl.lit(batch).alias("batch"),
        title.alias("title"),
        pl.when(pl.col("deleted")).then(pl.lit("")).otherwise(pl.col("text")).alias("text"),
        updated.alias("updated_at"),
        pl.col("deleted"),
        pl.col("metadata"),
        pl.col("_file"),
        pl.col("_line"),
    )
    hashes = [
        sha256_text(*(v if v is not None else "\x00" for v in row))
        for row in out.select(
            pl.col("title"), pl.col("text"), pl.col("metadata"), pl.col("deleted").cast(pl.String)
        ).iter_rows()
    ]
    return (
        out.with_columns(pl.Series("content_hash", hashes, dtype=pl.String))
        .select(list(SILVER_SCHEMA))
        .cast(SILVER_SCHEMA)
    )


def deduplicate(silver: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """Drop exact duplicates, then keep the newest version of each id (updated_at, then file order).

    Returns the rows kept, the number of exact duplicates and the number of superseded versions.
    """
    ordered = silver.sort(["doc_id", "updated_at", "_file", "_line"], nulls_last=False)
    exact = ordered.unique(subset=["doc_id", "content_hash", "updated_at"], keep="last", maintain_order=True)
    newest = exact.unique(subset=["doc_id"], keep="last", maintain_order=True)
    return (
        newest.sort("doc_id"),
        silver.height - exact.height,
        exact.height - newest.height,
    )


# --------------------------------------------------------------------------- gold


DOC_VERSION_COLUMNS = ["doc_id", "content_hash", "updated_at", "deleted"]


def documents_version(documents: pl.DataFrame) -> str:
    """Data version of silver or gold documents: which documents, in which version."""
    return frame_hash(documents, DOC_VERSION_COLUMNS, sort_by=["doc_id"])


def quarantine_version(quarantine: pl.DataFrame) -> str:
    return frame_hash(quarantine, ["_file", "_line", "reason"], sort_by=["_file", "_line"])


def union_documents(silver_frames: list[pl.DataFrame]) -> pl.DataFrame:
    """gold/documents for one batch: every source's silver rows, ids already namespaced by source."""
    frames = [f.select(GOLD_DOCUMENT_COLUMNS) for f in silver_frames if f.height]
    if not frames:
        return pl.DataFrame(schema={c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS})
    return pl.concat(frames, how="vertical").sort("doc_id")


def snapshot_tombstones(current: pl.DataFrame, earlier: pl.DataFrame, batch: str) -> pl.DataFrame:
    """Deletions implied by a full-snapshot batch: every document whose newest version in earlier
    batches is live but that this batch's snapshot lacks. A batch that delivered nothing for the
    source (``current`` empty) implies nothing. Each tombstone keeps the document's last
    ``updated_at``, so it wins over that version by batch order and loses to any later edit."""
    columns = {c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS}
    if current.height == 0 or earlier.height == 0:
        return pl.DataFrame(schema=columns)
    gone = (
        latest_documents(earlier.filter(pl.col("batch") < batch))
        .filter(~pl.col("deleted"))
        .join(current.select("doc_id"), on="doc_id", how="anti")
    )
    return (
        gone.with_columns(
            pl.lit(batch).alias("batch"),
            pl.lit("").alias("text"),
            pl.lit(True).alias("deleted"),
            pl.lit("{}").alias("metadata"),
            pl.lit(None, dtype=pl.String).alias("title"),
            pl.lit(sha256_text("snapshot-tombstone")).alias("content_hash"),
        )
        .select(list(columns))
        .cast(columns)  # type: ignore[arg-type]
        .sort("doc_id")
    )


def latest_documents(documents: pl.DataFrame) -> pl.DataFrame:
    """Newest version of every document across batches: updated_at, then batch order, wins."""
    return (
        documents.sort(["doc_id", "updated_at", "batch"], nulls_last=False)
        .unique(subset=["doc_id"], keep="last", maintain_order=True)
        .sort("doc_id")
    )


def expected_live_chunks(documents: pl.DataFrame, chunks: pl.DataFrame) -> pl.DataFrame:
    """The chunks the index should hold: those of each document's newest, non-deleted version."""
    winners = latest_documents(documents).filter(~pl.col("deleted")).select("doc_id", "batch")
    return chunks.join(winners, on=["doc_id", "batch"], how="semi").select(
        "chunk_id", "chunk_hash", "doc_id", "batch"
    )
