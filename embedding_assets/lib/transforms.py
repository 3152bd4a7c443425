"""Bronze to silver to gold: parsing, typing, validation, deduplication. Pure polars, no Dagster."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import yaml

from embedding_assets.lib.contracts import PL_TYPES, Contract, FieldSpec, MetadataField, QualityRules
from embedding_assets.lib.hashing import frame_hash, sha256_text
from embedding_assets.lib.migrations import breaking_fields, migrate
from embedding_assets.lib.quality import near_duplicates, normalised_texts
from embedding_assets.lib.validation import row_reasons, with_garbage

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
        "near_duplicate_of": pl.String(),  # flagged, not dropped (the contract's near_duplicates.action)
        "_file": pl.String(),
        "_line": pl.Int64(),
    }
)
# Every row that did not become a silver row, and why: invalid rows (the quarantine proper) and the
# losers of deduplication. Rows read = silver rows + rows here, so nothing is dropped silently.
QUARANTINE_SCHEMA = pl.Schema(
    {
        "source": pl.String(),
        "batch": pl.String(),
        "_file": pl.String(),
        "_line": pl.Int64(),
        "kind": pl.String(),  # invalid | duplicate | near_duplicate | superseded
        "doc_id": pl.String(),
        "duplicate_of": pl.String(),  # the winner's file:line (duplicates) or doc id (near duplicates)
        "contract_version": pl.Int64(),  # detected version of the record, -1 when unreadable
        "raw": pl.String(),
        "reasons": pl.List(pl.String()),
        "reason": pl.String(),
    }
)
INVALID, DUPLICATE, NEAR_DUPLICATE, SUPERSEDED = "invalid", "duplicate", "near_duplicate", "superseded"
FIELD_PREFIX = "f_"  # silver carries every contract field, typed, as f_<name> (schema evolution)
GOLD_DOCUMENT_COLUMNS = [c for c in SILVER_SCHEMA if not c.startswith("_") and c != "near_duplicate_of"]
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True)
class SilverResult:
    silver: pl.DataFrame
    rejected: pl.DataFrame  # QUARANTINE_SCHEMA: invalid rows and deduplication losers
    rows_read: int
    versions: dict[int, int]  # detected contract version -> rows
    migrated: int  # rows that went through at least one migration step
    breaking: list[str]  # a breaking schema change, named by field (blocks the batch)

    @property
    def quarantine(self) -> pl.DataFrame:
        return self.rejected.filter(pl.col("kind") == INVALID)

    def count(self, kind: str) -> int:
        return int((self.rejected["kind"] == kind).sum())

    @property
    def duplicates_dropped(self) -> int:
        return self.rejected.height - self.quarantine.height

    @property
    def superseded(self) -> int:
        return self.count(SUPERSEDED)

    @property
    def near_duplicates_flagged(self) -> int:
        return int(self.silver["near_duplicate_of"].is_not_null().sum())

    @property
    def accounted(self) -> bool:
        """Rows read = silver rows + quarantined rows + duplicates dropped."""
        return self.rows_read == self.silver.height + self.quarantine.height + self.duplicates_dropped

    def reasons(self) -> pl.DataFrame:
        """Quarantined rows per rule (a row with two reasons counts under both)."""
        return (
            self.quarantine.explode("reasons")
            .with_columns(pl.col("reasons").str.split(":").list.first().alias("rule"))
            .group_by("rule")
            .len("rows")
            .sort("rows", "rule", descending=[True, False])
        )


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


def bronze_to_silver(contract: Contract, bronze: pl.DataFrame, batch: str) -> SilverResult:
    """Parse, migrate, type, validate and deduplicate one batch of one source.

    ``bronze`` has the columns ``file``, ``line``, ``raw`` and ``header`` (bytes as received).
    Every row ends in exactly one place: silver, or the rejected table with its kind and reasons.
    """
    names = contract.referenced_fields
    texts: dict[str, list[str | None]] = {name: [] for name in names}
    parse_errors: list[list[str]] = []
    versions_read: list[int] = []
    keysets: list[frozenset[str]] = []  # each record's keys, interned: few distinct shapes per batch
    interned: dict[frozenset[str], frozenset[str]] = {}
    shapes: dict[frozenset[str], int] = {}
    defaults = [(name, spec.default) for name, spec in contract.fields.items() if spec.default is not None]
    migrated = 0
    for file, raw, header in bronze.select("file", "raw", "header").iter_rows():
        record, reasons = parse_record(contract, raw, header, file)
        version = contract.version
        if not reasons:
            result = migrate(contract, record, shapes)
            record, version, reasons = result.record, result.version, result.reasons
            migrated += result.steps > 0
            for name, default in defaults:
                if record.get(name) is None:
                    record[name] = default
        keys = frozenset(record)
        keysets.append(interned.setdefault(keys, keys))
        parse_errors.append(reasons)
        versions_read.append(version if not reasons or record else -1)
        for name in names:
            texts[name].append(_as_text(record.get(name)))
    frame = pl.DataFrame(
        [
            bronze["file"].alias("_file"),
            bronze["line"].alias("_line"),
            pl.Series("_parse", parse_errors, dtype=pl.List(pl.String)),
            pl.Series("_version", versions_read, dtype=pl.Int64),
            *(pl.Series(f"raw::{name}", values, dtype=pl.String) for name, values in texts.items()),
        ]
    )
    del texts, parse_errors, versions_read
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
    frame = with_garbage(frame, contract)
    # A row that could not be parsed (or migrated) has no fields: only those reasons are meaningful.
    frame = frame.with_columns(
        pl.when(pl.col("_parse").list.len() > 0)
        .then(pl.col("_parse"))
        .otherwise(row_reasons(contract, frame))
        .alias("reasons")
    )
    live = frame["_parse"].list.len().eq(0) & ~frame["deleted"]
    breaking = breaking_fields(
        contract,
        frame.filter(live).select(f"raw::{name}" for name in names).rename(lambda c: c.removeprefix("raw::")),
        {keys for keys, keep in zip(keysets, live.to_list(), strict=True) if keep},
    )
    versions = {int(v): int(n) for v, n in frame.group_by("_version").len().sort("_version").iter_rows()}
    unmigrated = frame.filter(
        pl.col("_parse").list.first().str.starts_with("no_migration")
        | pl.col("_parse").list.first().str.starts_with("unknown_version")
    )
    if unmigrated.height:
        by = f"field '{contract.version_field}'" if contract.version_field else "the shape of its rows"
        breaking.append(
            f"{unmigrated.height} rows are contract versions {sorted(set(unmigrated['_version'].to_list()))} "
            f"(by {by}) and no migration leads to v{contract.version}"
        )
    bad = frame.filter(pl.col("reasons").list.len() > 0)
    good = frame.filter(pl.col("reasons").list.len() == 0)
    invalid = bad.select(
        pl.lit(contract.source).alias("source"),
        pl.lit(batch).alias("batch"),
        "_file",
        "_line",
        pl.lit(INVALID).alias("kind"),
        pl.when(_blank_expr(pl.col(f"raw::{contract.id}")))
        .then(None)
        .otherwise(pl.lit(f"{contract.source}:") + pl.col(f"raw::{contract.id}").str.strip_chars())
        .alias("doc_id"),
        pl.lit(None, dtype=pl.String).alias("duplicate_of"),
        pl.col("_version").alias("contract_version"),
        pl.lit(None, dtype=pl.String).alias("raw"),  # filled below, for rejected rows only
        "reasons",
        pl.col("reasons").list.join("; ").alias("reason"),
    ).cast(QUARANTINE_SCHEMA)
    silver = _canonical(contract, good, batch)
    deduped, losers = deduplicate(silver, contract.quality)
    losers = (
        losers.join(
            good.select("_file", "_line", pl.col("_version").alias("contract_version")),
            on=["_file", "_line"],
            how="left",
        )
        .select(
            pl.lit(contract.source).alias("source"),
            pl.lit(batch).alias("batch"),
            "_file",
            "_line",
            "kind",
            "doc_id",
            "duplicate_of",
            "contract_version",
            pl.lit(None, dtype=pl.String).alias("raw"),
            pl.concat_list([pl.col("reason")]).alias("reasons"),
            "reason",
        )
        .cast(QUARANTINE_SCHEMA)
    )
    rejected = pl.concat([invalid, losers]).sort("_file", "_line")
    return SilverResult(
        silver=deduped,
        rejected=rejected.with_columns(_raw_texts(bronze, rejected)),
        rows_read=bronze.height,
        versions=versions,
        migrated=migrated,
        breaking=breaking,
    )


def _raw_texts(bronze: pl.DataFrame, rows: pl.DataFrame) -> pl.Series:
    """The received bytes of ``rows`` (by ``_file`` and ``_line``) as text, undecodable bytes as U+FFFD."""
    raw = rows.select("_file", "_line").join(
        bronze.select(pl.col("file").alias("_file"), pl.col("line").alias("_line"), "raw"),
        on=["_file", "_line"],
        how="left",
        maintain_order="left",
    )["raw"]
    values = [None if v is None else v.decode("utf-8", errors="replace") for v in raw.to_list()]
    return pl.Series("raw", values, dtype=pl.String)


def _blank_expr(col: pl.Expr) -> pl.Expr:
    return col.is_null() | col.str.strip_chars().eq("")


def _canonical(contract: Contract, good: pl.DataFrame, batch: str) -> pl.DataFrame:
    meta_cols = list(contract.metadata)
    metadata = pl.Series(
        "metadata",
        [
            json.dumps(
                dict(zip(meta_cols, row, strict=True)), sort_keys=True, default=str, ensure_ascii=False
            )
            for row in good.select(pl.col(f"typed::{m}") for m in meta_cols).iter_rows()
        ]
        if meta_cols
        else ["{}"] * good.height,
        dtype=pl.String,
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
    typed_fields = [
        pl.col(f"typed::{n}").cast(PL_TYPES[contract.field_spec(n).type]).alias(f"{FIELD_PREFIX}{n}")
        for n in contract.fields
    ]
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
        pl.lit(None, dtype=pl.String).alias("near_duplicate_of"),
        pl.col("_file"),
        pl.col("_line"),
        *typed_fields,
    )
    hashes = [
        sha256_text(*(v if v is not None else "\x00" for v in row))
        for row in out.select(
            pl.col("title"), pl.col("text"), pl.col("metadata"), pl.col("deleted").cast(pl.String)
        ).iter_rows()
    ]
    base = [c for c in SILVER_SCHEMA]
    return (
        out.with_columns(pl.Series("content_hash", hashes, dtype=pl.String))
        .select([*base, *(c.meta.output_name() for c in typed_fields)])
        .cast(SILVER_SCHEMA)  # type: ignore[arg-type]
    )


LOSER_SCHEMA = {
    "_file": pl.String(),
    "_line": pl.Int64(),
    "kind": pl.String(),
    "doc_id": pl.String(),
    "duplicate_of": pl.String(),
    "reason": pl.String(),
}


def deduplicate(silver: pl.DataFrame, rules: QualityRules | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep one row per document, and record every row that lost, and to what.

    1. Conflicting updates (same id, different content): the newest ``updated_at`` wins (then the
       later file and line); the others are ``superseded``.
    2. Exact duplicates: the same id in the same version again (the first row is kept), or another
       id with the same normalised text (case, Unicode form and whitespace ignored): ``duplicate``
       of the oldest such document (then the smallest id), whatever the row order.
    3. Near duplicates (MinHash LSH, Jaccard >= the contract's threshold): ``near_duplicate``
       losers when the contract says drop, else kept and flagged in ``near_duplicate_of``.

    Deletion markers have no text; they are only ever deduplicated by id.
    """
    rules = rules or QualityRules()
    where = pl.col("_file") + pl.lit(":") + pl.col("_line").cast(pl.String)
    ordered = silver.sort(["doc_id", "updated_at", "_file", "_line"], nulls_last=False).with_columns(
        where.alias("_at")
    )
    # Same id, same content, same time: a re-sent row.
    same = ordered.with_columns(
        pl.col("_at").first().over(["doc_id", "content_hash", "updated_at"]).alias("_winner")
    )
    resent = same.filter(pl.col("_at") != pl.col("_winner")).select(
        "_file", "_line", pl.lit(DUPLICATE).alias("kind"), "doc_id",
        pl.col("_winner").alias("duplicate_of"),
        pl.format("duplicate: the same version of {} again (kept {})", "doc_id", "_winner").alias("reason"),
    )  # fmt: skip
    exact = same.filter(pl.col("_at") == pl.col("_winner")).drop("_winner")
    newest = exact.with_columns(pl.col("_at").last().over("doc_id").alias("_winner"))
    superseded = newest.filter(pl.col("_at") != pl.col("_winner")).select(
        "_file", "_line", pl.lit(SUPERSEDED).alias("kind"), "doc_id",
        pl.col("_winner").alias("duplicate_of"),
        pl.format("superseded: an older version of {} (updated_at {}); kept {}", "doc_id", "updated_at", "_winner")
        .alias("reason"),
    )  # fmt: skip
    # Oldest document first (then id): which of two copies is kept must not depend on row order,
    # or re-delivering the same rows in another order would change silver.
    kept = newest.filter(pl.col("_at") == pl.col("_winner")).drop("_winner").sort("updated_at", "doc_id")
    # Other ids with the same normalised text.
    live = kept.filter(~pl.col("deleted")).with_columns(
        normalised_texts(kept.filter(~pl.col("deleted"))["text"]).alias("_norm")
    )
    live = live.with_columns(pl.col("doc_id").first().over("_norm").alias("_first"))
    copies = live.filter(pl.col("doc_id") != pl.col("_first"))
    dropped_copies = rules.duplicate_action == "drop"
    text_dups = copies.select(
        "_file", "_line", pl.lit(DUPLICATE).alias("kind"), "doc_id",
        pl.col("_first").alias("duplicate_of"),
        pl.format("duplicate: same normalised text as {}", "_first").alias("reason"),
    )  # fmt: skip
    flags: dict[str, str] = {} if dropped_copies else dict(copies.select("doc_id", "_first").iter_rows())
    remaining = live.filter(pl.col("doc_id") == pl.col("_first")) if dropped_copies else live
    near = near_duplicates(
        remaining["doc_id"].to_list(), remaining["text"].to_list(), threshold=rules.near_duplicate_threshold
    )
    near_rows = pl.DataFrame(
        [(d.id, d.of, d.similarity) for d in near], schema={"doc_id": pl.String, "of": pl.String, "sim": pl.Float64},
        orient="row",
    )  # fmt: skip
    if rules.near_duplicate_action == "drop":
        near_losers = (
            remaining.join(near_rows, on="doc_id")
            .select(
                "_file", "_line", pl.lit(NEAR_DUPLICATE).alias("kind"), "doc_id", pl.col("of").alias("duplicate_of"),
                pl.format("near_duplicate: Jaccard {} with {}", "sim", "of").alias("reason"),
            )
        )  # fmt: skip
    else:
        near_losers = pl.DataFrame(schema=LOSER_SCHEMA)
        flags.update({d.id: d.of for d in near})
    losers = pl.concat(
        [
            f.cast(LOSER_SCHEMA)  # type: ignore[arg-type]
            for f in (resent, superseded, text_dups if dropped_copies else None, near_losers)
            if f is not None
        ]  # type: ignore[arg-type]
    )
    out = kept.join(losers.select("_file", "_line"), on=["_file", "_line"], how="anti")
    out = out.with_columns(
        pl.col("doc_id")
        .replace_strict(flags, default=None, return_dtype=pl.String)
        .alias("near_duplicate_of")
    ).drop("_at")
    return out.sort("doc_id"), losers.sort("_file", "_line")


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


def with_metadata_columns(frame: pl.DataFrame, fields: Mapping[str, MetadataField]) -> pl.DataFrame:
    """Every metadata field as a typed column of its own (decoded from the ``metadata`` JSON), so
    gold and the index can filter on it. A field a row lacks gets the field's default."""
    if not fields:
        return frame
    struct = pl.Struct({name: pl.String() for name in fields})
    decoded = frame.select(
        pl.col("metadata").fill_null("{}").str.json_decode(struct).struct.unnest()
    ) if frame.height else pl.DataFrame(schema={name: pl.String() for name in fields})  # fmt: skip
    columns = []
    for name, spec in fields.items():
        text = decoded[name] if name in decoded.columns else pl.Series(name, [None] * frame.height, pl.String)
        if spec.default is not None:
            text = text.fill_null(_as_text(spec.default))
        typed = pl.DataFrame({name: text}).select(
            _typed(name, FieldSpec(name, spec.type)).cast(spec.dtype).alias(name)
        )
        columns.append(typed[name])
    return frame.with_columns(columns)


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
