"""SIGTERM and SIGINT stop a real ``embedding-assets sync`` process at the next safe point within
10 s (exit 143 or 130); a second signal stops it at once; either way the next sync completes the
work to the same lake and index as an uninterrupted sync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedding_assets_tests.conftest import CORE_SOURCES, copy_sample, index_content, lake_snapshot

pytestmark = pytest.mark.slow


def _env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "EA_DATA_DIR": str(root),
        "EA_EMBEDDER": "hashing",
        "DAGSTER_HOME": str(home),
        "EA_LANDING_SETTLE_S": "0",
        **extra,
    }


def _copy(tmp_path: Path, name: str) -> Path:
    return copy_sample(tmp_path / name, CORE_SOURCES)


def _sync(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "embedding_assets.cli", "sync"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _sync_to_end(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("signo, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_sync_at_a_safe_point_and_the_next_sync_completes(
    tmp_path: Path, signo: int, code: int
) -> None:
    reference = _copy(tmp_path, "reference")
    done = _sync_to_end(_env(reference, tmp_path / "ref-home"))
    assert done.returncode == 0, done.stdout + done.stderr

    root = _copy(tmp_path, "stopped")
    env = _env(root, tmp_path / "home", EA_FAULTS="embed.encode=sleep:2")
    proc = _sync(env)
    _wait_for(root / "lake" / "gold" / "chunks")  # well into the first batch's run
    sent = time.time()
    proc.send_signal(signo)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert time.time() - sent < 10, out
    assert f"STOPPED by {signal.Signals(signo).name}" in out and "Traceback" not in out

    again = _sync_to_end(_env(root, tmp_path / "home"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert lake_snapshot(root).keys() == lake_snapshot(reference).keys()
    for table, frame in lake_snapshot(reference).items():
        assert lake_snapshot(root)[table].equals(frame), table
    assert index_content(root).equals(index_content(reference))


def test_a_second_signal_stops_at_once_and_nothing_is_lost(tmp_path: Path) -> None:
    root = _copy(tmp_path, "twice")
    env = _env(root, tmp_path / "home", EA_FAULTS="embed.encode=sleep:30")
    proc = _sync(env)
    _wait_for(root / "lake" / "gold" / "chunks")
    time.sleep(2)  # the embeddings step is asleep in its first encode window (30 s)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143 and time.time() - sent < 5, out
    again = _sync_to_end(_env(root, tmp_path / "home"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reconciliation: hashing-embedder-v1: ok" in again.stdout
