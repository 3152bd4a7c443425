"""The canary: labelled search queries for the sample, written by us, one JSON object a line in
``data/canary/*.jsonl``: ``{"query": "...", "relevant": ["<doc id>", ...], "kind": "..."}``.

They measure what users get from search (per model and mode: recall@10, MRR@10, nDCG@10), gate a
promotion, and warn when a change makes search worse. A line that does not parse, or names a
document gold does not hold, is an error naming its file and line: a canary that silently measured
fewer queries would report better numbers than the truth.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KINDS = ("paraphrase", "keyword", "later_chunk", "plain")
KEYS = {"query", "relevant", "kind"}


class CanaryError(ValueError):
    """A canary file that cannot be used, with file, line and what is wrong."""


@dataclass(frozen=True)
class CanaryQuery:
    query: str
    relevant: tuple[str, ...]
    kind: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def canary_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def canary_version(folder: Path) -> str:
    """The version of the canary set: its files' names and bytes ("none" without files)."""
    files = canary_files(folder)
    if not files:
        return "none"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _parse(path: Path, number: int, line: str) -> CanaryQuery:
    where = f"{path}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CanaryError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise CanaryError(f"{where}: a line must be a JSON object")
    if unknown := sorted(set(record) - KEYS):
        raise CanaryError(f"{where}: unknown keys {unknown}; allowed: {sorted(KEYS)}")
    query, relevant, kind = record.get("query"), record.get("relevant"), record.get("kind", "plain")
    if not isinstance(query, str) or not query.strip():
        raise CanaryError(f"{where}: 'query' must be a non-empty string")
    if not isinstance(relevant, list) or not relevant or not all(isinstance(d, str) and d for d in relevant):
        raise CanaryError(f"{where}: 'relevant' must be a non-empty list of document ids")
    if kind not in KINDS:
        raise CanaryError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    return CanaryQuery(query.strip(), tuple(dict.fromkeys(relevant)), kind, str(path), number)


def load_canary(folder: Path) -> list[CanaryQuery]:
    """Every query of every canary file, in file and line order."""
    out = []
    for path in canary_files(folder):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                out.append(_parse(path, number, line))
    return out


def check_relevant(queries: Iterable[CanaryQuery], live_doc_ids: set[str]) -> None:
    """Every relevant document must be a live document of gold (not deleted, not unknown)."""
    problems = [
        f"{q.where}: {', '.join(missing)}"
        for q in queries
        if (missing := [d for d in q.relevant if d not in live_doc_ids])
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more lines" if len(problems) > 5 else ""
        )
        raise CanaryError(
            f"the canary names documents that gold does not hold (unknown or deleted): {shown}. "
            "Fix the canary file, or sync the batches that hold them"
        )
