from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from embedding_assets.defs.resources import PipelineResource
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.table import ChunkTable
from embedding_assets.index.writer import IndexWriter

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data"
# The sources that take every stage's path (JSONL, Markdown by sections, CSV, and the web shop's
# feed fused with the catalogue into products). The HTML and PDF sources add only extraction
# time to a sync; the tests that kill, stop or move whole syncs copy these four, which cuts each
# sync by about a quarter, and test_formats covers the other two.
CORE_SOURCES = ("helpdesk", "guides", "catalog", "storefront")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCEDB_LOG", "error")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the repository's data/ by accident."""
    monkeypatch.setenv("EA_DATA_DIR", str(tmp_path / "data"))
    for name in (
        "EA_MODEL",
        "EA_EMBEDDER",
        "EA_LAKE_URI",
        "EA_LANCEDB_URI",
        "EA_LANDING_DIR",
        "EA_CONTRACTS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def copy_sample(target: Path, sources: tuple[str, ...] | None = None) -> Path:
    """The sample's contracts (and entity files) and landing batches under ``target``: every
    source, or only ``sources``."""
    if sources is None:
        shutil.copytree(SAMPLE / "contracts", target / "contracts")
        shutil.copytree(SAMPLE / "landing", target / "landing")
        return target
    shutil.copytree(SAMPLE / "contracts" / "entities", target / "contracts" / "entities")
    for source in sources:
        shutil.copy(SAMPLE / "contracts" / f"{source}.yaml", target / "contracts" / f"{source}.yaml")
        shutil.copytree(SAMPLE / "landing" / source, target / "landing" / source)
    return target


@pytest.fixture
def root(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A copy of the sample contracts and landing batches: every source, or the test module's
    ``SAMPLE_SOURCES`` where it sets them."""
    return copy_sample(tmp_path / "data", getattr(request.module, "SAMPLE_SOURCES", None))


def make_pipeline(root: Path, **overrides: object) -> PipelineResource:
    fields: dict[str, object] = {
        "landing_dir": str(root / "landing"),
        "contracts_dir": str(root / "contracts"),
        "lake_uri": str(root / "lake"),
        "lancedb_uri": str(root / "lancedb"),
        "canary_dir": str(root / "canary"),
        "embedder_kind": "hashing",
        "device": "cpu",
        "landing_settle_s": 0.0,
    }
    fields.update(overrides)
    return PipelineResource(**fields)  # type: ignore[arg-type]


@pytest.fixture
def pipeline(root: Path) -> PipelineResource:
    return make_pipeline(root)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


# Wall-clock columns: ingestion, embedding and failure times, and when a registry event was
# written ("at"), differ between two otherwise identical runs.
VOLATILE = ("_ingested_at", "embedded_at", "failed_at", "at")


def lake_snapshot(root: Path) -> dict[str, pl.DataFrame]:
    """Every Delta table's rows, sorted, without wall-clock columns."""
    out = {}
    for log in sorted((root / "lake").rglob("_delta_log")):
        table = log.parent
        frame = pl.read_delta(str(table))
        frame = frame.drop([c for c in frame.columns if c in VOLATILE])
        sortable = [c for c, t in frame.schema.items() if t not in (pl.List(pl.Float32), pl.Binary)]
        out[str(table.relative_to(root / "lake"))] = frame.sort(sortable)
    return out


HASHING = "hashing-embedder-v1"  # the registry name of the test embedder, the default in tests
MODEL_ASSETS = ("gold_chunks", "embeddings", "vector_index")


def partition_of(key: str, batch: str, model: str = HASHING) -> str:
    """The partition of ``key`` for a batch: ``batch|model`` for the assets built per model."""
    from embedding_assets.defs.keys import batch_model

    return batch_model(batch, model) if key in MODEL_ASSETS and "|" not in batch else batch


def materializations(
    instance: dg.DagsterInstance, key: str, partition: str | None = None
) -> list[dg.AssetMaterialization]:
    """Every materialisation of ``key`` (or of one partition; a batch means the default model's
    partition of that batch for the assets built per model), oldest first."""
    partition = partition_of(key, partition) if partition else None
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey.from_user_string(key), asset_partitions=[partition] if partition else None
        ),
        limit=10_000,
        ascending=True,
    )
    return [r.asset_materialization for r in result.records if r.asset_materialization is not None]


