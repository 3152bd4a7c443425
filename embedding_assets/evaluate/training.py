"""Training data for fine-tuning, from gold: (query, positive, hard negative) triples.

Pure functions over polars frames, no Dagster and no model:

- a query per live document, synthesised from its title (a ticket's subject, a product's name, a
  guide's title) or, without one, from its first sentence; the positive is the document's text
  (less that sentence, so the pair is not a copy);
- a hard negative per query: the best BM25 match among the *other* documents, skipping those that
  are the same document in other words (the same title or the same text), which would be false
  negatives;
- a train/dev split by document (a document's queries are all in one split), stable across runs;
- nothing the canary names: its documents are left out entirely (as queries, positives and
  negatives) and so are its queries, so the canary keeps measuring what the model has not seen.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

TOKEN = re.compile(r"[a-z0-9]+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TRIPLE_SCHEMA = pl.Schema(
    {
        "query": pl.String(),
        "positive": pl.String(),
        "negative": pl.String(),
        "doc_id": pl.String(),
        "negative_doc_id": pl.String(),
        "query_from": pl.String(),  # title or first_sentence
        "split": pl.String(),  # train or dev
    }
)
POSITIVE_CHARS = 2000  # the model reads at most max_seq_length tokens of it anyway

TRIPLES_TABLE = "training/triples"  # the exported triples, a Delta table in the lake


@dataclass(frozen=True)
class TripleSettings:
    dev_percent: int = 10
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


TRIPLE_DEFAULTS = TripleSettings()


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def split_of(doc_id: str, dev_percent: int) -> str:
    """train or dev, by a hash of the document id: stable, and one split per document."""
    bucket = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "big") % 100
    return "dev" if bucket < dev_percent else "train"


def synthesise_queries(docs: pl.DataFrame) -> pl.DataFrame:
    """One (query, positive) per document: its title when it has one (the positive is its text, less
    a heading that repeats the title), else its first sentence (the positive is the rest)."""
    rows = []
    for doc_id, title, text in docs.select("doc_id", "title", "text").iter_rows():
        body, title = (text or "").strip(), (title or "").strip()
        if title:
            heading = re.match(r"#+\s*" + re.escape(title) + r"\s*\n", body)
            rows.append((title, body[heading.end() :] if heading else body, doc_id, "title"))
            continue
        first, *rest = SENTENCE_END.split(body, maxsplit=1)
        if rest and len(tokens(first)) >= 3:
            rows.append((first.strip(), rest[0].strip(), doc_id, "first_sentence"))
    return pl.DataFrame(
        [(q, p[:POSITIVE_CHARS], d, f) for q, p, d, f in rows],
        schema={
            "query": pl.String(),
            "positive": pl.String(),
            "doc_id": pl.String(),
            "query_from": pl.String(),
        },
        orient="row",
    )


class BM25:
    """Okapi BM25 over a fixed set of documents, scored as one sparse product per query batch."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            counts: dict[int, int] = {}
            for tok in tokens(text):
                j = vocab.setdefault(tok, len(vocab))
                counts[j] = counts.get(j, 0) + 1
            lengths[i] = sum(counts.values())
            rows += [i] * len(counts)
            cols += list(counts)
            vals += list(counts.values())
        tf = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)), dtype=np.float64)
        df = np.bincount(tf.indices, minlength=len(vocab))
        idf = np.log(1.0 + (len(texts) - df + 0.5) / (df + 0.5))
        norm = k1 * (1.0 - b + b * lengths / max(lengths.mean(), 1.0))
        weighted = tf.tocoo()
        data = weighted.data * (k1 + 1.0) / (weighted.data + norm[weighted.row]) * idf[weighted.col]
        self.matrix = sparse.csr_matrix((data, (weighted.row, weighted.col)), shape=tf.shape)
        self.vocab = vocab

    def scores(self, queries: list[str]) -> np.ndarray:
        """(queries x documents) BM25 scores."""
        rows, cols = [], []
        for i, q in enumerate(queries):
            for j in {self.vocab[t] for t in tokens(q) if t in self.vocab}:
                rows.append(i)
                cols.append(j)
        q = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(queries), len(self.vocab)))
        return np.asarray((q @ self.matrix.T).todense())


def hard_negatives(pairs: pl.DataFrame, docs: pl.DataFrame, settings: TripleSettings) -> pl.DataFrame:
    """Each pair with the best BM25 match among other documents as its negative; a pair with no
    other document to contrast is dropped."""
    doc_ids, titles, texts = docs["doc_id"].to_list(), docs["title"].to_list(), docs["text"].to_list()
    index = BM25(
        [f"{t or ''} {x or ''}" for t, x in zip(titles, texts, strict=True)],
        settings.bm25_k1,
        settings.bm25_b,
    )
    position = {d: i for i, d in enumerate(doc_ids)}
    same_title: dict[str, set[int]] = {}
    same_text: dict[str, set[int]] = {}
    for i, (t, x) in enumerate(zip(titles, texts, strict=True)):
        same_title.setdefault((t or "").strip().lower(), set()).add(i)
        same_text.setdefault((x or "").strip(), set()).add(i)
    out = []
    scores = index.scores(pairs["query"].to_list()) if pairs.height else np.zeros((0, len(doc_ids)))
    for row, score in zip(pairs.iter_rows(named=True), scores, strict=True):
        own = position[row["doc_id"]]
        skip = (
            {own}
            | same_title.get((titles[own] or "").strip().lower(), set())
            | same_text.get((texts[own] or "").strip(), set())
        )
        for j in np.argsort(-score, kind="stable"):
            if int(j) not in skip:
                out.append({**row, "negative": texts[j][:POSITIVE_CHARS], "negative_doc_id": doc_ids[j]})
                break
    return pl.DataFrame(
        out, schema={**dict(pairs.schema), "negative": pl.String(), "negative_doc_id": pl.String()}
    )


def training_triples(
    docs: pl.DataFrame,
    canary_docs: Iterable[str],
    canary_queries: Iterable[str],
    settings: TripleSettings = TRIPLE_DEFAULTS,
) -> pl.DataFrame:
    """The triples for live gold documents ``docs`` (doc_id, title, text), none of the canary's."""
    held_out = set(canary_docs)
    asked = {q.strip().lower() for q in canary_queries}
    pool = docs.filter(~pl.col("doc_id").is_in(sorted(held_out))).sort("doc_id")
    pairs = synthesise_queries(pool).filter(~pl.col("query").str.to_lowercase().is_in(sorted(asked)))
    triples = hard_negatives(pairs, pool, settings)
    return triples.with_columns(
        pl.col("doc_id")
        .map_elements(lambda d: split_of(d, settings.dev_percent), return_dtype=pl.String())
        .alias("split")
    ).select(list(TRIPLE_SCHEMA))
