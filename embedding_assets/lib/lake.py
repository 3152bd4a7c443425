"""Delta tables of the lakehouse, one folder per ``<layer>/<name>``, partitioned by ``batch``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

T = TypeVar("T")


def _retry(fn: Callable[[], T], attempts: int = 6) -> T:
    """Retry optimistic-concurrency conflicts with exponential backoff and jitter."""
    for attempt in range(attempts):
        try:
            return fn()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Lake:
    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri.rstrip("/")

    def uri(self, table: str) -> str:
        return f"{self.root_uri}/{table}"

    def table(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(table))
        except TableNotFoundError:
            return None

    def version(self, table: str) -> int | None:
        dt = self.table(table)
        return dt.version() if dt is not None else None

    def scan(self, table: str) -> pl.LazyFrame | None:
        if self.table(table) is None:
            return None
        return pl.scan_delta(self.uri(table))

    def read(self, table: str, schema: dict[str, pl.DataType], where: pl.Expr | None = None) -> pl.DataFrame:
        """Rows of a table (all columns of ``schema``, cast to it); empty when the table is missing."""
        lazy = self.scan(table)
        if lazy is None:
            return pl.DataFrame(schema=schema)
        if where is not None:
            lazy = lazy.filter(where)
        names = lazy.collect_schema().names()
        cols = [pl.col(c) if c in names else pl.lit(None).alias(c) for c in schema]
        return lazy.select(cols).collect().cast(schema)  # type: ignore[arg-type]

    def read_batch(self, table: str, batch: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        return self.read(table, schema, pl.col("batch") == batch)

    def overwrite_batch(self, table: str, frame: pl.DataFrame, batch: str, extra_predicate: str = "") -> int:
        """Replace one batch's rows atomically (an empty frame clears it); returns the Delta version."""
        arrow = frame.to_arrow()
        predicate = f"batch = {_quote(batch)}" + (f" AND {extra_predicate}" if extra_predicate else "")

        def write() -> int:
            write_deltalake(
                self.uri(table),
                arrow,
                mode="overwrite",
                predicate=predicate,
                partition_by=["batch"],
                schema_mode="merge",
            )
            return DeltaTable(self.uri(table)).version()

        return _retry(write)

    def append(self, table: str, frame: pl.DataFrame) -> int:
        arrow = frame.to_arrow()

        def write() -> int:
            write_deltalake(
                self.uri(table), arrow, mode="append", partition_by=["batch"], schema_mode="merge"
            )
            return DeltaTable(self.uri(table)).version()

        return _retry(write)
