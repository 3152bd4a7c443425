"""The definitions load once, with the shape users rely on."""

from __future__ import annotations

import dagster as dg
import yaml

from embedding_assets.definitions import defs as lazy_defs
from embedding_assets.defs.assets import EMBEDDING_DEVICE_POOL
from embedding_assets.defs.factory import build_defs
from embedding_assets_tests.conftest import REPO, SAMPLE


def test_definitions_module_loads_sample_contracts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EA_CONTRACTS_DIR", str(SAMPLE / "contracts"))
    defs = lazy_defs()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for source in ("helpdesk", "catalog", "guides"):
        assert {f"landing/{source}", f"bronze/{source}", f"silver/{source}", f"quarantine/{source}"} <= keys
    assert {"gold/documents", "gold/chunks", "embeddings", "vector_index"} <= keys


def test_every_asset_shares_the_batches_partitions() -> None:
    defs = build_defs(SAMPLE / "contracts")
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def == dg.DynamicPartitionsDefinition(name="batches"), key


def test_embedding_steps_go_through_a_pool_of_one() -> None:
    defs = build_defs(SAMPLE / "contracts")
    assert defs.resolve_assets_def("embeddings").op.pool == EMBEDDING_DEVICE_POOL
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_blocking_checks_and_sensor_are_declared() -> None:
    defs = build_defs(SAMPLE / "contracts")
    graph = defs.resolve_asset_graph()
    blocking = {
        key.name
        for key in graph.asset_check_keys
        if graph.get_check_spec(key).blocking  # type: ignore[attr-defined]
    }
    assert blocking == {
        "silver_schema",
        "rows_accounted",
        "contract_compatible",
        "quarantine_rate",
        "snapshot_deletions",
        "vectors_valid",
        "embedding_failures",
    }
    sensor = defs.resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    silver = graph.get(dg.AssetKey(["silver", "helpdesk"]))
    assert "doc_id" in {c.name for c in silver.metadata["dagster/column_schema"].columns}
