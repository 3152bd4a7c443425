"""The Dagster CLI on our code location: it loads, and `dagster asset materialize` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets_tests.conftest import (
    CORE_SOURCES,
    HASHING,
    REPO,
    materializations,
    open_index,
    table_versions,
)

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

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


def readme_ci_recipe() -> str:
    """The command line of the README's "In CI" section, exactly as written there."""
    section = (REPO / "README.md").read_text().split("## In CI", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip()


def _bash(script: str, root: Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = _env(root, home or root / "unused")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    if home is None:
        env.pop("DAGSTER_HOME")
    return subprocess.run(
        ["bash", "-ec", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )


def test_the_readme_ci_recipe_works_on_an_empty_instance(root: Path) -> None:
    recipe = readme_ci_recipe()
    assert recipe.startswith("export DAGSTER_HOME=$(mktemp -d); embedding-assets register\ndagster asset")
    assert recipe.endswith("--select 'tag:ea/partitions=model' --partition all-MiniLM-L6-v2")
    # The recipe names the default model; the test embedder stands in for it (same partitions).
    out = _bash(recipe.replace("all-MiniLM-L6-v2", HASHING), root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "registered: 2026-11-01, 2026-11-08" in out.stdout and f"models: {HASHING}" in out.stdout
    assert out.stderr.count("RUN_SUCCESS") == 3  # the batch, its model partition, the evaluation
    index = open_index(str(root / "lancedb")).table.read(["batch"])
    assert set(index["batch"]) == {"2026-11-01"} and index.height > 0


def test_materialising_an_unchanged_partition_from_the_cli_commits_nothing(
    root: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    materialize = (
        "embedding-assets register; dagster asset materialize -m embedding_assets.definitions --select 'tag:ea/partitions=batch' "
        "--partition 2026-11-08; dagster asset materialize -m embedding_assets.definitions "
        f"--select 'tag:ea/partitions=batch_model' --partition '2026-11-08|{HASHING}'"
    )
    first = _bash(materialize, root, home)
    assert first.returncode == 0, first.stderr[-3000:]
    versions = table_versions(root)
    again = _bash(materialize, root, home)
    assert again.returncode == 0, again.stderr[-3000:]
    assert table_versions(root) == versions  # 0 Delta versions, 0 LanceDB versions
    with dg.DagsterInstance.from_config(str(home)) as instance:
        latest = materializations(instance, "embeddings", "2026-11-08")[-1]
        assert latest.metadata["memo"].value == "kept" and latest.metadata["chunks_embedded"].value == 0
        assert {
            m.metadata["memo"].value
            for m in (
                materializations(instance, k, "2026-11-08")[-1]
                for k in ("bronze_helpdesk", "silver_guides", "gold_documents", "gold_chunks", "vector_index")
            )
        } == {"kept"}
