"""How an asset step fails: a deterministic error (permission, disk full, a corrupt file, a
schema) fails the step at once with its root cause in one line; only a transient one is raised
for the step's RetryPolicy to try again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

import dagster as dg

from embedding_assets.core.errors import is_transient, root_cause


def _framework(exc: BaseException) -> bool:
    """Dagster's own control flow, and interrupts: never reclassified."""
    return (
        isinstance(exc, dg.DagsterError | dg.Failure | dg.RetryRequested)
        or not isinstance(exc, Exception)
        and (type(exc).__name__ != "PanicException")
    )


def classified(body: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Wrap an asset body (a generator) so that its failures are classified (see the module)."""

    @wraps(body)
    def step(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from body(*args, **kwargs)
        except BaseException as exc:
            if _framework(exc) or is_transient(exc):
                raise
            raise dg.Failure(description=root_cause(exc), allow_retries=False) from exc

    return step
