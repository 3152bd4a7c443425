from embedding_assets.lib.planner import Materialized, Node, Status, plan_partition

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
