"""Bronze to silver: parse, migrate, type, validate and deduplicate one batch of one source."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from embedding_assets.contracts.model import PII_KINDS, PL_TYPES, Contract
from embedding_assets.core.bulk import gc_paused
from embedding_assets.core.hashing import FIELD_SEP, frame_hash
from embedding_assets.refine.decode import Decoded, decode_columns
from embedding_assets.refine.dedupe import deduplicate
from embedding_assets.refine.migrations import LiveFields, breaking_fields, migrate
from embedding_assets.refine.parse import as_text, datetime_expr, parse_record, typed_expr
from embedding_assets.refine.pii import mask_columns, mask_series
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
    pii: dict[str, int] = field(default_factory=dict)  # personal data masked or dropped, per kind

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
    checked = _checked(contract, bronze, batch)
    deduped, losers = deduplicate(checked.valid, contract.quality)
    rejected = pl.concat(
        [checked.invalid, _loser_rows(contract, losers, checked.valid_versions, batch)]
    ).sort("_file", "_line")
    raw, _ = mask_series(_raw_texts(bronze, rejected), contract.pii)  # the received record, masked too
    return SilverResult(
        silver=deduped,
        rejected=rejected.with_columns(raw),
        rows_read=bronze.height,
        versions=checked.versions,
        migrated=checked.migrated,
        breaking=checked.breaking(contract),
        pii={kind: checked.pii[kind] for kind in PII_KINDS if kind in contract.pii.active},
    )


# Records parsed, typed and validated at a time: what is alive at once stays bounded by the
# piece, not the batch (only the valid rows in their silver shape are kept for deduplication).
PIECE_ROWS = 1 << 17


@dataclass(frozen=True)
class _Checked:
    valid: pl.DataFrame  # the valid rows in SILVER_SCHEMA (plus a typed column per field)
    valid_versions: pl.DataFrame  # _file, _line and _version of the valid rows
    invalid: pl.DataFrame  # quarantine rows (QUARANTINE_SCHEMA) for the rows that broke a rule
    versions: dict[int, int]
    migrated: int
    live: LiveFields
    unmigrated: list[int]  # the detected version of each row no migration reaches
    pii: Counter[str]  # personal data masked or dropped, per kind

    def breaking(self, contract: Contract) -> list[str]:
        return breaking_fields(contract, self.live) + _unmigrated_message(contract, self.unmigrated)


def _checked(contract: Contract, bronze: pl.DataFrame, batch: str) -> _Checked:
    """Every row parsed, migrated, typed and validated, ``PIECE_ROWS`` at a time; each piece's
    parsed and typed frames are freed before the next, and only the results are kept."""
    starts = range(0, max(bronze.height, 1), PIECE_ROWS)
    # Two pieces at a time: one's polars kernels run while the other's Python (hashes, the row
    # parser) holds the interpreter.
    with ThreadPoolExecutor(2) as pool:
        pieces = list(
            pool.map(lambda lo: _checked_piece(contract, bronze.slice(lo, PIECE_ROWS), batch), starts)
        )
    versions: dict[int, int] = {}
    for piece in pieces:
        for version, n in piece.versions.items():
            versions[version] = versions.get(version, 0) + n
    return _Checked(
        valid=pl.concat([p.valid for p in pieces]),
        valid_versions=pl.concat([p.valid_versions for p in pieces]),
        invalid=pl.concat([p.invalid for p in pieces]),
        versions=dict(sorted(versions.items())),
        migrated=sum(p.migrated for p in pieces),
        live=sum((p.live for p in pieces[1:]), pieces[0].live),
        unmigrated=[v for p in pieces for v in p.unmigrated],
        pii=sum((p.pii for p in pieces), Counter()),
    )


def _checked_piece(contract: Contract, bronze: pl.DataFrame, batch: str) -> _Checked:
    parsed = _parse_batch(contract, bronze)
    fields, pii = mask_columns(parsed.frame, _maskable(contract), contract.pii)
    frame = _validated(contract, fields)
    versions = {int(v): int(n) for v, n in frame.group_by("_version").len().sort("_version").iter_rows()}
    valid = frame.filter(pl.col("reasons").list.len() == 0)
    first_reason = pl.col("_parse").list.first()
    unmigrated = frame.filter(
        first_reason.str.starts_with("no_migration") | first_reason.str.starts_with("unknown_version")
    )
    return _Checked(
        valid=_canonical(contract, valid, batch),
        valid_versions=valid.select("_file", "_line", "_version"),
        invalid=_invalid_rows(contract, frame.filter(pl.col("reasons").list.len() > 0), batch),
        versions=versions,
        migrated=parsed.migrated,
        live=_live_fields(contract, frame, parsed, bronze["raw"]),
        unmigrated=unmigrated["_version"].to_list(),
        pii=pii,
    )


def _maskable(contract: Contract) -> list[str]:
    """The text fields personal data is looked for in: every string field but the id."""
    names = contract.referenced_fields
    return [f"raw::{n}" for n in names if n != contract.id and contract.field_spec(n).type == "str"]


@dataclass(frozen=True)
class _Parsed:
    frame: pl.DataFrame  # _file, _line, _parse (reasons), _version and raw::<field> as text
    keysets: Sequence[frozenset[str] | None]  # each record's keys after migration; None: decoded column-wise
    migrated: int


def _parse_batch(contract: Contract, bronze: pl.DataFrame) -> _Parsed:
    """Every record parsed and migrated to the current contract, its fields kept as text: in
    polars where it reads a record exactly as the row parser does (:mod:`.decode`), else row by row."""
    decoded = decode_columns(contract, bronze["raw"])
    if decoded.rows.size == bronze.height:
        return _Parsed(_decoded_frame(contract, bronze, decoded), [None] * bronze.height, 0)
    rest = np.setdiff1d(np.arange(bronze.height), decoded.rows, assume_unique=True)
    looped = _parse_rows(contract, bronze[rest])
    if not decoded.rows.size:
        return looped
    position = np.concatenate([decoded.rows, rest])
    order = np.argsort(position, kind="stable")
    frame = pl.concat([_decoded_frame(contract, bronze, decoded), looped.frame])[order]
    keysets = [*([None] * decoded.rows.size), *looped.keysets]
    return _Parsed(frame, [keysets[i] for i in order], looped.migrated)


def _decoded_frame(contract: Contract, bronze: pl.DataFrame, decoded: Decoded) -> pl.DataFrame:
    """The parse frame of rows decoded column-wise: no reasons, the current version, no migration."""
    at = bronze[decoded.rows]
    return pl.DataFrame(
        [
            at["file"].alias("_file"),
            at["line"].alias("_line"),
            pl.Series("_parse", [[]], dtype=pl.List(pl.String)).new_from_index(0, decoded.rows.size),
            pl.Series("_version", [contract.version], dtype=pl.Int64).new_from_index(0, decoded.rows.size),
        ]
    ).hstack(decoded.fields)


def _parse_rows(contract: Contract, bronze: pl.DataFrame) -> _Parsed:
    """Records parsed and migrated one by one by Python: exact for any record."""
    names = contract.referenced_fields
    texts: dict[str, list[str | None]] = {name: [] for name in names}
    parse_errors: list[list[str]] = []
    versions_read: list[int] = []
    keysets: list[frozenset[str]] = []  # interned: few distinct shapes per batch
    interned: dict[frozenset[str], frozenset[str]] = {}
    shapes: dict[frozenset[str], int] = {}
    defaults = [(name, spec.default) for name, spec in contract.fields.items() if spec.default is not None]
    migrated = 0
    with gc_paused():
        for file, raw, header in bronze.select("file", "raw", "header").iter_rows():
            record, version, reasons, steps = _read_record(contract, (raw, header, file), shapes, defaults)
            migrated += steps > 0
            keys = frozenset(record)
            keysets.append(interned.setdefault(keys, keys))
            parse_errors.append(reasons)
            versions_read.append(version if not reasons or record else -1)  # -1: nothing could be read
            for name in names:
                texts[name].append(as_text(record.get(name)))
    frame = pl.DataFrame(
        [
            bronze["file"].alias("_file"),
            bronze["line"].alias("_line"),
            _string_lists("_parse", parse_errors),
            pl.Series("_version", versions_read, dtype=pl.Int64),
            *(pl.Series(f"raw::{name}", values, dtype=pl.String) for name, values in texts.items()),
        ]
    )
    return _Parsed(frame, keysets, migrated)


def _string_lists(name: str, lists: list[list[str]]) -> pl.Series:
    """A List(String) column from Python lists, built from offsets in one go: a list per row
    through the Series constructor costs a call each (most rows here have an empty list)."""
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    flat = pa.array([item for x in lists for item in x], type=pa.large_string())
    series = pl.Series(name, pa.LargeListArray.from_arrays(pa.array(offsets), flat))
    return series.cast(pl.List(pl.String))


def _read_record(
    contract: Contract,
    received: tuple[bytes, bytes | None, str],
    shapes: dict[frozenset[str], int],
    defaults: list[tuple[str, Any]],
) -> tuple[dict[str, Any], int, list[str], int]:
    """One record (raw bytes, CSV header, file) parsed, migrated and given the contract's defaults:
    (record, detected version, reasons it is unreadable, migration steps applied)."""
    record, reasons = parse_record(contract, *received)
    if reasons:
        return record, contract.version, reasons, 0
    result = migrate(contract, record, shapes)
    for name, default in defaults:
        if result.record.get(name) is None:
            result.record[name] = default
    return result.record, result.version, result.reasons, result.steps


def _validated(contract: Contract, frame: pl.DataFrame) -> pl.DataFrame:
    """The parsed rows with typed fields, ``deleted``, the combined ``text`` and every row's ``reasons``."""
    names = contract.referenced_fields
    frame = frame.with_columns(
        typed_expr(f"raw::{n}", contract.field_spec(n)).alias(f"typed::{n}") for n in names
    )
    text_parts = [pl.col(f"raw::{n}").str.strip_chars() for n in contract.text]
    frame = frame.with_columns(
        _deleted_expr(contract).alias("deleted"),
        pl.concat_str(text_parts, separator="\n\n", ignore_nulls=True).str.strip_chars().alias("text"),
    )
    frame = with_garbage(frame, contract)
    # A row that could not be parsed (or migrated) has no fields: only those reasons are meaningful.
    return frame.with_columns(
        pl.when(pl.col("_parse").list.len() > 0)
        .then(pl.col("_parse"))
        .otherwise(row_reasons(contract, frame))
        .alias("reasons")
    )


