"""Delta tables of the lakehouse, one folder per ``<layer>/<name>``, partitioned by ``batch``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from embedding_assets.core.errors import naming_table
from embedding_assets.core.retry import Backoff, retry
from embedding_assets.core.stop import checkpoint

T = TypeVar("T")
COMMIT_BACKOFF = Backoff(attempts=8, base_s=0.05, max_s=2.0)


def _retry(fn: Callable[[], T]) -> T:
    """Optimistic concurrency: a commit that lost a race is retried (re-reading the table)."""
    return retry(fn, COMMIT_BACKOFF, retry_on=(CommitFailedError,))[0]


_WRITE_ROWS = 65_536


def _batches(frame: pl.DataFrame) -> pa.RecordBatchReader:
    """``frame`` as a stream of record batches of ``_WRITE_ROWS`` rows, each converted when the
    writer asks for it. Handed a whole table, deltalake writes several times slower and holds a
    second copy of it: 1M rows of text took 2.9 s and 1.1 GB more, streamed 0.5 s and 0.6 GB.
    A new stream each call, so a retried write reads the rows again from the start."""

    def batches() -> Iterator[pa.RecordBatch]:
        for offset in range(0, frame.height, _WRITE_ROWS):
            yield from frame.slice(offset, _WRITE_ROWS).to_arrow().to_batches()

    return pa.RecordBatchReader.from_batches(frame.slice(0, 0).to_arrow().schema, batches())


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _matches(batch: str, where: Mapping[str, str] | None) -> pl.Expr:
    expr = pl.col("batch") == batch
    for column, value in (where or {}).items():
        expr &= pl.col(column) == value
    return expr


@dataclass(frozen=True)
class Inserted:
    version: int  # the table's version after the write
    inserted: int  # rows that were new


@dataclass(frozen=True)
class Written:
    version: int  # the table's version after the write (the current one when nothing was committed;
    # -1 when there is no table: nothing was ever written to it)
    committed: bool


@dataclass(frozen=True)
class Maintained:
    """What maintenance did to one table."""

    table: str
    files_before: int  # data files of the current version before compaction
    files_after: int
    compacted: int  # small files merged into larger ones
    vacuumed: int  # files no version within the retention needed, deleted
    version: int

    def line(self) -> str:
        return (
            f"{self.table}: {self.files_before} -> {self.files_after} files "
            f"({self.compacted} compacted, {self.vacuumed} vacuumed), version {self.version}"
        )


def same_rows(existing: pl.DataFrame, frame: pl.DataFrame, volatile: Sequence[str] = ()) -> bool:
    """Whether two frames hold the same rows in any order, ``volatile`` columns aside."""
    if existing.height != frame.height:
        return False
    if frame.height == 0:
        return True
    columns = [c for c in frame.columns if c not in volatile]
    keys = [c for c in columns if not isinstance(frame.schema[c], pl.List | pl.Array | pl.Struct | pl.Binary)]
    left, right = (f.select(columns).sort(keys, nulls_last=True) for f in (existing, frame))
    return left.equals(right)


def _table_of(lake: Lake, table: str, *_: Any, **__: Any) -> str:
    return lake.uri(table)


_about_table = naming_table(_table_of)  # a failure names its table, Rust panics included


class Lake:
    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri.rstrip("/")

    def uri(self, table: str) -> str:
        return f"{self.root_uri}/{table}"

    @_about_table
    def table(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(table))
        except TableNotFoundError:
            return None

    @_about_table
    def version(self, table: str) -> int | None:
        dt = self.table(table)
        return dt.version() if dt is not None else None

    def version_at(self, table: str, when: datetime) -> int | None:
        """The table's newest version committed at or before ``when``; None when the table did not
        exist yet (or its log no longer reaches back that far)."""
        dt = self.table(table)
        if dt is None:
            return None
        cutoff = when.timestamp() * 1000
        found = [int(h["version"]) for h in dt.history() if h.get("timestamp", math.inf) <= cutoff]
        return max(found) if found else None

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame | None:
        if self.table(table) is None:
            return None
        return pl.scan_delta(self.uri(table), version=version)

    @_about_table
    def read(
        self,
        table: str,
        schema: Mapping[str, pl.DataType],
        where: pl.Expr | None = None,
        version: int | None = None,
    ) -> pl.DataFrame:
        """Rows of a table (all columns of ``schema``, cast to it), now or at a Delta ``version``;
        empty when the table is missing."""
        lazy = self.scan(table, version)
        if lazy is None:
            return pl.DataFrame(schema=schema)
        if where is not None:
            lazy = lazy.filter(where)
        names = lazy.collect_schema().names()
        cols = [pl.col(c) if c in names else pl.lit(None).alias(c) for c in schema]
        return lazy.select(cols).collect().cast(schema)  # type: ignore[arg-type]

    def read_batch(
        self,
        table: str,
        batch: str,
        schema: Mapping[str, pl.DataType],
        where: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> pl.DataFrame:
        """One batch's rows (those matching ``where``'s column values too)."""
        return self.read(table, schema, _matches(batch, where), version)

    @_about_table
    def batches_before(
        self, table: str, batch: str, n: int, schema: dict[str, pl.DataType], where: pl.Expr | None = None
    ) -> pl.DataFrame:
        """Every column of the rows of the ``n`` batches before ``batch`` (a drift reference);
        an empty frame of ``schema`` when there are none."""
        lazy = self.scan(table)
        if lazy is None:
            return pl.DataFrame(schema=schema)
        lazy = lazy.filter(where) if where is not None else lazy
        earlier = lazy.filter(pl.col("batch") < batch).select("batch").unique().collect()["batch"].sort()
        return lazy.filter(pl.col("batch").is_in(earlier.tail(n).implode())).collect()

    def _ensure(
        self, table: str, frame: pl.DataFrame, partition_by: Sequence[str] = ("batch",)
    ) -> DeltaTable:
        """Open the table, creating it empty first if needed. Creating is the one step where two
        writers could both see 'no table' and then blindly append; an explicit, exclusive create
        (losers get 'already exists') closes that race."""
        dt = self.table(table)
        if dt is not None:
            return dt
        try:
            write_deltalake(
                self.uri(table),
                frame.slice(0, 0).to_arrow(),
                mode="error",
                partition_by=list(partition_by) or None,
            )
        except CommitFailedError:
            pass
        except DeltaError as error:
            if "already exists" not in str(error):
                raise
        return DeltaTable(self.uri(table))

    @_about_table
    def count(self, table: str, batch: str, where: Mapping[str, str] | None = None) -> int:
        """Rows of one batch (and ``where``'s column values); 0 when the table is missing."""
        lazy = self.scan(table)
        if lazy is None:
            return 0
        return int(lazy.filter(_matches(batch, where)).select(pl.len()).collect().item())

    @_about_table
    def overwrite_batch(
        self,
        table: str,
        frame: pl.DataFrame,
        batch: str,
        where: Mapping[str, str] | None = None,
        volatile: Sequence[str] = (),
    ) -> Written:
        """Replace one batch's rows (those matching ``where`` too) in one atomic commit; an empty
        frame clears them. When the table already holds exactly these rows (``volatile`` columns,
        such as wall-clock times, aside) nothing is committed, so a re-run writes nothing."""
        existing = self.read(table, dict(frame.schema), _matches(batch, where))
        if same_rows(existing, frame, volatile):
            current = self.version(table)
            return Written(-1 if current is None else current, committed=False)
        predicate = " AND ".join(f"{c} = {_quote(v)}" for c, v in {"batch": batch, **(where or {})}.items())

        def write() -> int:
            checkpoint(f"writing {table}")
            self._ensure(table, frame)
            write_deltalake(
                self.uri(table),
                _batches(frame),
                mode="overwrite",
                predicate=predicate,
                partition_by=["batch"],
                schema_mode="merge",
            )
            return DeltaTable(self.uri(table)).version()

        return Written(_retry(write), committed=True)

    @_about_table
    def replace(self, table: str, frame: pl.DataFrame, volatile: Sequence[str] = ()) -> Written:
        """Replace a whole (unpartitioned) table in one atomic commit; the earlier contents stay
        readable by time travel. Nothing is committed when it holds these rows already."""
        if same_rows(self.read(table, dict(frame.schema)), frame, volatile):
            current = self.version(table)
            return Written(-1 if current is None else current, committed=False)

        def write() -> int:
            checkpoint(f"writing {table}")
            self._ensure(table, frame, partition_by=())
            write_deltalake(self.uri(table), _batches(frame), mode="overwrite", schema_mode="overwrite")
            return DeltaTable(self.uri(table)).version()

        return Written(_retry(write), committed=True)

    @_about_table
    def insert_new(
        self, table: str, frame: pl.DataFrame, keys: list[str], partition_by: Sequence[str] = ("batch",)
    ) -> Inserted:
        """Append the rows whose ``keys`` are not in the table yet: an idempotent append.

        Two writers racing to append the same rows conflict at commit; the loser retries against
        the new snapshot and inserts nothing, so there are never duplicates. ``inserted`` tells a
        caller using the keys as a compare-and-set (the registry) whether its rows went in."""
        on = " AND ".join(f"t.{k} = s.{k}" for k in keys)

        def write() -> Inserted:
            checkpoint(f"writing {table}")
            dt = self._ensure(table, frame, partition_by)
            metrics = (
                dt.merge(_batches(frame), predicate=on, source_alias="s", target_alias="t")
                .when_not_matched_insert_all()
                .execute()
            )
            return Inserted(
                DeltaTable(self.uri(table)).version(), int(metrics.get("num_target_rows_inserted", 0))
            )

        return _retry(write)

    @_about_table
    def maintain(self, table: str, retention_h: float) -> Maintained | None:
        """Compact the table's small files (OPTIMIZE, one commit; the rows do not change), then
        VACUUM the files no version newer than ``retention_h`` hours needs, checkpoint the log
        and drop expired log entries. Time travel within the retention keeps working. None when
        the table does not exist."""
        before = self.table(table)
        if before is None:
            return None
        files_before = len(before.file_uris())

        def compact() -> dict[str, Any]:
            return dict(DeltaTable(self.uri(table)).optimize.compact())

        metrics = _retry(compact)
        dt = DeltaTable(self.uri(table))
        removed = dt.vacuum(
            retention_hours=max(0, math.ceil(retention_h)), dry_run=False, enforce_retention_duration=False
        )
        dt.create_checkpoint()
        dt.cleanup_metadata()
        return Maintained(
            table, files_before, len(DeltaTable(self.uri(table)).file_uris()),
            int(metrics.get("numFilesRemoved", 0)), len(removed), dt.version(),
        )  # fmt: skip
