"""kill -9 at every stage, concurrent syncs: the end state always equals one clean sync's.

Each trial runs ``embedding-assets sync`` as a real process on a fresh copy of the sample's core sources, with
its own SQLite Dagster instance, Delta lake and LanceDB. ``EA_FAULTS`` kills it (SIGKILL, nothing
runs on the way out) at a named point, or the test kills it after a random delay. A second sync
then has to converge on exactly the state of a sync that was never interrupted: the same Delta
rows in every table, the same LanceDB rows (ids, hashes, text and vectors), nothing duplicated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from embedding_assets.defs.forecast import forecast
from embedding_assets_tests.conftest import (
    CORE_SOURCES,
    copy_sample,
    index_snapshot,
    lake_snapshot,
    make_pipeline,
)

pytestmark = pytest.mark.slow

# Every stage, including the states that matter most: data committed to Delta or LanceDB but the
# Dagster materialisation not recorded, and an index build interrupted. With the random kills,
# 20 trials (each a whole sync killed, then a sync to the end): the floor issue 3 set, kept there
# because each trial costs about half a minute of CI.
KILL_POINTS = [
    "bronze.before_write",
    "bronze.after_write",
    "bronze.after_write@5",
    "silver.between_tables",
    "silver.after_write@2",
    "gold.after_write",
    "gold.after_write@2",
    "embed.encode",
    "embed.encode@2",
    "embed.after_write",
    "index.before_merge",
    "index.after_merge",
    "index.after_merge@2",
    "index.build",
    "index.build@3",
    "index.after_build@2",
]
RANDOM_KILLS = 4  # plus kills after a random delay, wherever the process happens to be


def _copy_sample(root: Path) -> Path:
    return copy_sample(root / "data", CORE_SOURCES)


def _env(data: Path, faults: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "EA_DATA_DIR": str(data),
        "EA_EMBEDDER": "hashing",
        "EA_ANN_MIN_ROWS": "100",  # the ANN index is built during the sync, so it can be interrupted
        "DAGSTER_HOME": str(data / "dagster"),
        "EA_LANDING_SETTLE_S": "0",
    }
    env.pop("EA_FAULTS", None)
    if faults:
        env["EA_FAULTS"] = faults
    return env


def _sync_cmd() -> list[str]:
    return [sys.executable, "-m", "embedding_assets.cli", "sync"]


def _sync(data: Path, faults: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _sync_cmd(), env=_env(data, faults), cwd=data.parent, capture_output=True, text=True, timeout=240
    )


def _state(data: Path) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    index = index_snapshot(data)
    assert index["chunk_id"].is_duplicated().sum() == 0, "duplicate chunk ids in LanceDB"
    return lake_snapshot(data), index


def _assert_same(actual: tuple[dict[str, pl.DataFrame], pl.DataFrame], clean: tuple) -> None:
    lake, index = actual
    clean_lake, clean_index = clean
    assert lake.keys() == clean_lake.keys()
    for table, frame in clean_lake.items():
        assert frame.equals(lake[table]), f"{table} differs from a clean run"
    cols = ["chunk_id", "doc_id", "batch", "chunk_hash", "text", "updated_at", "vector"]
    assert index.select(cols).equals(clean_index.select(cols)), "LanceDB differs from a clean run"


@pytest.fixture(scope="module")
def clean_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    data = _copy_sample(tmp_path_factory.mktemp("clean"))
    done = _sync(data)
    assert done.returncode == 0, done.stdout + done.stderr
    return _state(data)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_at_a_named_point_then_sync_converges(tmp_path: Path, point: str, clean_state: tuple) -> None:
    data = _copy_sample(tmp_path)
    killed = _sync(data, faults=f"{point.split('@')[0]}=kill@{point.partition('@')[2] or 1}")
    assert killed.returncode == -signal.SIGKILL, f"the fault at {point} never fired:\n{killed.stdout}"
    again = _sync(data)
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_same(_state(data), clean_state)
    # Nothing is left to do: the interrupted work was neither skipped nor left stale.
    assert _pending_runs(data) == {}


def _pending_runs(data: Path) -> dict[str, list[str]]:
    """The runs a sync would launch now, and which assets they would rebuild."""
    pipeline = make_pipeline(data, ann_min_rows=100)
    with dg.DagsterInstance.from_config(str(data / "dagster")) as instance:
        return {b.batch: b.rebuilt for b in forecast(instance, pipeline).batches}


@pytest.mark.parametrize("seed", range(RANDOM_KILLS))
def test_kill_after_a_random_delay_then_sync_converges(tmp_path: Path, seed: int, clean_state: tuple) -> None:
    data = _copy_sample(tmp_path)
    delay = random.Random(seed).uniform(4.0, 11.0)
    proc = subprocess.Popen(
        _sync_cmd(), env=_env(data), cwd=data.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    again = _sync(data)
    assert again.returncode == 0, again.stdout + again.stderr
    _assert_same(_state(data), clean_state)


@pytest.mark.parametrize("stagger_s", [0.0, 2.5])
def test_two_concurrent_syncs_end_like_one(tmp_path: Path, stagger_s: float, clean_state: tuple) -> None:
    data = _copy_sample(tmp_path)

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            _sync_cmd(),
            env=_env(data),
            cwd=data.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = start()
    time.sleep(stagger_s)
    second = start()
    outputs = [p.communicate(timeout=240)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], "\n---\n".join(outputs)
    # Whatever one skipped because the other was busy, a last sync finishes (and usually has nothing to do).
    last = _sync(data)
    assert last.returncode == 0, last.stdout + last.stderr
    _assert_same(_state(data), clean_state)
    assert _pending_runs(data) == {}