def _deleted_expr(contract: Contract) -> pl.Expr:
    marker = contract.deleted
    if not marker:
        return pl.lit(False)
    return (
        pl.col(f"raw::{marker.field}")
        .str.strip_chars()
        .str.to_lowercase()
        .is_in(list(marker.values))
        .fill_null(False)
    )


def _live_fields(contract: Contract, frame: pl.DataFrame, parsed: _Parsed, raw: pl.Series) -> LiveFields:
    """The piece's live rows (parsed, not deleted) as :class:`LiveFields`; the keys of a row decoded
    column-wise are read again only if a message asks for them."""
    live = frame["_parse"].list.len().eq(0) & ~frame["deleted"]
    names = contract.referenced_fields
    fields = frame.filter(live).select(f"raw::{n}" for n in names).rename(lambda c: c.removeprefix("raw::"))
    at = live.arg_true().to_list()
    defaults = frozenset(n for n, spec in contract.fields.items() if spec.default is not None)

    def keysets() -> Iterable[frozenset[str]]:
        for i in at:
            keys = parsed.keysets[i]
            yield keys if keys is not None else frozenset(json.loads(raw[i])) | defaults

    return LiveFields.of(contract, fields, keysets)


def _unmigrated_message(contract: Contract, versions: list[int]) -> list[str]:
    """A breaking change for the rows whose contract version no migration leads from."""
    if not versions:
        return []
    by = f"field '{contract.version_field}'" if contract.version_field else "the shape of its rows"
    rows = "1 row is" if len(versions) == 1 else f"{len(versions)} rows are"
    found = sorted(set(versions))
    return [
        f"{rows} contract version{'s' if len(found) != 1 else ''} {found} "
        f"(by {by}) and no migration leads to v{contract.version}"
    ]


