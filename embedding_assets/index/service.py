"""A warm searcher for long-lived processes (``embedding-assets serve``): the model loads once,
the serving model's table is opened once, and both are swapped when the registry or the table
moves on.

Each search reads one version of one model's table, as the CLI does. A request finds out whether
a newer version (a sync, a promote, a rollback) exists at most every ``refresh_s`` seconds, so a
change is searchable within that time and a request in between costs no registry or table read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from embedding_assets.config import Settings
from embedding_assets.index.searcher import Searcher, open_searcher


class WarmSearch:
    def __init__(
        self,
        settings: Settings,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Searcher | None = None
        self._checked = float("-inf")

    def searcher(self) -> Searcher:
        """The serving model's searcher at its table's latest version (checked every ``refresh_s``)."""
        with self._lock:
            now = self._clock()
            if self._current is not None and now - self._checked < self.refresh_s:
                return self._current
            self._checked = now
            if self._current is None or self._moved_on(self._current):
                self._current = open_searcher(self.settings, None, None, "vector")
            return self._current

    def _moved_on(self, current: Searcher) -> bool:
        """Another model serves, or its table has a newer version than the one open."""
        from embedding_assets.core.lake import Lake
        from embedding_assets.embed.registry import Registry

        serving = Registry(Lake(self.settings.lake_uri)).read().serving
        if serving is None or serving.spec != current.model:
            return True
        return int(current.reader.table.version()) != current.snap.version

    def search(self, query: str, k: int, mode: str, source: str | None = None) -> dict[str, Any]:
        return self.searcher().search([query], k, mode, source)[0]

    def health(self) -> dict[str, Any]:
        from embedding_assets.embed.embedder import models_loaded

        found = self.searcher()
        return {
            "status": "ok",
            "model": found.model.name,
            "model_id": found.model.model_id,
            "index_version": found.snap.version,
            "models_loaded": models_loaded(),
        }
