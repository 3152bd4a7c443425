"""Retries with exponential backoff and full jitter, for transient failures of one call."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    attempts: int = 3
    base_s: float = 0.2
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)] (attempt counts from 0)."""
        return random.uniform(0.0, min(self.max_s, self.base_s * 2**attempt))


DEFAULT_BACKOFF = Backoff()


def retry(
    fn: Callable[[], T],
    backoff: Backoff = DEFAULT_BACKOFF,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up_on: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Call ``fn`` until it succeeds or ``backoff.attempts`` are spent; returns (result, attempts).
    An error of ``give_up_on`` (one retrying cannot help) propagates at once.

    The last error propagates, with ``attempts`` set on it."""
    for attempt in range(backoff.attempts):
        try:
            return fn(), attempt + 1
        except give_up_on as error:
            error.attempts = attempt + 1  # type: ignore[attr-defined]
            raise
        except retry_on as error:
            if attempt == backoff.attempts - 1:
                error.attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")
