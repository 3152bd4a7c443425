"""Row validation of one parsed batch with pandera (polars backend, lazy: every failure is collected).

The schema is built from the contract and runs over a working frame with, for each field ``f``, the
text as received (``raw::f``) and the typed value (``typed::f``), plus the combined ``text`` and the
``deleted`` flag. Each check is named after its rule; the failure cases, grouped by row index, are
the quarantine reasons, so a row that breaks four rules is quarantined with four reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from embedding_assets.contracts.model import Contract, FieldSpec
from embedding_assets.refine.quality import GARBAGE_SUSPECT, garbage_reasons_series

RowRule = Callable[[pl.LazyFrame], pl.LazyFrame]


@dataclass(frozen=True)
class Rule:
    """One named check: ``valid`` is an expression that is true for the rows that pass it."""

    column: str
    name: str
    message: str
    valid: pl.Expr

    def check(self) -> pa.Check:
        valid = self.valid
        return pa.Check(lambda data: data.lazyframe.select(valid.fill_null(True)), name=self.key)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.column}"


def _blank(col: pl.Expr) -> pl.Expr:
    return col.is_null() | col.str.strip_chars().eq("")


def contract_rules(contract: Contract) -> list[Rule]:
    """Every row rule of the contract: id, text and garbage first, then each field's rules."""
    live = ~pl.col("deleted")
    rules = [
        Rule(
            f"raw::{contract.id}",
            "missing_id",
            f"id field '{contract.id}' is null or empty",
            ~_blank(pl.col(f"raw::{contract.id}")),
        ),
        Rule(
            "text",
            "empty_text",
            f"text fields {list(contract.text)} are empty or whitespace",
            ~live | ~_blank(pl.col("text")),
        ),
        Rule("text", "garbage", "", ~live | pl.col("_garbage").list.len().eq(0)),
    ]
    for name in contract.referenced_fields:
        rules += _field_rules(name, contract.field_spec(name))
    return rules


def _field_rules(name: str, spec: FieldSpec) -> list[Rule]:
    """The rules of one field: its type, and whichever of required, allowed and max_length it has."""
    live = ~pl.col("deleted")
    column, raw, typed = f"raw::{name}", pl.col(f"raw::{name}"), pl.col(f"typed::{name}")
    kind = "bad_timestamp" if spec.type == "datetime" else "bad_type"
    rules = [
        Rule(column, kind, f"field '{name}' is not a valid {spec.type}", _blank(raw) | typed.is_not_null())
    ]
    if spec.required:
        rules.append(Rule(column, "missing_required", f"field '{name}' is required", ~live | ~_blank(raw)))
    if spec.allowed is not None:
        rules.append(
            Rule(
                column,
                "not_allowed",
                f"field '{name}' must be one of {list(spec.allowed)}",
                raw.is_null() | raw.is_in(list(spec.allowed)),
            )
        )
    if spec.max_length is not None:
        rules.append(
            Rule(
                column,
                "too_long",
                f"field '{name}' is over {spec.max_length} characters",
                raw.is_null() | (raw.str.len_chars() <= spec.max_length),
            )
        )
    return rules


def row_schema(contract: Contract, rules: list[Rule]) -> pa.DataFrameSchema:
    by_column: dict[str, list[pa.Check]] = {}
    for rule in rules:
        by_column.setdefault(rule.column, []).append(rule.check())
    return pa.DataFrameSchema(
        {col: pa.Column(nullable=True, checks=checks) for col, checks in by_column.items()},
        name=f"{contract.source}_rows",
        strict=False,
        coerce=False,
    )


def _empty_lists(n: int) -> pl.Series:
    return pl.Series("reasons", [[]], dtype=pl.List(pl.String)).new_from_index(0, n)


def _lists_at(n: int, indices: list[int], values: list[list[str]]) -> pl.Series:
    """``n`` string lists: ``values`` at ``indices``, empty elsewhere (``scatter`` has no list dtype)."""
    if not indices:
        return _empty_lists(n)
    found = pl.DataFrame(
        {"i": pl.Series(indices, dtype=pl.UInt32), "reasons": pl.Series(values, dtype=pl.List(pl.String))}
    )
    return (
        pl.DataFrame({"i": pl.int_range(0, n, dtype=pl.UInt32, eager=True)})
        .join(found, on="i", how="left", maintain_order="left")
        .select(pl.col("reasons").fill_null(pl.lit([], dtype=pl.List(pl.String))))["reasons"]
    )


def with_garbage(frame: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """``_garbage``: encoding-garbage reasons of the row's text and title (empty list when clean)."""
    q = contract.quality
    title = pl.col(f"raw::{contract.title}") if contract.title else pl.lit(None, dtype=pl.String)
    texts = frame.select(
        pl.concat_str([title.fill_null(""), pl.col("text").fill_null("")], separator="\n").alias("t")
    )["t"]
    suspect = texts.str.contains(GARBAGE_SUSPECT).fill_null(False)  # the rest are clean
    found = garbage_reasons_series(
        texts.filter(suspect),
        max_replacement_share=q.max_replacement_share,
        max_entity_share=q.max_entity_share,
    )
    garbage = _lists_at(frame.height, suspect.arg_true().to_list(), found.to_list())
    return frame.with_columns(garbage.alias("_garbage"))


def row_reasons(contract: Contract, frame: pl.DataFrame) -> pl.Series:
    """Every rule each row breaks, as ``"<rule>: <message>"`` (an empty list for a valid row).

    ``frame`` needs ``raw::``/``typed::`` columns for the contract's fields, ``text``, ``deleted``
    and ``_garbage`` (see :func:`with_garbage`)."""
    rules = contract_rules(contract)
    empty = _empty_lists(frame.height)
    if frame.height == 0:
        return empty
    try:
        row_schema(contract, rules).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = pl.DataFrame(errors.failure_cases)
    else:
        return empty
    messages = {r.key: f"{r.name}: {r.message}" for r in rules}
    unexpected = cases.filter(pl.col("index").is_null() | ~pl.col("check").is_in(list(messages)))
    if unexpected.height:  # a schema-level failure, not a row's: a bug, never a quarantine reason
        raise ValueError(f"row validation failed outside the row rules: {unexpected.head(3).to_dicts()}")
    per_row: dict[int, list[str]] = {}
    garbage = frame["_garbage"]
    for index, check in cases.sort("index", "check").select("index", "check").iter_rows():
        reasons = per_row.setdefault(index, [])
        if check.startswith("garbage@"):
            reasons.extend(garbage[index])
        else:
            reasons.append(messages[check])
    return _lists_at(frame.height, list(per_row), list(per_row.values()))
