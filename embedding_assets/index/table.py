"""The LanceDB chunk table of one model: its schema, how it is opened or created, and commits
that retry when another writer got there first."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa

from embedding_assets.contracts.model import MetadataField
from embedding_assets.core.retry import Backoff, retry
from embedding_assets.embed.encode import vector_matrix
from embedding_assets.embed.models import model_slug
from embedding_assets.gold.documents import with_metadata_columns

T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ARROW_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}
COMMIT_BACKOFF = Backoff(attempts=8, base_s=0.05, max_s=2.0)


@dataclass(frozen=True)
class AnnSettings:
    """How the ANN index is built and searched, chosen by ``make bench`` (section 4: 1M x 384
    clustered vectors, 2 cores): the best recall@10 with p99 under 10 ms was IVF_HNSW_SQ with 4,096
    rows per IVF partition, 5 probes and ef 100 (0.989; p50 6.2 ms, p99 8.4 ms). Larger partitions
    (16,384 rows) lost recall at every latency; IVF_PQ needs a refine step to pass 0.95, which
    puts its p99 over 10 ms. On real embeddings, perturbed (``--only index_real``), the same setting
    is the curve's knee: recall@10 0.980 at p99 4.2 ms. See ``bench/FINDINGS.md``."""

    rows_per_partition: int = 4096  # IVF partitions = rows / this, at least 1
    nprobes: int = 5
    ef: int | None = 100  # HNSW candidate list per partition (None: LanceDB chooses)
    refine_factor: int | None = None  # re-rank k * this candidates with full vectors

    def apply(self, builder: Any) -> Any:
        """The search settings on a vector or hybrid query builder (ignored without an ANN index)."""
        builder = builder.nprobes(self.nprobes)
        if self.ef is not None:
            builder = builder.ef(self.ef)
        if self.refine_factor is not None:
            builder = builder.refine_factor(self.refine_factor)
        return builder

    def partitions(self, rows: int) -> int:
        return max(1, rows // self.rows_per_partition)

    def index_config(self, rows: int) -> Any:
        from lancedb.index import IvfHnswSq

        return IvfHnswSq(distance_type="cosine", num_partitions=self.partitions(rows))

    def describe(self) -> str:
        return (
            f"IVF_HNSW_SQ rows/partition={self.rows_per_partition} nprobes={self.nprobes} "
            f"ef={self.ef} refine={self.refine_factor}"
        )


ANN_DEFAULTS = AnnSettings()


def quote(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(quote(v) for v in values)})"


