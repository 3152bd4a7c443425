"""The model registry: which embedding models there are, which one serves search, which are
candidates built as shadows beside it, and which one a rollback returns to.

A model is data, not an environment variable. The registry is an append-only Delta table of
events in the lake (``models/registry``): bootstrap, add, promote, rollback, retire. Its state is
the fold of those events, so it lives beside the vectors it describes (on S3 too), a new Dagster
instance over the same lake knows it, and its history says which model served when. Every change
is one commit keyed by the event's sequence number: two writers racing for the same number
conflict, and the loser re-reads and checks its change again, so a promote is atomic and no
change is lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

import polars as pl

from embedding_assets.core.lake import Lake
from embedding_assets.embed.models import model_slug

REGISTRY_TABLE = "models/registry"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SERVING, CANDIDATE, PREVIOUS, RETIRED = "serving", "candidate", "previous", "retired"
BOOTSTRAP, ADD, PROMOTE, ROLLBACK, RETIRE = "bootstrap", "add", "promote", "rollback", "retire"
EVENT_SCHEMA = pl.Schema(
    {
        "seq": pl.Int64(),
        "at": pl.Datetime("us", "UTC"),
        "event": pl.String(),
        "name": pl.String(),
        "spec": pl.String(),  # the model's ModelSpec as JSON, on bootstrap and add
        "detail": pl.String(),  # why (a forced promote says so)
    }
)


class RegistryError(ValueError):
    """A registry change that is refused; the message says why, and nothing was written."""


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model is. ``model_id`` is its embedding identity: vectors are cached
    under it, so two entries with the same id would share (and must hold) the same vectors."""

    name: str
    target: str  # what loads it: a local folder, a hub id in the offline cache, or the bundled alias
    embedder: str  # sentence-transformers (or hashing, in tests)
    model_id: str
    revision: str
    dimension: int
    max_seq_length: int
    tokenizer_hash: str
    files_stamp: str = ""  # names, sizes and times of its files when added (see embed.models)
    fingerprint: str = ""  # sha256 of its weights and configuration when added
    base: str = ""  # the model it was fine-tuned from, if any
    note: str = ""
    backend: str = "torch"  # what runs it: torch (fp32 on the CPU, fp16 on a GPU) or int8 (onnxruntime)
    # An API model (embedder "openai"): ``target`` is its name at the API, ``tokenizer`` the local
    # tokenizer that chunks for it, ``api_key_env`` the variable holding the key (never the key).
    api_base: str = ""
    api_key_env: str = ""
    tokenizer: str = ""
    price_per_1k_tokens: float = 0.0  # what the API charges, for the sync --dry-run forecast

    @property
    def table(self) -> str:
        """Its LanceDB table: one per model, so vectors of two models never mix."""
        return f"chunks__{model_slug(self.name)}"

    def embedding_version(self) -> str:
        return f"{self.model_id}|{self.revision}"

    def chunking_version(self) -> str:
        """What a split depends on besides the chunker settings (models that share a tokenizer and
        a maximum length split text alike)."""
        return f"tokenizer={self.tokenizer_hash[:16]}|max_seq_length={self.max_seq_length}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> ModelSpec:
        return ModelSpec(**json.loads(text))


@dataclass(frozen=True)
class Event:
    seq: int
    at: datetime
    event: str
    name: str
    spec: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class ModelState:
    spec: ModelSpec
    role: str
    added_at: datetime
    promoted_at: datetime | None = None
    demoted_at: datetime | None = None  # when it last stopped serving (a rollback's window starts here)
    retired_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class RegistryState:
    models: Mapping[str, ModelState]
    last_seq: int = 0
    version: int = -1  # the registry table's Delta version read (-1: no table yet)

    def get(self, name: str) -> ModelState:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise RegistryError(f"unknown model {name!r}; registered: {known}")
        return self.models[name]

    def with_role(self, role: str) -> list[ModelState]:
        return sorted((m for m in self.models.values() if m.role == role), key=lambda m: m.added_at)

    @property
    def serving(self) -> ModelState | None:
        found = self.with_role(SERVING)
        return found[0] if found else None

    @property
    def previous(self) -> ModelState | None:
        found = self.with_role(PREVIOUS)
        return found[0] if found else None

    def within_window(self, model: ModelState, now: datetime, retention: timedelta) -> bool:
        return model.demoted_at is not None and now <= model.demoted_at + retention

    def rollback_target(self, now: datetime, retention: timedelta) -> ModelState | None:
        previous = self.previous
        return previous if previous is not None and self.within_window(previous, now, retention) else None

    def active(self, now: datetime, retention: timedelta) -> list[ModelState]:
        """The models the pipeline builds: the serving one, every candidate, and the previous one
        while it can still be rolled back to (new batches reach it too, so a rollback is complete)."""
        found = [self.serving] if self.serving else []
        found += self.with_role(CANDIDATE)
        target = self.rollback_target(now, retention)
        return found + ([target] if target else [])

    def expired(self, now: datetime, retention: timedelta) -> list[ModelState]:
        """Previous models past the rollback window: maintenance retires them and drops their index."""
        return [m for m in self.with_role(PREVIOUS) if not self.within_window(m, now, retention)]