def materialization_count(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> int:
    """Materialisations that rebuilt the partition (memoised ones that kept it are not counted)."""
    return sum(m.metadata["memo"].value == "rebuilt" for m in materializations(instance, key, partition))


def index_snapshot(root: Path, model_id: str = "hashing-embedder-v1") -> pl.DataFrame:
    """Every LanceDB row of the model's table (vectors included), sorted by chunk id."""
    import lancedb

    from embedding_assets.embed.embedder import model_slug

    db = lancedb.connect(str(root / "lancedb"))
    table = db.open_table(f"chunks__{model_slug(model_id)}")
    return pl.from_arrow(table.to_arrow()).sort("chunk_id")  # type: ignore[return-value]


def index_content(root: Path, model_id: str = "hashing-embedder-v1") -> pl.DataFrame:
    """The model's LanceDB rows without vectors or wall-clock columns: what two runs over the
    same landing must agree on."""
    return index_snapshot(root, model_id).drop(["vector", *VOLATILE], strict=False)


@dataclass
class Index:
    """One model's chunk table with its writer and reader, as the pipeline opens them."""

    table: ChunkTable
    writer: IndexWriter
    reader: IndexReader


def open_index(
    uri: str,
    model_id: str = "hashing-embedder-v1",
    dimension: int = 384,
    ann_min_rows: int = 5000,
    **meta: Any,
) -> Index:
    table = ChunkTable(uri, model_id, dimension, meta.get("metadata"))
    return Index(table, IndexWriter(table, ann_min_rows=ann_min_rows), IndexReader(table))


@dataclass
class BatchRuns:
    """The runs of one batch's whole graph: its batch run, then one run per active model."""

    results: list[dg.ExecuteInProcessResult]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    def get_asset_materialization_events(self) -> list[Any]:
        return [e for r in self.results for e in r.get_asset_materialization_events()]


def materialise(
    pipeline: PipelineResource, instance: dg.DagsterInstance, partition: str, shape: str
) -> dg.ExecuteInProcessResult:
    """One run of a partition's assets: a batch's (``batch``), a batch and model's
    (``batch_model``) or a model's evaluation (``model``)."""
    from embedding_assets.defs.factory import build_defs, materialisable_keys

    defs = build_defs(Path(pipeline.contracts_dir or ""), pipeline)
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        partition_key=partition,
        asset_selection=materialisable_keys(list(defs.assets or []), shape),
        raise_on_error=False,
    )


def materialise_batch(
    pipeline: PipelineResource, instance: dg.DagsterInstance, batch: str, tags: dict[str, str] | None = None
) -> BatchRuns:
    """The runs of one batch's whole graph, as a backfill from the UI's "Materialize all" launches
    them: up to gold/documents, then the chunks, vectors and index of every active model."""
    from embedding_assets.defs.factory import build_defs, materialisable_keys
    from embedding_assets.defs.keys import batch_model
    from embedding_assets.defs.models import register_models

    register_models(instance, pipeline.ensure_registry())
    defs = build_defs(Path(pipeline.contracts_dir or ""), pipeline)
    job = defs.resolve_implicit_global_asset_job_def()
    partitions = [(batch, "batch")] + [
        (batch_model(batch, s.name), "batch_model") for s in pipeline.active_models()
    ]
    results = []
    for partition, shape in partitions:
        results.append(job.execute_in_process(
            instance=instance,
            partition_key=partition,
            asset_selection=materialisable_keys(list(defs.assets or []), shape),
            raise_on_error=False,
            tags=tags or {},
        ))  # fmt: skip
        if not results[-1].success:
            break
    return BatchRuns(results)


def memo_of(result: Any) -> dict[str, str]:
    """{asset: "rebuilt" or "kept"} for every materialisation of a run."""
    return {
        e.asset_key.to_user_string(): str(e.step_materialization_data.materialization.metadata["memo"].value)
        for e in result.get_asset_materialization_events()
    }


def table_versions(root: Path) -> dict[str, int]:
    """The current version of every Delta table and LanceDB table under ``root``."""
    import lancedb
    from deltalake import DeltaTable

    out = {
        str(log.parent.relative_to(root)): DeltaTable(str(log.parent)).version()
        for log in root.rglob("_delta_log")
    }
    if (root / "lancedb").is_dir():
        db = lancedb.connect(str(root / "lancedb"))
        out.update({f"lancedb/{name}": int(db.open_table(name).version) for name in db.list_tables().tables})
    return out
