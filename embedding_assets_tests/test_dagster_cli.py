"""The Dagster CLI on our code location: it loads, and `dagster asset materialize` works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets_tests.conftest import REPO

pytestmark = pytest.mark.slow
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _env(root: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EA_")}
    env.update(EA_DATA_DIR=str(root), EA_EMBEDDER="hashing", DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1")
    return env


def test_definitions_load_like_dagster_dev(root: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=_env(root, home),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_dagster_asset_materialize_for_a_registered_batch(root: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("batches", ["2026-11-01"])
    out = subprocess.run(
        [
            DAGSTER,
            "asset",
            "materialize",
            "-m",
            "embedding_assets.definitions",
            "--select",
            "*",
            "--partition",
            "2026-11-01",
        ],
        cwd=REPO,
        env=_env(root, home),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for key in (
            ["bronze", "helpdesk"],
            ["silver", "guides"],
            ["gold", "chunks"],
            ["embeddings"],
            ["vector_index"],
        ):
            record = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert record is not None, key
    assert (root / "lancedb" / "chunks__hashing_embedder_v1.lance").is_dir()
