"""The model lifecycle's pure parts on small inputs: the registry's fold and its atomic commits on a
real Delta table, the canary loader, the ranking metrics and the rules on them, the fusion, and
the training triples."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from embedding_assets.core.lake import Lake
from embedding_assets.embed.registry import (
    ModelSpec,
    Registry,
    RegistryError,
    add_event,
    promote_event,
    retire_event,
    rollback_event,
)
from embedding_assets.evaluate.canary import CanaryError, check_relevant, load_canary
from embedding_assets.evaluate.metrics import mrr_at, ndcg_at, recall_at, score
from embedding_assets.evaluate.search_quality import promotion_problems, regression
from embedding_assets.evaluate.training import BM25, split_of, synthesise_queries, training_triples
from embedding_assets.index.fusion import Fusion

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DAY = timedelta(hours=48)


def spec(name: str, model_id: str | None = None, dimension: int = 384) -> ModelSpec:
    return ModelSpec(name, name, "hashing", model_id or f"id-{name}", "r1", dimension, 256, "tok")


def test_registry_roles_follow_add_promote_rollback_and_retire(tmp_path: Path) -> None:
    registry = Registry(Lake(str(tmp_path / "lake")))
    state, _ = registry.commit(lambda st: add_event(st, spec("a"), NOW, bootstrap=True))
    assert state.serving and state.serving.name == "a"
    state, _ = registry.commit(lambda st: add_event(st, spec("b", dimension=128), NOW))
    assert state.get("b").role == "candidate" and [m.name for m in state.active(NOW, DAY)] == ["a", "b"]
    state, _ = registry.commit(lambda st: promote_event(st, "b", NOW + timedelta(hours=1)))
    assert state.get("b").role == "serving" and state.get("a").role == "previous"
    assert state.rollback_target(NOW + timedelta(hours=2), DAY).name == "a"  # type: ignore[union-attr]
    state, _ = registry.commit(lambda st: rollback_event(st, NOW + timedelta(hours=2), DAY))
    assert state.get("a").role == "serving" and state.get("b").role == "candidate"
    # A promote after the window: the old previous is gone, and a rollback past the window refuses.
    state, _ = registry.commit(lambda st: promote_event(st, "b", NOW + timedelta(hours=3)))
    promoted_at_version = state.version
    late = NOW + timedelta(hours=60)
    assert [m.name for m in state.active(late, DAY)] == ["b"] and [
        m.name for m in state.expired(late, DAY)
    ] == ["a"]
    with pytest.raises(RegistryError, match="more than 48 h ago"):
        rollback_event(state, late, DAY)
    state, _ = registry.commit(lambda st: retire_event(st, "a", late))
    assert state.get("a").role == "retired"
    # The history is kept: time travel gives the registry as it was.
    assert registry.read(version=promoted_at_version).get("a").role == "previous"


def test_registry_refuses_bad_changes_and_writes_nothing(tmp_path: Path) -> None:
    registry = Registry(Lake(str(tmp_path / "lake")))
    registry.commit(lambda st: add_event(st, spec("a"), NOW, bootstrap=True))
    version = registry.read().version
    for make, message in (
        (lambda st: add_event(st, spec("a"), NOW), "registered already"),
        (lambda st: add_event(st, spec("c", model_id="id-a"), NOW), "same weights"),
        (lambda st: add_event(st, spec("bad name"), NOW), "is not allowed"),
        (lambda st: promote_event(st, "nope", NOW), "unknown model 'nope'; registered: a"),
        (lambda st: promote_event(st, "a", NOW), "serving already"),
        (lambda st: rollback_event(st, NOW, DAY), "nothing to roll back to: no model served before"),
        (lambda st: retire_event(st, "a", NOW), "is serving"),
    ):
        with pytest.raises(RegistryError, match=message):
            registry.commit(make)
    assert registry.read().version == version


def test_concurrent_registry_commits_lose_nothing(tmp_path: Path) -> None:
    registry = Registry(Lake(str(tmp_path / "lake")))
    registry.commit(lambda st: add_event(st, spec("a"), NOW, bootstrap=True))
    errors: list[Exception] = []

    def add(name: str) -> None:
        try:
            Registry(Lake(str(tmp_path / "lake"))).commit(lambda st: add_event(st, spec(name), NOW))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"m{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = registry.read()
    assert not errors and sorted(state.models) == ["a", "m0", "m1", "m2", "m3"] and state.last_seq == 5


def test_canary_loader_names_the_file_and_line_of_each_problem(tmp_path: Path) -> None:
    good = {"query": "q", "relevant": ["helpdesk:T-1"], "kind": "keyword"}
    for line, message in (
        ("not json", "not JSON"),
        (json.dumps({**good, "extra": 1}), "unknown keys"),
        (json.dumps({**good, "relevant": []}), "'relevant' must be a non-empty list"),
        (json.dumps({**good, "kind": "odd"}), "'kind' must be one of"),
        (json.dumps({**good, "query": " "}), "'query' must be a non-empty string"),
    ):
        (tmp_path / "c.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(CanaryError, match=f"c.jsonl:2: {message}"):
            load_canary(tmp_path)
    (tmp_path / "c.jsonl").write_text(json.dumps(good) + "\n")
    queries = load_canary(tmp_path)
    check_relevant(queries, {"helpdesk:T-1"})
    with pytest.raises(CanaryError, match=r"c.jsonl:1: helpdesk:T-1\. Fix the canary file"):
        check_relevant(queries, {"helpdesk:T-2"})


def test_ranking_metrics() -> None:
    assert recall_at(["a", "b", "c"], ["c", "z"]) == 0.5
    assert mrr_at(["a", "b", "c"], ["c", "z"]) == pytest.approx(1 / 3)
    assert ndcg_at(["c"], ["c"]) == 1.0 and ndcg_at(["x"], ["c"]) == 0.0
    assert score([["a"], ["x"]], [["a"], ["b"]]).as_dict() == {
        "recall@10": 0.5,
        "mrr@10": 0.5,
        "ndcg@10": 0.5,
    }


def test_regression_warns_over_2_points_and_blocks_over_5() -> None:
    assert regression({"hybrid/recall@10": 0.9}, None).passed
    assert regression({"hybrid/recall@10": 0.885}, {"hybrid/recall@10": 0.9}).passed
    warn = regression({"hybrid/recall@10": 0.87}, {"hybrid/recall@10": 0.9})
    assert not warn.passed and not warn.blocking and "dropped 3.0 points" in warn.message
    fail = regression(
        {"hybrid/recall@10": 0.84, "fts/mrr@10": 0.5}, {"hybrid/recall@10": 0.9, "fts/mrr@10": 0.5}
    )
    assert not fail.passed and fail.blocking and fail.figures["worst_drop"] == pytest.approx(0.06)


def test_promotion_gate_uses_the_tolerances() -> None:
    serving = {"hybrid/recall@10": 0.90, "hybrid/mrr@10": 0.70}
    assert (
        promotion_problems({"hybrid/recall@10": 0.895, "hybrid/mrr@10": 0.695}, serving, "hybrid", 0.01, 0.01)
        == []
    )
    problems = promotion_problems(
        {"hybrid/recall@10": 0.85, "hybrid/mrr@10": 0.70}, serving, "hybrid", 0.01, 0.01
    )
    assert len(problems) == 1 and "recall@10 0.850 is below the serving model's 0.900" in problems[0]
    assert promotion_problems({}, serving, "hybrid", 0.01, 0.01)[0].startswith("no canary hybrid/recall@10")


def test_fusion_is_weighted_reciprocal_rank_with_vector_tie_break() -> None:
    fused = Fusion(k=1, vector_weight=1.0, fts_weight=1.0, depth=10).fuse(["a", "b", "c"], ["c", "b"])
    assert [i for i, _ in fused] == ["c", "b", "a"]  # c: 1/4 + 1/2, b: 1/3 + 1/3, a: 1/2
    # equal scores: the vector ranking decides
    assert [i for i, _ in Fusion(k=60).fuse(["a", "b"], ["b", "a"])] == ["a", "b"]
    assert [i for i, _ in Fusion(k=60, fts_weight=0.0).fuse(["a", "b"], ["b"])] == ["a", "b"]
    with pytest.raises(ValueError, match="invalid fusion"):
        Fusion(k=0)


def _docs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": ["s:1", "s:2", "s:3", "s:4", "g:1"],
            "title": [
                "Kettle: the lid sticks",
                "Kettle: the lid sticks",
                "Heater: the fan rattles",
                "Camera: no night vision",
                None,
            ],
            "text": [
                "Since Monday the lid of my kettle sticks when hot.",
                "The kettle lid sticks, every time it boils.",
                "The heater fan rattles loudly at full power, kettle nearby.",
                "The camera shows nothing at night.",
                "Pair the remote first. Then hold the button for five seconds until it blinks.",
            ],
        }
    )


def test_queries_come_from_titles_or_first_sentences() -> None:
    pairs = synthesise_queries(_docs())
    assert pairs.filter(pl.col("doc_id") == "s:1")["query"].item() == "Kettle: the lid sticks"
    first = pairs.filter(pl.col("doc_id") == "g:1").row(0, named=True)
    assert first["query"] == "Pair the remote first." and first["positive"].startswith("Then hold")
    assert first["query_from"] == "first_sentence"


def test_bm25_ranks_rarer_matching_terms_first() -> None:
    index = BM25(["kettle lid", "kettle kettle fan", "camera night"])
    scores = index.scores(["lid kettle", "night"])
    assert scores[0].argmax() == 0 and scores[1].argmax() == 2 and scores[1][0] == 0.0


def test_triples_have_hard_negatives_from_other_documents_and_leave_out_the_canary() -> None:
    triples = training_triples(_docs(), canary_docs=["s:4"], canary_queries=["pair the remote first."])
    assert set(triples["doc_id"]) == {"s:1", "s:2", "s:3"}  # the canary's document and query are held out
    assert "s:4" not in set(triples["negative_doc_id"])
    one = triples.filter(pl.col("doc_id") == "s:1").row(0, named=True)
    # s:2 has the same title (the same problem): not a negative; the heater ticket mentions the kettle
    assert one["negative_doc_id"] == "s:3"
    assert set(triples["split"]) <= {"train", "dev"}
    assert all(split_of(d, 10) == s for d, s in zip(triples["doc_id"], triples["split"], strict=True))
    assert split_of("s:1", 0) == "train" and split_of("s:1", 100) == "dev"
