"""Failures, told apart: transient ones (network, lock conflicts, 5xx) are worth a retry;
deterministic ones (permission, disk full, a corrupt file, a schema) fail the same way every
time, so they are reported at once, in one line that names the cause and the file or table."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.EBUSY,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
}
# A lost optimistic-concurrency race; a fault injected by the tests stands for a transient one.
TRANSIENT_CLASSES = {"CommitFailedError", "CommitConflictError", "InjectedFault"}
_TRANSIENT_TEXT = re.compile(
    r"\b(5\d\d|service unavailable|too many requests|timed? ?out|connection (reset|refused|aborted)"
    r"|commit ?failed|conflict|transaction .*concurrent|temporarily unavailable|slow ?down)\b",
    re.IGNORECASE,
)
_DETERMINISTIC_TEXT = re.compile(
    r"(no space left|permission denied|read-only file system|corrupt|invalid parquet|parquet magic"
    r"|out of specification|not a delta table|contiguous commit|schema|unsafe|symbolic link)",
    re.IGNORECASE,
)
_SIGNALS = (KeyboardInterrupt, SystemExit, GeneratorExit)


class TableError(RuntimeError):
    """A failure reading or writing one table, with the table named first."""

    def __init__(self, table: str, cause: BaseException) -> None:
        super().__init__(f"{table}: {root_cause(cause)}")
        self.table = table
        self.transient = is_transient(cause)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether trying again could succeed: a network or lock error, a timeout, a 5xx."""
    for error in _chain(exc):
        if isinstance(error, TableError):
            return error.transient
        if isinstance(error, OSError) and error.errno is not None:
            return error.errno in TRANSIENT_ERRNOS
        if isinstance(error, ConnectionError | TimeoutError) or type(error).__name__ in TRANSIENT_CLASSES:
            return True
        text = f"{type(error).__name__}: {error}"
        if _DETERMINISTIC_TEXT.search(text):
            return False
        if _TRANSIENT_TEXT.search(text):
            return True
    return False


def root_cause(exc: BaseException) -> str:
    """One line: the innermost error's class, errno and message, and the file it names."""
    chain = list(_chain(exc))
    named = next((e for e in chain if isinstance(e, TableError)), None)
    if named is not None:
        return str(named)
    inner = chain[-1]
    name = type(inner).__name__
    if isinstance(inner, OSError) and inner.errno is not None:
        code = errno.errorcode.get(inner.errno, str(inner.errno))
        where = f": {inner.filename}" if inner.filename else ""
        return f"{name} [{code}] {inner.strerror or inner}{where}"
    message = " ".join(str(inner).split())[:500] or "(no message)"
    return f"{name}: {message}"


def naming_table(table_of: Callable[..., str]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Wrap a method so that any failure, a Rust panic included, names its table."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return fn(*args, **kwargs)
            except _SIGNALS:
                raise
            except TableError:
                raise
            except BaseException as exc:  # noqa: BLE001 - pyo3 panics are BaseExceptions
                raise TableError(table_of(*args, **kwargs), exc) from exc

        return wrapper

    return decorate
