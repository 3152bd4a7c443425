"""How good search is, measured on the canary: per mode, mean recall@10, MRR@10 and nDCG@10 of the
documents a model's index returns; and the two rules that act on those figures (a regression
check against the previous evaluation, and the gate a candidate must pass to be promoted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedding_assets.evaluate.canary import CanaryQuery
from embedding_assets.evaluate.metrics import METRICS, Scores, doc_ranking, score
from embedding_assets.index.reader import MODES, IndexReader, SearchMode

FETCH = 30  # chunks fetched per query, enough for 10 distinct documents


@dataclass(frozen=True)
class Evaluation:
    scores: dict[str, Scores]  # by mode
    by_kind: dict[str, dict[str, Scores]] = field(default_factory=dict)  # mode -> query kind -> scores
    index_version: int = 0

    def figures(self) -> dict[str, float]:
        """``<mode>/<metric>`` -> value, for materialisation metadata and the check's plots."""
        return {
            f"{mode}/{name}": round(v, 4)
            for mode, s in self.scores.items()
            for name, v in s.as_dict().items()
        }


def evaluate_index(
    reader: IndexReader,
    queries: Sequence[CanaryQuery],
    vectors: np.ndarray | None,
    modes: Sequence[SearchMode] = MODES,
) -> Evaluation:
    """Every canary query in every mode against one version of the index. ``vectors``: the
    queries' embeddings by the index's own model (None if only fts is asked for)."""
    snap = reader.snapshot()
    if snap is None:
        return Evaluation({str(m): Scores(0.0, 0.0, 0.0, len(queries)) for m in modes})
    relevant = [q.relevant for q in queries]
    scores: dict[str, Scores] = {}
    by_kind: dict[str, dict[str, Scores]] = {}
    for mode in modes:
        rankings = [
            doc_ranking([h["doc_id"] for h in reader.search_snapshot(
                snap, q.query, None if vectors is None else vectors[i], FETCH, mode, "")])
            for i, q in enumerate(queries)
        ]  # fmt: skip
        scores[mode] = score(rankings, relevant)
        kinds = sorted({q.kind for q in queries})
        by_kind[mode] = {
            kind: score([r for r, q in zip(rankings, queries, strict=True) if q.kind == kind],
                        [q.relevant for q in queries if q.kind == kind])
            for kind in kinds
        }  # fmt: skip
    return Evaluation(scores, by_kind, snap.version)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    blocking: bool  # a failure that blocks (ERROR), else a warning
    message: str
    figures: dict[str, float]


def regression(
    current: Mapping[str, float], previous: Mapping[str, float] | None, warn: float = 0.02, fail: float = 0.05
) -> Verdict:
    """Compare an evaluation with the previous one of the same model and canary: a drop of more
    than ``warn`` (2 points) in any figure warns, more than ``fail`` (5 points) fails."""
    if not previous:
        return Verdict(True, False, "first evaluation on this canary: it is the baseline", {})
    drops = {k: round(previous[k] - v, 4) for k, v in current.items() if k in previous}
    worst_key = max(drops, key=lambda k: drops[k]) if drops else ""
    worst = drops.get(worst_key, 0.0)
    figures = {f"drop/{k}": d for k, d in drops.items()} | {"worst_drop": worst}
    if worst > fail:
        return Verdict(
            False, True, f"{worst_key} dropped {worst * 100:.1f} points (more than {fail * 100:g})", figures
        )
    if worst > warn:
        return Verdict(
            False, False, f"{worst_key} dropped {worst * 100:.1f} points (more than {warn * 100:g})", figures
        )
    return Verdict(
        True, False, f"no figure dropped more than {warn * 100:g} points (worst: {worst * 100:+.1f})", figures
    )


def promotion_problems(
    candidate: Mapping[str, float],
    serving: Mapping[str, float],
    mode: str,
    recall_tolerance: float,
    mrr_tolerance: float,
) -> list[str]:
    """Why a candidate may not replace the serving model: its canary recall@10 or MRR@10 in the
    default search mode is below the serving model's by more than the tolerance."""
    problems = []
    for metric, tolerance in (("recall@10", recall_tolerance), ("mrr@10", mrr_tolerance)):
        key = f"{mode}/{metric}"
        if key not in candidate or key not in serving:
            problems.append(f"no canary {key} measured for both models")
        elif candidate[key] < serving[key] - tolerance:
            problems.append(
                f"{key} {candidate[key]:.3f} is below the serving model's {serving[key]:.3f} by more than "
                f"{tolerance * 100:g} points"
            )
    return problems


__all__ = ["METRICS", "Evaluation", "Verdict", "evaluate_index", "promotion_problems", "regression"]
