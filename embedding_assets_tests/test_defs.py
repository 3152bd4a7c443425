"""The definitions load once, with the shape users rely on."""

from __future__ import annotations

import dagster as dg
import yaml

from embedding_assets.definitions import defs as lazy_defs
from embedding_assets.defs.embed import EMBEDDING_DEVICE_POOL
from embedding_assets.defs.factory import build_defs
from embedding_assets_tests.conftest import REPO, SAMPLE


def test_definitions_module_loads_sample_contracts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EA_CONTRACTS_DIR", str(SAMPLE / "contracts"))
    defs = lazy_defs()
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for source in ("helpdesk", "catalog", "guides"):
        assert {f"landing_{source}", f"bronze_{source}", f"silver_{source}", f"quarantine_{source}"} <= keys
    assert {"gold_documents", "gold_chunks", "embeddings", "vector_index", "search_index"} <= keys


def test_partitions_are_batches_then_batch_and_model_then_model() -> None:
    """Landing to gold/documents by batch; chunks, vectors and index by batch and model (a
    candidate is a column of shadow partitions); a model's whole index by model."""
    graph = build_defs(SAMPLE / "contracts").resolve_asset_graph()
    batches, models = (
        dg.DynamicPartitionsDefinition(name="batches"),
        dg.DynamicPartitionsDefinition(name="models"),
    )
    by_model = {"gold_chunks", "embeddings", "vector_index"}
    for key in graph.get_all_asset_keys():
        name = key.to_user_string()
        if name in ("index_settings", "canary_queries") or name.startswith("contract_"):
            expected = None
        elif name in ("chunker_settings", "embedding_model", "search_index"):
            expected = models
        elif name in by_model:
            expected = dg.MultiPartitionsDefinition({"batch": batches, "model": models})
        else:
            expected = batches
        assert graph.get(key).partitions_def == expected, key


def test_every_box_in_the_lineage_graph_reads_differently() -> None:
    """The graph labels a node with the last part of its key."""
    graph = build_defs(SAMPLE / "contracts").resolve_asset_graph()
    labels = [key.path[-1] for key in graph.get_all_asset_keys()]
    assert len(labels) == len(set(labels))


def test_materialisable_assets_declare_code_versions_and_what_they_consume() -> None:
    graph = build_defs(SAMPLE / "contracts").resolve_asset_graph()
    chunks = graph.get(dg.AssetKey("gold_chunks"))
    assert chunks.code_version and {"gold_documents", "chunker_settings"} == {
        k.to_user_string() for k in chunks.parent_keys
    }
    embeddings = graph.get(dg.AssetKey("embeddings"))
    assert {"gold_chunks", "embedding_model"} == {k.to_user_string() for k in embeddings.parent_keys}
    silver = graph.get(dg.AssetKey("silver_helpdesk"))
    assert {"bronze_helpdesk", "contract_helpdesk"} == {k.to_user_string() for k in silver.parent_keys}


def test_embedding_steps_go_through_a_pool_of_one() -> None:
    defs = build_defs(SAMPLE / "contracts")
    assert defs.resolve_assets_def("embeddings").op.pool == EMBEDDING_DEVICE_POOL
    config = yaml.safe_load((REPO / "embedding_assets" / "instance.yaml").read_text())
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
        "canary_regression",
    }
    assert dg.AssetCheckKey(dg.AssetKey("vector_index"), "index_matches_gold") in graph.asset_check_keys
    sensor = defs.resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    silver = graph.get(dg.AssetKey("silver_helpdesk"))
    assert "doc_id" in {c.name for c in silver.metadata["dagster/column_schema"].columns}
