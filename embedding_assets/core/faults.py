"""Fault injection for tests: named points in the pipeline where a process can be made to die or fail.

Set ``EA_FAULTS`` to a comma-separated list of ``point=action``:

- ``kill``: SIGKILL this process the first time the point is reached (``kill@3``: the third time);
- ``raise``: raise :class:`InjectedFault` every time (``raise*2``: only the first two times);
- ``raise-if:TEXT``: raise when any of the point's texts contains ``TEXT`` (a poison record);
- ``sleep:SECONDS``: wait there every time (a slow step, for signal tests);
- ``touch:PATH``: create the file PATH, so a test knows the point was reached (where it can't see
  the process: a step on a Celery worker).

Actions join with ``+`` and run in order: ``embed.encode=touch:/tmp/in-step+sleep:60``.

Unset (the default) every point is a no-op costing one dict lookup. Points in use:
``bronze.before_write``, ``bronze.after_write``, ``silver.between_tables``, ``silver.after_write``,
``gold.after_write``, ``embed.encode`` (before each encode window), ``embed.after_write``,
``index.before_merge``, ``index.after_merge``, ``index.build`` (before each index is built),
``index.after_build``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

ENV = "EA_FAULTS"
_hits: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """A failure injected through ``EA_FAULTS`` (treated as transient by retries)."""


def _actions() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, action = item.partition("=")
        out[point.strip()] = action.strip()
    return out


def fault_point(name: str, texts: Sequence[str] = ()) -> None:
    if ENV not in os.environ:
        return
    actions = _actions().get(name)
    if actions is None:
        return
    _hits[name] += 1
    for action in actions.split("+"):
        _act(name, action, _hits[name], texts)


def _act(name: str, action: str, hit: int, texts: Sequence[str]) -> None:
    if action.startswith("kill"):
        nth = int(action.partition("@")[2] or 1)
        if hit == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("raise-if:"):
        marker = action.partition(":")[2]
        if any(marker in t for t in texts):
            raise InjectedFault(f"injected fault at {name}: poison record {marker!r}")
    elif action.startswith("raise"):
        limit = action.partition("*")[2]
        if not limit or hit <= int(limit):
            raise InjectedFault(f"injected fault at {name} (hit {hit})")
    elif action.startswith("sleep:"):
        time.sleep(float(action.partition(":")[2]))
    elif action.startswith("touch:"):
        Path(action.partition(":")[2]).touch()
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} for {name}")


def reset() -> None:
    _hits.clear()
