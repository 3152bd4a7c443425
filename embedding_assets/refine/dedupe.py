"""Deduplication: one row per document, and every loser recorded with its winner."""

from __future__ import annotations

import polars as pl

from embedding_assets.contracts.model import QualityRules
from embedding_assets.refine.quality import near_duplicates_of, normalised_texts
from embedding_assets.refine.tables import DUPLICATE, NEAR_DUPLICATE, SUPERSEDED

LOSER_SCHEMA = {
    "_file": pl.String(),
    "_line": pl.Int64(),
    "kind": pl.String(),
    "doc_id": pl.String(),
    "duplicate_of": pl.String(),
    "reason": pl.String(),
}


def deduplicate(silver: pl.DataFrame, rules: QualityRules | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep one row per document, and record every row that lost, and to what.

    1. Conflicting updates (same id, different content): the newest ``updated_at`` wins (then the
       later file and line); the others are ``superseded``.
    2. Exact duplicates: the same id in the same version again (the first row is kept), or another
       id with the same normalised text (case, Unicode form and whitespace ignored): ``duplicate``
       of the oldest such document (then the smallest id), whatever the row order.
    3. Near duplicates (MinHash LSH, Jaccard >= the contract's threshold): ``near_duplicate``
       losers when the contract says drop, else kept and flagged in ``near_duplicate_of``.

    Deletion markers have no text; they are only ever deduplicated by id.
    """
    rules = rules or QualityRules()
    # The search runs on the keys it compares, each row carrying its number: the texts and the
    # batch's other columns are not copied by its sorts and filters, only looked up by number.
    kept, by_id = _newest_per_id(silver.select(_SEARCHED).with_row_index("_row"))
    remaining, text_dups, flags = _same_text(kept, silver["text"], rules)
    near_losers = _near_copies(remaining, rules, flags)
    losers = pl.concat(
        [f.cast(LOSER_SCHEMA) for f in (*by_id, *text_dups, near_losers)]  # type: ignore[arg-type]
    )
    # The winners, by doc id, taken from the batch in one gather (not a join and then a sort, each
    # a copy of every column).
    winners = kept.join(losers.select("_file", "_line"), on=["_file", "_line"], how="anti").sort("doc_id")
    out = silver[winners["_row"]].with_columns(
        pl.col("doc_id")
        .replace_strict(flags, default=None, return_dtype=pl.String)
        .alias("near_duplicate_of")
    )
    return out, losers.sort("_file", "_line")


_SEARCHED = ["doc_id", "content_hash", "updated_at", "deleted", "_file", "_line"]


def _newest_per_id(silver: pl.DataFrame) -> tuple[pl.DataFrame, tuple[pl.DataFrame, pl.DataFrame]]:
    """One row per id, oldest document first, with ``_at`` (file:line); and the losers: re-sent
    copies of a version, then versions superseded by a newer ``updated_at``."""
    where = pl.col("_file") + pl.lit(":") + pl.col("_line").cast(pl.String)
    ordered = silver.sort(["doc_id", "updated_at", "_file", "_line"], nulls_last=False).with_columns(
        where.alias("_at")
    )
    # Same id, same content, same time: a re-sent row.
    same = ordered.with_columns(
        pl.col("_at").first().over(["doc_id", "content_hash", "updated_at"]).alias("_winner")
    )
    resent = same.filter(pl.col("_at") != pl.col("_winner")).select(
        "_file", "_line", pl.lit(DUPLICATE).alias("kind"), "doc_id",
        pl.col("_winner").alias("duplicate_of"),
        pl.format("duplicate: the same version of {} again (kept {})", "doc_id", "_winner").alias("reason"),
    )  # fmt: skip
    exact = same.filter(pl.col("_at") == pl.col("_winner")).drop("_winner")
    newest = exact.with_columns(pl.col("_at").last().over("doc_id").alias("_winner"))
    superseded = newest.filter(pl.col("_at") != pl.col("_winner")).select(
        "_file", "_line", pl.lit(SUPERSEDED).alias("kind"), "doc_id",
        pl.col("_winner").alias("duplicate_of"),
        pl.format("superseded: an older version of {} (updated_at {}); kept {}", "doc_id", "updated_at", "_winner")
        .alias("reason"),
    )  # fmt: skip
    # Oldest document first (then id): which of two copies is kept must not depend on row order,
    # or re-delivering the same rows in another order would change silver.
    kept = newest.filter(pl.col("_at") == pl.col("_winner")).drop("_winner").sort("updated_at", "doc_id")
    return kept, (resent, superseded)


def _same_text(
    kept: pl.DataFrame, texts: pl.Series, rules: QualityRules
) -> tuple[pl.DataFrame, tuple[pl.DataFrame, ...], dict[str, str]]:
    """Other ids with the same normalised text as an older live document: (the live rows left for
    the near-duplicate search, the duplicate losers when the contract drops them, else none, and
    the flags {doc_id: of} when it keeps them)."""
    live = kept.filter(~pl.col("deleted"))
    live = live.with_columns(normalised_texts(texts.gather(live["_row"])).alias("_norm"))
    live = live.with_columns(pl.col("doc_id").first().over("_norm").alias("_first"))
    copies = live.filter(pl.col("doc_id") != pl.col("_first"))
    if rules.duplicate_action != "drop":
        return live, (), dict(copies.select("doc_id", "_first").iter_rows())
    text_dups = copies.select(
        "_file", "_line", pl.lit(DUPLICATE).alias("kind"), "doc_id",
        pl.col("_first").alias("duplicate_of"),
        pl.format("duplicate: same normalised text as {}", "_first").alias("reason"),
    )  # fmt: skip
    return live.filter(pl.col("doc_id") == pl.col("_first")), (text_dups,), {}


def _near_copies(remaining: pl.DataFrame, rules: QualityRules, flags: dict[str, str]) -> pl.DataFrame:
    """Near-duplicate losers when the contract drops them; else none, and ``flags`` gains them."""
    near = near_duplicates_of(
        remaining["doc_id"].to_list(), remaining["_norm"], threshold=rules.near_duplicate_threshold
    )
    if rules.near_duplicate_action != "drop":
        flags.update({d.id: d.of for d in near})
        return pl.DataFrame(schema=LOSER_SCHEMA)
    near_rows = pl.DataFrame(
        [(d.id, d.of, d.similarity) for d in near], schema={"doc_id": pl.String, "of": pl.String, "sim": pl.Float64},
        orient="row",
    )  # fmt: skip
    return remaining.join(near_rows, on="doc_id").select(
        "_file", "_line", pl.lit(NEAR_DUPLICATE).alias("kind"), "doc_id", pl.col("of").alias("duplicate_of"),
        pl.format("near_duplicate: Jaccard {} with {}", "sim", "of").alias("reason"),
    )  # fmt: skip
