"""The model registry as Dagster sees it: each registered model is a partition of ``models`` (so a
candidate's shadow build is a column of the batch x model partitions in the UI), a model past its
rollback window is retired and its index dropped, and what ``model list`` shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg

from embedding_assets.defs.index import expected_index
from embedding_assets.defs.keys import MODELS
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.registry import RETIRED, RegistryState, retire_event
from embedding_assets.index.repair import reconcile


def register_models(instance: dg.DagsterInstance, state: RegistryState) -> list[str]:
    """Add the registry's models that are not partitions of ``models`` yet; returns them."""
    known = set(instance.get_dynamic_partitions(MODELS))
    new = sorted(n for n, m in state.models.items() if n not in known and m.role != RETIRED)
    if new:
        instance.add_dynamic_partitions(MODELS, new)
    return new


def _same_target(configured: str, target: str) -> bool:
    path = Path(configured).expanduser()
    return configured == target or (path.exists() and str(path.resolve()) == target)


def model_note(pipeline: PipelineResource, state: RegistryState) -> str:
    """A line when ``EA_MODEL`` names another model than the registry serves: it only chooses the
    first model of an empty registry, so changing it switches nothing."""
    configured, serving = pipeline.settings().model, state.serving
    if serving is None or _same_target(configured, serving.spec.target):
        return ""
    if any(_same_target(configured, m.spec.target) for m in state.models.values() if m.role != RETIRED):
        return f"EA_MODEL names a registered model, but {serving.name!r} serves: `embedding-assets model promote NAME` switches"
    return (
        f"EA_MODEL={configured} is not the serving model ({serving.name!r}); it only picks the first model of "
        f"an empty registry. To switch: `embedding-assets model add {configured}`, then `model promote`"
    )


def expire_models(instance: dg.DagsterInstance, pipeline: PipelineResource) -> list[str]:
    """Retire the models whose rollback window has passed and drop their indexes."""
    now, retention = datetime.now(UTC), pipeline.settings().retention
    out = []
    for model in pipeline.registry_state().expired(now, retention):
        pipeline.registry().commit(
            partial(retire_event, name=model.name, now=now, detail="rollback window passed")
        )
        dropped = pipeline.index_table(model.spec).drop()
        out.append(
            f"{model.name} (stopped serving at {model.demoted_at:%Y-%m-%d %H:%M} UTC; index {'dropped' if dropped else 'already gone'})"
        )
    return out


@dataclass(frozen=True)
class ModelRow:
    """One line of ``model list``."""

    name: str
    role: str
    model_id: str
    dimension: int
    max_seq_length: int
    complete: bool  # its index covers every live gold chunk (and holds nothing else)
    rows: int
    missing: int
    unchunked: int  # live documents it has no chunks for yet
    table: str
    target: str
    embedder: str
    base: str
    added_at: str
    promoted_at: str | None
    demoted_at: str | None
    retired_at: str | None
    rollback_until: str | None  # the previous model: when its window ends

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def list_models(pipeline: PipelineResource, state: RegistryState | None = None) -> list[ModelRow]:
    """Every registered model with its role and whether its index is complete."""
    state = state or pipeline.registry_state()
    lake, retention, rows = pipeline.lake(), pipeline.settings().retention, []
    order = {"serving": 0, "candidate": 1, "previous": 2, "retired": 3}
    for m in sorted(state.models.values(), key=lambda m: (order.get(m.role, 9), m.added_at)):
        recon = (
            reconcile(pipeline.index_table(m.spec), expected_index(lake, m.spec))
            if m.role != RETIRED
            else None
        )
        until = m.demoted_at + retention if m.role == "previous" and m.demoted_at else None
        rows.append(ModelRow(
            m.name, m.role, m.spec.model_id, m.spec.dimension, m.spec.max_seq_length,
            bool(recon and recon.complete), recon.actual if recon else 0,
            len(recon.missing) if recon else 0, recon.unchunked if recon else 0, m.spec.table, m.spec.target, m.spec.embedder, m.spec.base,
            m.added_at.isoformat(), _iso(m.promoted_at), _iso(m.demoted_at), _iso(m.retired_at), _iso(until),
        ))  # fmt: skip
    return rows
