"""The local SQLite Dagster instance survives a first set-up that a kill interrupted."""

from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.config import Settings
from embedding_assets.defs.instance import local_instance


def _killed_first_setup(home: Path) -> None:
    """What a process killed while Dagster was creating the instance can leave: the cross-run
    index shard's file, without its tables."""
    (home / "history" / "runs").mkdir(parents=True)
    (home / "history" / "runs" / "index.db").touch()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def test_dagster_alone_does_not_repair_it(tmp_path: Path) -> None:
    _killed_first_setup(tmp_path)
    with (
        dg.DagsterInstance.from_config(str(tmp_path)) as instance,
        pytest.raises(dg.DagsterInvalidInvocationError, match="dynamic partitions table"),
    ):
        instance.get_dynamic_partitions("batches")


def test_local_instance_completes_an_interrupted_first_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster"
    _killed_first_setup(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with local_instance(Settings.from_env()) as instance:
        instance.add_dynamic_partitions("batches", ["2026-11-01"])
        assert instance.get_dynamic_partitions("batches") == ["2026-11-01"]
