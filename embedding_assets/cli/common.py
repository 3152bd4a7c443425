"""What every command shares."""

from __future__ import annotations

import json
from typing import Any


class UsageError(ValueError):
    """A bad argument: one line on stderr, exit code 2."""


def emit(value: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(value, ensure_ascii=False, default=str))
