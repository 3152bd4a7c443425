"""Ranking metrics at the document level: a search returns chunks, a user judges documents.

A ranking is the hits' document ids in rank order, each document counted at its best chunk, cut at
``k`` documents. Relevance is binary (the canary lists the relevant documents)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

K = 10
METRICS = ("recall@10", "mrr@10", "ndcg@10")


def doc_ranking(doc_ids: Sequence[str], k: int = K) -> list[str]:
    """Distinct documents in the order of their first (best) chunk, at most ``k``."""
    return list(dict.fromkeys(doc_ids))[:k]


def recall_at(ranking: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    return len(set(ranking[:k]) & set(relevant)) / len(set(relevant))


def mrr_at(ranking: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    wanted = set(relevant)
    return next((1.0 / rank for rank, doc in enumerate(ranking[:k], start=1) if doc in wanted), 0.0)


def ndcg_at(ranking: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    wanted = set(relevant)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1) if doc in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class Scores:
    """Mean metrics over a query set."""

    recall: float
    mrr: float
    ndcg: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return dict(zip(METRICS, (self.recall, self.mrr, self.ndcg), strict=True))


def score(rankings: Sequence[Sequence[str]], relevant: Sequence[Sequence[str]], k: int = K) -> Scores:
    """Mean recall@k, MRR@k and nDCG@k of ``rankings`` against ``relevant`` (one per query)."""
    n = len(rankings)
    if n == 0:
        return Scores(0.0, 0.0, 0.0, 0)
    pairs = list(zip(rankings, relevant, strict=True))
    return Scores(
        sum(recall_at(r, rel, k) for r, rel in pairs) / n,
        sum(mrr_at(r, rel, k) for r, rel in pairs) / n,
        sum(ndcg_at(r, rel, k) for r, rel in pairs) / n,
        n,
    )
