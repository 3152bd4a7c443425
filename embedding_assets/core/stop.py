"""Stopping on a signal at the next safe point.

The first SIGTERM or SIGINT only asks: work stops at the next checkpoint, which lies between
commits (before a Delta write, before the index merge, between encode windows), so every table
is left at a committed version and the next run completes the work as an uninterrupted one
would. A second signal stops the process at once (commits are atomic, so even that loses
nothing that was committed). Work runs off the main thread (:func:`off_main_thread`) so that
the main thread is free to take the signals.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_state: dict[str, int | None] = {"signal": None}


class StopRequested(Exception):
    """A signal asked the process to stop; raised at a checkpoint."""


def requested() -> int | None:
    """The signal that asked to stop, or None."""
    return _state["signal"]


def exit_code() -> int:
    """The shell's code for a process ended by the signal: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + int(requested() or 0)


def checkpoint(before: str) -> None:
    """A safe point: raise :class:`StopRequested` when a signal asked to stop."""
    signo = requested()
    if signo is not None:
        raise StopRequested(f"stopped by {signal.Signals(signo).name} before {before}")


def _handle(signo: int, _: Any) -> None:
    if requested() is not None:
        os._exit(128 + signo)  # the second signal: at once
    _state["signal"] = signo


def install(forward: Callable[[int], None] | None = None) -> None:
    """Take SIGTERM and SIGINT in this process (main thread); ``forward`` passes them on (to
    worker processes)."""

    def handler(signo: int, frame: Any) -> None:
        _handle(signo, frame)
        if forward is not None:
            forward(signo)

    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, handler)


def reset() -> None:
    _state["signal"] = None


def off_main_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread while the main thread waits, free to take signals."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller as it is
            box["error"] = exc

    worker = threading.Thread(target=target, name="embedding-assets-run", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
