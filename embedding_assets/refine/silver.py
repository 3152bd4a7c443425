"""Bronze to silver: parse, migrate, type, validate and deduplicate one batch of one source."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from embedding_assets.contracts.model import PL_TYPES, Contract
from embedding_assets.core.hashing import frame_hash, sha256_text
from embedding_assets.refine.dedupe import deduplicate
from embedding_assets.refine.migrations import breaking_fields, migrate
from embedding_assets.refine.parse import as_text, parse_datetime, parse_record, typed_expr
from embedding_assets.refine.tables import FIELD_PREFIX, INVALID, QUARANTINE_SCHEMA, SILVER_SCHEMA, SUPERSEDED
from embedding_assets.refine.validation import row_reasons, with_garbage


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
            texts[name].append(as_text(record.get(name)))
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
        typed_expr(f"raw::{n}", contract.field_spec(n)).alias(f"typed::{n}") for n in names
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
                parse_datetime, return_dtype=pl.Datetime("us", "UTC")
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


DOC_VERSION_COLUMNS = ["doc_id", "content_hash", "updated_at", "deleted"]


def documents_version(documents: pl.DataFrame) -> str:
    """Data version of silver or gold documents: which documents, in which version."""
    return frame_hash(documents, DOC_VERSION_COLUMNS, sort_by=["doc_id"])


def quarantine_version(quarantine: pl.DataFrame) -> str:
    return frame_hash(quarantine, ["_file", "_line", "reason"], sort_by=["_file", "_line"])
