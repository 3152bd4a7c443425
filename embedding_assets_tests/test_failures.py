"""Transient failures are retried, deterministic ones fail at once with their root cause in one
line naming the file or table: classified by pure functions, and shown on real runs."""

from __future__ import annotations

import errno
from pathlib import Path

import dagster as dg
import pytest
from deltalake.exceptions import CommitFailedError

from embedding_assets.core.errors import TableError, is_transient, root_cause
from embedding_assets.core.lake import Lake
from embedding_assets.defs.sync import Options, sync
from embedding_assets_tests.conftest import CORE_SOURCES, make_pipeline

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF


@pytest.mark.parametrize(
    "error, transient",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/lake/silver/x.parquet"), False),
        (PermissionError(errno.EACCES, "Permission denied", "/lake/gold"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (CommitFailedError("Transaction failed: version already exists"), True),
        (RuntimeError("S3 returned 503 Service Unavailable"), True),
        (
            OSError(
                "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file"
            ),
            False,
        ),
        (ValueError("schema mismatch: column 'x'"), False),
    ],
)
def test_failures_are_classified(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
    assert is_transient(TableError("/lake/t", error)) is transient


def test_the_root_cause_is_one_line_with_errno_and_file() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/lake/gold/part-0.parquet")
        except OSError as inner:
            raise RuntimeError("Exceeded max_retries of 2") from inner
    except RuntimeError as outer:
        line = root_cause(outer)
    assert line == "OSError [ENOSPC] No space left on device: /lake/gold/part-0.parquet"


def test_a_lake_failure_names_its_table(tmp_path: Path) -> None:
    import polars as pl

    lake = Lake(str(tmp_path / "lake"))
    lake.overwrite_batch("gold/documents", pl.DataFrame({"batch": ["b"], "x": [1]}), "b")
    for part in (tmp_path / "lake" / "gold" / "documents").rglob("*.parquet"):
        part.write_bytes(part.read_bytes()[: len(part.read_bytes()) // 2])
    with pytest.raises(TableError, match=r"gold/documents: "):
        lake.read("gold/documents", {"batch": pl.String(), "x": pl.Int64()})


def test_a_corrupt_data_file_fails_its_step_once_with_the_table_named(
    root: Path, instance: dg.DagsterInstance
) -> None:
    quiet = lambda _: None  # noqa: E731
    assert sync(instance, make_pipeline(root), echo=quiet).ok
    for part in (root / "lake" / "gold" / "documents").rglob("*.parquet"):
        # the same size, so the health check before the runs passes; reading it fails
        part.write_bytes(b"\0" * part.stat().st_size)
    summary = sync(instance, make_pipeline(root), echo=quiet, options=Options(force=True))
    assert not summary.ok
    failures = "\n".join(summary.failed)
    assert "gold/documents" in failures and "Exceeded max_retries" not in failures, failures
    assert all(len(line.splitlines()) == 1 for line in summary.failed)
    restarts = [
        r for r in instance.get_records_for_run(summary_run_id(instance)).records
        if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.event_type_value == "STEP_RESTARTED"
    ]  # fmt: skip
    assert restarts == []  # deterministic: not retried


def summary_run_id(instance: dg.DagsterInstance) -> str:
    return instance.get_runs(limit=1)[0].run_id