def fold(events: Iterable[Event]) -> dict[str, ModelState]:
    """The registry's state after ``events`` (in sequence order)."""
    models: dict[str, ModelState] = {}
    for e in sorted(events, key=lambda e: e.seq):
        if e.event in (BOOTSTRAP, ADD):
            role = SERVING if e.event == BOOTSTRAP else CANDIDATE
            models[e.name] = ModelState(
                ModelSpec.from_json(e.spec or "{}"), role, e.at, e.at if role == SERVING else None
            )
        elif e.event == PROMOTE:
            for name, m in list(models.items()):
                if name != e.name and m.role == PREVIOUS:  # one rollback target: the newest
                    models[name] = replace(m, role=RETIRED, retired_at=e.at)
                elif name != e.name and m.role == SERVING:
                    models[name] = replace(m, role=PREVIOUS, demoted_at=e.at)
            models[e.name] = replace(models[e.name], role=SERVING, promoted_at=e.at)
        elif e.event == ROLLBACK:
            for name, m in list(models.items()):
                if m.role == SERVING:  # rolled back from: stays a candidate (built, promotable again)
                    models[name] = replace(m, role=CANDIDATE, demoted_at=e.at)
            models[e.name] = replace(models[e.name], role=SERVING, promoted_at=e.at)
        elif e.event == RETIRE:
            models[e.name] = replace(models[e.name], role=RETIRED, retired_at=e.at)
    return models


def check_new(state: RegistryState, spec: ModelSpec) -> None:
    """Refuse a name or an identity the registry already has (a name stays taken once used: it is
    a Dagster partition with history)."""
    if not NAME.fullmatch(spec.name):
        raise RegistryError(
            f"model name {spec.name!r} is not allowed: letters, digits, '.', '_' and '-', at most 64, "
            "starting with a letter or digit"
        )
    if spec.name in state.models:
        raise RegistryError(
            f"a model named {spec.name!r} is registered already ({state.models[spec.name].role})"
        )
    for other in state.models.values():
        if other.spec.table == spec.table:
            raise RegistryError(f"model name {spec.name!r} would share the index table of {other.name!r}")
        if other.spec.model_id == spec.model_id and other.role != RETIRED:
            raise RegistryError(
                f"this model is registered already as {other.name!r} ({other.role}): same weights "
                f"and configuration ({spec.model_id})"
            )


def add_event(state: RegistryState, spec: ModelSpec, now: datetime, *, bootstrap: bool = False) -> Event:
    if bootstrap and state.serving is not None:
        raise RegistryError(f"the registry serves {state.serving.name!r} already")
    check_new(state, spec)
    return Event(state.last_seq + 1, now, BOOTSTRAP if bootstrap else ADD, spec.name, spec.to_json())


def promote_event(state: RegistryState, name: str, now: datetime, detail: str = "") -> Event:
    model = state.get(name)
    if model.role == SERVING:
        raise RegistryError(f"{name!r} is serving already")
    if model.role == RETIRED:
        raise RegistryError(f"{name!r} is retired (its index was dropped); add it again under a new name")
    return Event(state.last_seq + 1, now, PROMOTE, name, detail=detail)


def rollback_event(state: RegistryState, now: datetime, retention: timedelta) -> Event:
    target = state.rollback_target(now, retention)
    if target is None:
        previous = state.previous
        why = (
            f"{previous.name!r} stopped serving at {previous.demoted_at:%Y-%m-%d %H:%M} UTC, more than "
            f"{retention.total_seconds() / 3600:g} h ago, and is no longer kept"
            if previous is not None and previous.demoted_at is not None
            else "no model served before the current one"
        )
        raise RegistryError(f"nothing to roll back to: {why}")
    return Event(state.last_seq + 1, now, ROLLBACK, target.name)


def retire_event(state: RegistryState, name: str, now: datetime, detail: str = "") -> Event:
    model = state.get(name)
    if model.role == SERVING:
        raise RegistryError(f"{name!r} is serving: promote another model first")
    if model.role == RETIRED:
        raise RegistryError(f"{name!r} is retired already")
    return Event(state.last_seq + 1, now, RETIRE, name, detail=detail)


def _events(frame: pl.DataFrame) -> list[Event]:
    return [
        Event(r["seq"], r["at"], r["event"], r["name"], r["spec"], r["detail"] or "")
        for r in frame.iter_rows(named=True)
    ]


class Registry:
    """The registry table in the lake: reads fold it, writes append one event atomically."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def read(self, version: int | None = None) -> RegistryState:
        """The registry now, or as it was at a Delta ``version`` (time travel)."""
        frame = self.lake.read(REGISTRY_TABLE, EVENT_SCHEMA, version=version)
        current = self.lake.version(REGISTRY_TABLE) if version is None else version
        events = _events(frame)
        return RegistryState(
            fold(events), max((e.seq for e in events), default=0), -1 if current is None else current
        )

    def commit(
        self, make: Callable[[RegistryState], Event], attempts: int = 8
    ) -> tuple[RegistryState, Event]:
        """Append the event ``make`` builds from the current state. ``make`` may refuse by raising
        :class:`RegistryError` (nothing is written); a writer that lost the race for the sequence
        number re-reads and asks ``make`` again."""
        for _ in range(attempts):
            state = self.read()
            event = make(state)
            row = pl.DataFrame([asdict(event)], schema=EVENT_SCHEMA)
            if self.lake.insert_new(REGISTRY_TABLE, row, ["seq"], partition_by=()).inserted:
                after = self.read()
                return after, event
        raise RegistryError("the registry kept changing under this change; try again")