def _invalid_rows(contract: Contract, bad: pl.DataFrame, batch: str) -> pl.DataFrame:
    """Quarantine rows (QUARANTINE_SCHEMA) for the rows that broke a rule."""
    raw_id = pl.col(f"raw::{contract.id}")
    return bad.select(
        pl.lit(contract.source).alias("source"),
        pl.lit(batch).alias("batch"),
        "_file",
        "_line",
        pl.lit(INVALID).alias("kind"),
        pl.when(_blank_expr(raw_id))
        .then(None)
        .otherwise(pl.lit(f"{contract.source}:") + raw_id.str.strip_chars())
        .alias("doc_id"),
        pl.lit(None, dtype=pl.String).alias("duplicate_of"),
        pl.col("_version").alias("contract_version"),
        pl.lit(None, dtype=pl.String).alias("raw"),  # filled in later, for rejected rows only
        "reasons",
        pl.col("reasons").list.join("; ").alias("reason"),
    ).cast(QUARANTINE_SCHEMA)


def _loser_rows(contract: Contract, losers: pl.DataFrame, versions: pl.DataFrame, batch: str) -> pl.DataFrame:
    """Rejected rows (QUARANTINE_SCHEMA) for deduplication's losers, with their contract version
    (``versions``: _file, _line and _version of the valid rows)."""
    return (
        losers.join(
            versions.select("_file", "_line", pl.col("_version").alias("contract_version")),
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
    """The valid rows in SILVER_SCHEMA (plus a typed column per field), each with its content_hash."""
    title = (
        pl.col(f"raw::{contract.title}").str.strip_chars()
        if contract.title
        else pl.lit(None, dtype=pl.String)
    )
    typed_fields = [
        pl.col(f"typed::{n}").cast(PL_TYPES[contract.field_spec(n).type]).alias(f"{FIELD_PREFIX}{n}")
        for n in contract.fields
    ]
    source_id = pl.col(f"raw::{contract.id}").str.strip_chars()
    out = good.with_columns(_metadata_json(contract, good).alias("metadata")).select(
        (pl.lit(f"{contract.source}:") + source_id).alias("doc_id"),
        pl.lit(contract.source).alias("source"),
        source_id.alias("source_id"),
        pl.lit(batch).alias("batch"),
        title.alias("title"),
        pl.when(pl.col("deleted")).then(pl.lit("")).otherwise(pl.col("text")).alias("text"),
        _updated_expr(contract).alias("updated_at"),
        pl.col("deleted"),
        pl.col("metadata"),
        pl.lit(None, dtype=pl.String).alias("near_duplicate_of"),
        pl.col("_file"),
        pl.col("_line"),
        *typed_fields,
    )
    base = [c for c in SILVER_SCHEMA]
    return (
        out.with_columns(content_hashes(out))
        .select([*base, *(c.meta.output_name() for c in typed_fields)])
        .cast(SILVER_SCHEMA)  # type: ignore[arg-type]
    )


def _metadata_json(contract: Contract, good: pl.DataFrame) -> pl.Series:
    """The contract's metadata fields of each row as sorted-key JSON (``{}`` when it has none)."""
    meta_cols = list(contract.metadata)
    if not meta_cols:
        return pl.Series("metadata", ["{}"] * good.height, dtype=pl.String)
    return metadata_json(good.select(pl.col(f"typed::{m}").alias(m) for m in meta_cols))


def metadata_json(values: pl.DataFrame) -> pl.Series:
    """Each row of ``values`` (a column per metadata field, typed) as sorted-key JSON, exactly as
    ``json.dumps(..., sort_keys=True, default=str, ensure_ascii=False)`` writes it."""
    if all(_json_exact(dtype) for dtype in values.dtypes):
        return _metadata_json_columns(values)
    # One encoder for the batch: json.dumps with options builds a new one per call.
    encode = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode
    names = values.columns
    return pl.Series(
        "metadata",
        [encode(dict(zip(names, row, strict=True))) for row in values.iter_rows()],
        dtype=pl.String,
    )


def _json_exact(dtype: pl.DataType) -> bool:
    """Types whose polars JSON text is byte for byte Python's: strings (same escapes, non-ASCII kept),
    integers, booleans and nulls. Floats are not (``1e-07`` against ``1e-7``, ``NaN``), nor dates."""
    return dtype == pl.String or dtype == pl.Boolean or dtype == pl.Null or dtype.is_integer()


def _metadata_json_columns(values: pl.DataFrame) -> pl.Series:
    """Sorted-key JSON objects built column-wise: each value is encoded on its own by polars
    (``{"v":<value>}`` with the wrapper cut off) and joined with Python's ``", "`` and ``": "``."""
    parts: list[pl.Expr] = []
    for i, name in enumerate(sorted(values.columns)):
        key = json.dumps(name, ensure_ascii=False)
        parts.append(pl.lit(("{" if i == 0 else ", ") + key + ": "))
        parts.append(pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(5).str.head(-1))
    parts.append(pl.lit("}"))
    return values.select(pl.concat_str(parts).alias("metadata")).to_series()


def _updated_expr(contract: Contract) -> pl.Expr:
    """``updated_at`` as a UTC datetime: the typed field, else its text parsed leniently, else null."""
    utc = pl.Datetime("us", "UTC")
    if not contract.updated_at:
        return pl.lit(None, dtype=utc)
    if contract.field_spec(contract.updated_at).type == "datetime":
        return pl.col(f"typed::{contract.updated_at}").cast(utc)
    return datetime_expr(pl.col(f"raw::{contract.updated_at}"))


def content_hashes(out: pl.DataFrame) -> pl.Series:
    """sha256 of title, text, metadata and the deleted flag (a null as NUL): what
    :func:`sha256_text` gives for those four parts, from one joined string per row."""
    parts = [pl.col("title"), pl.col("text"), pl.col("metadata"), pl.col("deleted").cast(pl.String)]
    joined = out.select(
        pl.concat_str([p.fill_null("\x00") for p in parts] + [pl.lit("")], separator=FIELD_SEP)
    ).to_series()
    sha = hashlib.sha256
    return pl.Series("content_hash", [sha(t.encode()).hexdigest() for t in joined.to_list()], dtype=pl.String)


DOC_VERSION_COLUMNS = ["doc_id", "content_hash", "updated_at", "deleted"]


def documents_version(documents: pl.DataFrame) -> str:
    """Data version of silver or gold documents: which documents, in which version."""
    return frame_hash(documents, DOC_VERSION_COLUMNS, sort_by=["doc_id"])


def quarantine_version(quarantine: pl.DataFrame) -> str:
    return frame_hash(quarantine, ["_file", "_line", "reason"], sort_by=["_file", "_line"])
