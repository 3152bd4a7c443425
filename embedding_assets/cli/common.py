"""What every command shares."""

from __future__ import annotations

import json
from typing import Any

from embedding_assets.index.searcher import SearchRefused


class UsageError(SearchRefused):
    """A bad argument: one line on stderr, exit code 2 (a refused search is one too)."""


def emit(value: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(value, ensure_ascii=False, default=str))