def chunked(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


class _Conflict(RuntimeError):
    pass


def _is_conflict(error: Exception) -> bool:
    text = str(error).lower()
    return "conflict" in text or "retryable" in text or "concurrent" in text


def commit(fn: Callable[[], T]) -> T:
    """Run one LanceDB write, retrying commit conflicts with another writer (backoff + jitter)."""

    def once() -> T:
        try:
            return fn()
        except Exception as error:
            if _is_conflict(error):
                raise _Conflict(str(error)) from error
            raise

    return retry(once, COMMIT_BACKOFF, retry_on=(_Conflict,))[0]


def table_name(model: str) -> str:
    """One table per model (``chunks__<slug of its registry name>``): vectors of two models are never mixed."""
    return f"chunks__{model_slug(model)}"


# Where a row came from, for ``search --explain``: written with each upsert, not compared (a row
# whose content is unchanged keeps the gold version it was first indexed from, which holds it too).
LINEAGE = [
    pa.field("model", pa.string()),  # the registry name of the model whose vector this is
    pa.field("embedded_at", pa.timestamp("us", tz="UTC")),
    pa.field("gold_version", pa.int64()),  # the gold/chunks Delta version the row was read from
]
FTS_COLUMNS = ["text", "doc_id"]  # doc ids carry ticket numbers and SKUs, which users search for


def _fragments(table: Any) -> int:
    stats: Any = table.stats()  # a plain dict at run time, typed as a class
    return int(stats["fragment_stats"]["num_fragments"])


@dataclass(frozen=True)
class IndexMaintained:
    """What maintenance did to one model's table."""

    table: str
    fragments_before: int
    fragments_after: int
    versions_before: int
    versions_after: int
    version: int

    def line(self) -> str:
        return (
            f"{self.table}: {self.fragments_before} -> {self.fragments_after} fragments, "
            f"{self.versions_before} -> {self.versions_after} versions kept, version {self.version}"
        )


class ChunkTable:
    """A handle on one model's chunk table; it exists once the first batch is written."""

    def __init__(
        self,
        uri: str,
        model: str,
        dimension: int,
        metadata: Mapping[str, MetadataField] | None = None,
        own_session: bool = False,
    ) -> None:
        """``own_session``: caches of its own (index and metadata), for reading an earlier version:
        the process-wide ones can hold a later version's scalar index, and a filtered search of
        the earlier version then misses rows the later one deleted."""
        self.uri = uri
        self.model = model
        self.dimension = dimension
        self.metadata = dict(metadata or {})  # typed metadata columns, filterable in search
        self.name = table_name(model)
        import lancedb  # 1.4 s to import: only processes that open an index pay it

        self._db = lancedb.connect(uri, session=lancedb.Session() if own_session else None)

    def schema(self) -> pa.Schema:
        return pa.schema(
            [
                pa.field("chunk_id", pa.string(), nullable=False),
                pa.field("doc_id", pa.string()),
                pa.field("source", pa.string()),
                pa.field("batch", pa.string()),
                pa.field("chunk_index", pa.int32()),
                pa.field("title", pa.string()),
                pa.field("text", pa.string()),
                pa.field("chunk_hash", pa.string()),
                pa.field("updated_at", pa.timestamp("us", tz="UTC")),
                pa.field("metadata", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), self.dimension)),
                *LINEAGE,
                *(pa.field(f.name, ARROW_TYPES[f.type]) for f in self.metadata.values()),
            ]
        )

    def exists(self) -> bool:
        return self.name in self._db.list_tables().tables

    def open(self) -> Any:
        """The table, created empty if it does not exist yet."""
        if not self.exists():
            try:
                return self._db.create_table(self.name, schema=self.schema())
            except ValueError:  # created by a concurrent writer in between
                pass
        return self._db.open_table(self.name)

    def version(self) -> int:
        return int(self.open().version) if self.exists() else 0

    def version_at(self, when: datetime) -> int | None:
        """The table's newest version written at or before ``when``; None when it did not exist
        yet, or its versions from then were cleaned up (``lake_maintenance`` keeps the rollback
        window)."""
        if not self.exists():
            return None
        found = [int(v["version"]) for v in self.open().list_versions() if _aware(v["timestamp"]) <= when]
        return max(found) if found else None

    def maintain(self, retention: timedelta) -> IndexMaintained | None:
        """Compact small fragments (and materialise deletions), fold new rows into the ANN and
        full-text indexes, and delete versions older than ``retention`` (the newest is kept; a
        search pinned to a version within it still reads it). None when the table does not exist."""
        if not self.exists():
            return None
        table = self.open()
        before, versions = _fragments(table), len(table.list_versions())
        commit(lambda: table.optimize(cleanup_older_than=retention))
        table = self._db.open_table(self.name)
        return IndexMaintained(
            self.name, before, _fragments(table), versions,
            len(table.list_versions()), int(table.version),
        )  # fmt: skip

    def drop(self) -> bool:
        """Drop the table (a retired model's index); False when there was none."""
        if not self.exists():
            return False
        self._db.drop_table(self.name)
        return True

    def read(self, columns: list[str], where: str | None = None) -> pl.DataFrame:
        if not self.exists():
            return pl.DataFrame(schema={c: pl.String for c in columns})
        dataset = self.open().to_lance()
        present = [c for c in columns if c in dataset.schema.names]
        frame = pl.from_arrow(dataset.to_table(columns=present, filter=where))
        return frame.with_columns(pl.lit(None).alias(c) for c in columns if c not in present).select(columns)  # type: ignore[union-attr]

    def to_arrow_rows(self, chunks: pl.DataFrame) -> pa.Table:
        """Chunk rows with their vectors, in the table's schema (metadata columns typed)."""
        frame = with_metadata_columns(
            chunks.with_columns(pl.col("updated_at").fill_null(EPOCH), pl.lit(self.model).alias("model")),
            self.metadata,
        )
        vectors = vector_matrix(frame["vector"], self.dimension)
        schema = self.open().schema if self.exists() else self.schema()
        columns = {
            f.name: frame[f.name].to_arrow() if f.name in frame.columns else pa.nulls(frame.height, f.type)
            for f in schema
            if f.name != "vector"
        }
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), self.dimension)
        return pa.table({f.name: columns[f.name] for f in schema}).cast(schema)


def _aware(moment: datetime) -> datetime:
    """LanceDB gives a version's time as a naive local time: as an aware one, for comparing."""
    return moment.astimezone(UTC) if moment.tzinfo is None else moment
