from embedding_assets.lib.planner import (
    Materialized,
    Node,
    Status,
    earlier_version,
    forecast_runs,
    plan_partition,
)

NODES = [
    Node("bronze/a", ("landing/a",)),
    Node("silver/a", ("bronze/a",)),
    Node("gold/documents", ("silver/a",)),
    Node("embeddings", ("gold/documents", "config/model")),
]
SOURCES = {"landing/a": "L1", "config/model": "m1"}


def _settled(**overrides: Materialized) -> dict[str, Materialized]:
    state = {
        "bronze/a": Materialized("B1", {"landing/a": "L1"}),
        "silver/a": Materialized("S1", {"bronze/a": "B1"}),
        "gold/documents": Materialized("G1", {"silver/a": "S1"}),
        "embeddings": Materialized("E1", {"gold/documents": "G1", "config/model": "m1"}),
    }
    state.update(overrides)
    return state


def test_new_partition_runs_everything_in_one_run() -> None:
    plan = plan_partition("p", NODES, SOURCES, {})
    assert plan.to_run == ["bronze/a", "silver/a", "gold/documents", "embeddings"]


def test_settled_partition_runs_nothing() -> None:
    assert plan_partition("p", NODES, SOURCES, _settled()).to_run == []


def test_changed_landing_runs_bronze_and_waits_downstream() -> None:
    plan = plan_partition("p", NODES, {**SOURCES, "landing/a": "L2"}, _settled())
    assert plan.to_run == ["bronze/a"]
    assert plan.status["silver/a"] is Status.WAIT


def test_bronze_changed_but_silver_content_same_stops_there() -> None:
    state = _settled(
        **{
            "bronze/a": Materialized("B2", {"landing/a": "L2"}),
            "silver/a": Materialized("S1", {"bronze/a": "B1"}),
        }
    )
    plan = plan_partition("p", NODES, {**SOURCES, "landing/a": "L2"}, state)
    assert plan.to_run == ["silver/a"]
    # After silver re-ran with the same content, nothing downstream is stale.
    state["silver/a"] = Materialized("S1", {"bronze/a": "B2"})
    assert plan_partition("p", NODES, {**SOURCES, "landing/a": "L2"}, state).to_run == []


def test_model_change_reruns_embeddings_only() -> None:
    plan = plan_partition("p", NODES, {**SOURCES, "config/model": "m2"}, _settled())
    assert plan.to_run == ["embeddings"]


def test_failed_blocking_check_holds_back_downstream() -> None:
    state = _settled(**{"silver/a": Materialized("S2", {"bronze/a": "B1"}, blocked="silver_schema")})
    plan = plan_partition("p", NODES, SOURCES, state)
    assert plan.to_run == []
    assert plan.blocked == ["silver/a", "gold/documents", "embeddings"]


def test_failed_run_leaves_partition_stale_for_the_next_plan() -> None:
    # bronze re-ran (B2) but the silver run failed: no silver materialisation was recorded.
    state = _settled(**{"bronze/a": Materialized("B2", {"landing/a": "L1"})})
    assert plan_partition("p", NODES, SOURCES, state).to_run == ["silver/a"]
    assert plan_partition("p", NODES, SOURCES, state).to_run == ["silver/a"]  # still, next time


def test_forecast_follows_predicted_versions_through_every_wave() -> None:
    changed = {**SOURCES, "landing/a": "L2"}
    same_rows = {"bronze/a": "B2", "silver/a": "S1"}  # new bytes, same rows
    assert forecast_runs(NODES, changed, _settled(), same_rows) == ["bronze/a", "silver/a"]
    new_rows = {"bronze/a": "B2", "silver/a": "S2", "gold/documents": "G2"}
    assert forecast_runs(NODES, changed, _settled(), new_rows) == [n.key for n in NODES]
    assert forecast_runs(NODES, SOURCES, _settled(), {}) == []
    assert forecast_runs(NODES, SOURCES, {}, {}) == [n.key for n in NODES]


def test_forecast_stops_at_a_held_blocking_check() -> None:
    state = _settled(**{"silver/a": Materialized("S1", {"bronze/a": "B1"}, blocked="silver_schema")})
    assert forecast_runs(NODES, {**SOURCES, "config/model": "m2"}, state, {}) == []


def test_earlier_version_covers_only_earlier_partitions() -> None:
    versions = {"2026-01": "a", "2026-02": "b", "2026-03": "c"}
    assert earlier_version(versions, "2026-03") == earlier_version(
        {"2026-01": "a", "2026-02": "b"}, "2026-03"
    )
    assert earlier_version(versions, "2026-02") != earlier_version(versions, "2026-03")
    assert earlier_version({**versions, "2026-03": "changed"}, "2026-03") == earlier_version(
        versions, "2026-03"
    )
    assert earlier_version({**versions, "2026-01": "changed"}, "2026-03") != earlier_version(
        versions, "2026-03"
    )


MULTI = [
    Node("bronze/a", ("landing/a",)),
    Node("quarantine/a", ("bronze/a",), step="silver_a"),
    Node("silver/a", ("bronze/a",), step="silver_a"),
    Node("gold/documents", ("silver/a",)),
]


def test_a_multi_asset_half_recorded_runs_whole_and_downstream_waits() -> None:
    # The process died between silver's and quarantine's materialisation events.
    state = {
        "bronze/a": Materialized("B1", {"landing/a": "L1"}),
        "silver/a": Materialized("S1", {"bronze/a": "B1"}),
        "gold/documents": Materialized("G1", {"silver/a": "S1"}),
    }
    plan = plan_partition("p", MULTI, SOURCES, state)
    assert plan.to_run == ["quarantine/a", "silver/a"]
    assert plan.status["gold/documents"] is Status.WAIT
    assert forecast_runs(MULTI, SOURCES, state, {"silver/a": "S1"}) == ["quarantine/a", "silver/a"]
