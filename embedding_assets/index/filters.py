"""Search filters as safe SQL: a ``--where`` is tokenised and checked before it reaches LanceDB.

User text is never pasted beside another filter as it is. A ``where`` must be one balanced
expression over the index's own columns, with literals, comparisons, AND/OR/NOT, IN, IS NULL,
LIKE and BETWEEN, and a few scalar functions; it is then parenthesised and ANDed with the
source filter, so it can only narrow what the source filter lets through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from embedding_assets.index.table import quote


class FilterError(ValueError):
    """A filter that is refused; the message says what and what is allowed."""


KEYWORDS = {"and", "or", "not", "in", "is", "null", "like", "ilike", "between", "true", "false"}
FUNCTIONS = {"lower", "upper", "length", "trim", "starts_with", "ends_with", "regexp_like"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<quoted>"[A-Za-z_][A-Za-z0-9_]*"|`[A-Za-z_][A-Za-z0-9_]*`)
      | (?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|\+|-|\*|/|%)
    )""",
    re.VERBOSE,
)
MAX_WHERE_CHARS = 2_000


def _tokens(where: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    stripped = where.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            bad = stripped[pos:].lstrip()[:20]
            raise FilterError(f"--where: unexpected text at {bad!r} (quote strings with '...')")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def checked_where(where: str, columns: Iterable[str]) -> str:
    """``where`` when it is one balanced expression over ``columns``; :class:`FilterError` else."""
    if len(where) > MAX_WHERE_CHARS:
        raise FilterError(f"--where is longer than {MAX_WHERE_CHARS} characters")
    known, depth = set(columns), 0
    tokens = _tokens(where)
    if not tokens:
        raise FilterError("--where is empty")
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth < 0:
                raise FilterError("--where closes a parenthesis it did not open")
        elif kind == "ident" and following == "(":
            if text.lower() not in FUNCTIONS:
                raise FilterError(
                    f"--where: unknown function {text!r}; allowed: {', '.join(sorted(FUNCTIONS))}"
                )
        elif kind in ("ident", "quoted") and text.lower() not in KEYWORDS:
            name = text.strip('"`')
            if name not in known:
                raise FilterError(f"--where: unknown column {name!r}; columns: {', '.join(sorted(known))}")
    if depth:
        raise FilterError("--where leaves a parenthesis open")
    return where


def search_filter(source: str | None, where: str | None, columns: Iterable[str]) -> str | None:
    """The SQL filter of a search: the source as a bound literal, ANDed with a checked ``where``."""
    parts = [f"source = {quote(source)}"] if source else []
    if where is not None:
        parts.append(f"({checked_where(where, columns)})")
    return " AND ".join(parts) or None
