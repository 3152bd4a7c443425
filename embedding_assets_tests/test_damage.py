"""Damaged state is found before sync or repair act on it, stops them with exit code 2 and a
recovery path, and the recovery path works: real Delta tables, LanceDB, Dagster and CLI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest

from embedding_assets.defs.health import restore
from embedding_assets.defs.repair import RepairRefused, repair_index
from embedding_assets.defs.sync import Options, sync
from embedding_assets_tests.conftest import CORE_SOURCES, index_snapshot, make_pipeline

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

pytestmark = pytest.mark.slow


def _quiet(_: str) -> None:
    pass


def _docs(root: Path) -> pl.DataFrame:
    return (
        pl.read_delta(str(root / "lake" / "gold" / "documents"))
        .drop("_ingested_at", strict=False)
        .sort("doc_id")
    )


def _index(root: Path) -> pl.DataFrame:
    return index_snapshot(root).select("chunk_id", "chunk_hash", "text").sort("chunk_id")


def _commits(root: Path, table: str) -> list[Path]:
    return sorted((root / "lake" / table / "_delta_log").glob("*.json"))


@pytest.fixture
def synced(root: Path, instance: dg.DagsterInstance) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert sync(instance, make_pipeline(root), echo=_quiet).ok
    return _docs(root), _index(root)


def test_a_deleted_latest_commit_stops_sync_and_restore_then_force_recovers(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    docs, index = synced
    _commits(root, "gold/documents")[-1].unlink()
    pipeline = make_pipeline(root)
    summary = sync(instance, pipeline, echo=_quiet)
    assert not summary.ok and summary.runs == 0
    text = summary.render()
    assert "gold/documents" in text and "went back" in text
    assert "embedding-assets restore gold/documents" in text and "sync --force" in text
    assert _index(root).equals(index)  # nothing acted on the damage
    with pytest.raises(RepairRefused):  # and repair refuses to follow gold down
        repair_index(instance, pipeline)
    assert "accepted version" in restore(instance, pipeline, "gold/documents")
    again = sync(instance, pipeline, echo=_quiet, options=Options(force=True))
    assert again.ok, again.render()
    assert again.totals["chunks_embedded"] == 0
    assert _docs(root).drop("ingested_at", strict=False).equals(docs.drop("ingested_at", strict=False))
    assert _index(root).equals(index)


def test_a_gap_in_the_log_is_recovered_from_the_last_intact_version(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    docs, index = synced
    commits = _commits(root, "gold/documents")
    assert len(commits) >= 3
    commits[1].unlink()
    pipeline = make_pipeline(root)
    summary = sync(instance, pipeline, echo=_quiet)
    assert not summary.ok and "its log cannot be read" in summary.render()
    message = restore(instance, pipeline, "gold/documents")
    assert "rewrote it from version 0" in message and "damaged table is kept" in message
    assert list((root / "lake" / "gold").glob("documents.damaged-*"))
    again = sync(instance, pipeline, echo=_quiet, options=Options(force=True))
    assert again.ok, again.render()
    assert _docs(root).height == docs.height
    assert _index(root).equals(index)


def test_a_truncated_data_file_is_named_and_recovered(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    _, index = synced
    part = sorted((root / "lake" / "gold" / "chunks").rglob("*.parquet"))[-1]
    part.write_bytes(part.read_bytes()[:64])
    pipeline = make_pipeline(root)
    summary = sync(instance, pipeline, echo=_quiet)
    assert "gold/chunks" in summary.render() and "data file damaged" in summary.render()
    assert "rewrote it" in restore(instance, pipeline, "gold/chunks")
    again = sync(instance, pipeline, echo=_quiet, options=Options(force=True))
    assert again.ok, again.render()
    assert again.totals["chunks_embedded"] == 0
    assert _index(root).equals(index)


def test_a_deleted_index_is_rebuilt_by_sync_without_embedding(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    _, index = synced
    shutil.rmtree(root / "lancedb")
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert summary.ok, summary.render()
    assert "rebuilt from the embeddings table" in summary.render() and ", 0 embedded" in summary.render()
    assert _index(root).equals(index)


def test_repair_refuses_a_large_delete_without_force_and_dry_run_changes_nothing(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    table = lancedb.connect(str(root / "lancedb")).open_table(
        lancedb.connect(str(root / "lancedb")).list_tables().tables[0]
    )
    rows = pl.from_arrow(table.to_arrow()).head(40)
    table.add(
        rows.with_columns(pl.concat_str(pl.lit("ghost-"), pl.col("chunk_id")).alias("chunk_id")).to_arrow()
    )  # type: ignore[union-attr]
    pipeline = make_pipeline(root)
    version = table.version
    plan = repair_index(instance, pipeline, dry_run=True)
    assert "delete 40" in plan.render() and "nothing was changed" in plan.render()
    with pytest.raises(RepairRefused, match="--force"):
        repair_index(instance, pipeline)
    assert lancedb.connect(str(root / "lancedb")).open_table(table.name).version == version
    forced = repair_index(instance, pipeline, force=True)
    assert forced.deleted == 40 and forced.after.ok


def test_the_cli_exits_2_on_damage_and_names_the_recovery(
    root: Path, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    env = {**os.environ, "EA_DATA_DIR": str(root), "EA_EMBEDDER": "hashing", "DAGSTER_HOME": str(tmp_path / "home"),
           "EA_LANDING_SETTLE_S": "0"}  # fmt: skip
    (tmp_path / "home").mkdir()
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "embedding_assets.cli", *a],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run("sync").returncode == 0
    shutil.rmtree(root / "lake" / "gold" / "documents")
    for command in (["sync"], ["repair"]):
        out = run(*command)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert (
            "lake table gold/documents: missing" in out.stdout and "Traceback" not in out.stdout + out.stderr
        )


def test_sync_fails_when_reconciliation_reports_drift(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    db = lancedb.connect(str(root / "lancedb"))
    table = db.open_table(db.list_tables().tables[0])
    ghost = pl.from_arrow(table.to_arrow()).head(1)
    table.add(ghost.with_columns(pl.lit("ghost-0").alias("chunk_id")).to_arrow())  # type: ignore[union-attr]
    tickets = root / "landing" / "helpdesk" / "2026-11-08" / "tickets.jsonl"
    tickets.write_text(tickets.read_text().replace("firmware", "firmware update", 1))
    summary = sync(instance, make_pipeline(root), echo=_quiet)
    assert summary.runs_by["batch"] == 1 and summary.reconciliation.startswith("DRIFT"), summary.render()
    assert not summary.ok


def test_repair_works_beside_a_broken_contract(
    root: Path, instance: dg.DagsterInstance, synced: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    (root / "contracts" / "guides.yaml").write_text("a: &a [1]\nb: *a\n")
    report = repair_index(instance, make_pipeline(root))
    assert report.after.ok and report.deleted == 0
