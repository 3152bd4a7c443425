"""The one resource: where the landing zone, the lake and the index live, and the model registry
that says which models embed.

Unset fields fall back to :class:`Settings` (environment, then defaults under ``data/``), resolved
at run time, never while the definitions load.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.contracts.load import ContractSet, contract_version, read_contracts
from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.hashing import sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.defs.keys import split_key
from embedding_assets.embed.embedder import Embedder, describe_spec, embedder_for, verify_spec
from embedding_assets.embed.registry import (
    RETIRED,
    ModelSpec,
    Registry,
    RegistryError,
    RegistryState,
    add_event,
    fold,
)
from embedding_assets.evaluate.canary import canary_version
from embedding_assets.gold.chunking import Chunker, ChunkerSettings
from embedding_assets.index.fusion import FUSION_DEFAULTS
from embedding_assets.index.table import ANN_DEFAULTS, ChunkTable
from embedding_assets.index.writer import IndexWriter

# Settings that act as inputs of the assets, by the key of the source asset that observes them.
CHUNKER_SETTINGS, EMBEDDING_MODEL, INDEX_SETTINGS = "chunker_settings", "embedding_model", "index_settings"
CANARY_QUERIES = "canary_queries"
MODEL_SETTINGS = (CHUNKER_SETTINGS, EMBEDDING_MODEL)  # one version per model (partitioned by model)


def contract_key(source: str) -> str:
    return f"contract_{source}"


@cache
def _verified(spec: ModelSpec) -> None:
    verify_spec(spec)  # once per process and registry entry: it reads the model's file stamps


class PipelineResource(dg.ConfigurableResource):
    """Overrides of :class:`Settings` (None: the environment's value, else the default)."""

    landing_dir: str | None = None
    contracts_dir: str | None = None
    canary_dir: str | None = None
    lake_uri: str | None = None
    lancedb_uri: str | None = None
    model: str | None = None
    embedder_kind: str | None = None
    device: str | None = None
    batch_size: int | None = None
    chunk_tokens: int | None = None
    chunk_overlap: int | None = None
    ann_min_rows: int | None = None
    retry_attempts: int | None = None
    max_embed_failure_rate: float | None = None
    landing_settle_s: float | None = None
    max_run_attempts: int | None = None
    model_retention_h: float | None = None

    def settings(self) -> Settings:
        # Only this class's fields: a subclass may add its own (a costed embedder in the bench).
        fields = PipelineResource.model_fields
        given: dict[str, Any] = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        if "embedder_kind" in given:
            given["embedder"] = given.pop("embedder_kind")
        return Settings.from_env().with_overrides(**given)

    def lake(self) -> Lake:
        return Lake(self.settings().lake_uri)

    def contract_set(self) -> ContractSet:
        """The contracts that load, and one line per broken one (its source is held back)."""
        return read_contracts(self.settings().contracts_dir)

    def contracts(self) -> dict[str, Contract]:
        return self.contract_set().contracts

    # The model registry ------------------------------------------------------------------------

    def registry(self) -> Registry:
        return Registry(self.lake())

    def registry_state(self) -> RegistryState:
        return self.registry().read()

    def ensure_registry(self) -> RegistryState:
        """The registry, started with the configured model (``EA_MODEL``) serving when it is empty."""
        state = self.registry_state()
        if state.serving is not None:
            return state
        s = self.settings()
        spec = describe_spec(s.model, s.embedder, backend=s.embed_backend)
        try:
            return self.registry().commit(lambda st: add_event(st, spec, datetime.now(UTC), bootstrap=True))[
                0
            ]
        except RegistryError:
            return self.registry_state()  # another process started it first

    def planned_state(self) -> RegistryState:
        """The registry as ``sync`` would start it, written nowhere (for a dry run): the configured
        model serving when the registry is empty."""
        state = self.registry_state()
        if state.serving is not None:
            return state
        s = self.settings()
        event = add_event(
            state,
            describe_spec(s.model, s.embedder, backend=s.embed_backend),
            datetime.now(UTC),
            bootstrap=True,
        )
        return RegistryState(fold([event]), event.seq, state.version)

    def active_models(self, state: RegistryState | None = None) -> list[ModelSpec]:
        """The models every batch is built for: serving, candidates, and the rollback target."""
        state = state or self.registry_state()
        return [m.spec for m in state.active(datetime.now(UTC), self.settings().retention)]

    def spec(self, name: str | None = None, state: RegistryState | None = None) -> ModelSpec:
        """A registered model (default: the serving one)."""
        state = state or self.registry_state()
        if name is None:
            if state.serving is None:
                raise RegistryError(
                    "no model is registered yet: run `embedding-assets sync` (or register) first"
                )
            return state.serving.spec
        return state.get(name).spec

    def partition_spec(self, partition: str) -> tuple[str, ModelSpec]:
        """(batch, model) of a ``batch|model`` partition; a model the registry lacks is an error
        that says so (a partition of a retired model builds nothing)."""
        batch, name = split_key(str(partition))
        state = self.registry_state()
        spec = state.get(name).spec
        if state.models[name].role == RETIRED:
            raise RegistryError(f"model {name!r} is retired: its partitions are no longer built")
        return batch, spec

    def embedder(self, spec: ModelSpec) -> Embedder:
        _verified(spec)
        s = self.settings()
        return embedder_for(spec, s.device, s.batch_size)

    def chunker_settings(self, spec: ModelSpec) -> ChunkerSettings:
        s = self.settings()
        return ChunkerSettings(
            max_tokens=s.chunk_tokens, overlap=s.chunk_overlap, model_max_tokens=spec.max_seq_length
        )

    def chunker(self, spec: ModelSpec) -> Chunker:
        """Splits with the model's own tokenizer, loaded from its files without the weights."""
        _verified(spec)
        tokenizer = embedder_for(spec, "cpu", 1).tokenizer()
        settings = self.chunker_settings(spec)
        return Chunker(
            tokenizer, settings, tokenizer_id=spec.chunking_version(), sectioned=self.sectioned_sources()
        )

    def sectioned_sources(self) -> frozenset[str]:
        """The sources whose documents are split by their sections: the Markdown ones."""
        return frozenset(s for s, c in self.contracts().items() if c.format == "markdown")

    def index_table(self, spec: ModelSpec, contracts: dict[str, Contract] | None = None) -> ChunkTable:
        fields = metadata_fields(contracts if contracts is not None else self.contracts())
        return ChunkTable(self.settings().lancedb_uri, spec.name, spec.dimension, fields)

    def index_writer(self, spec: ModelSpec, contracts: dict[str, Contract] | None = None) -> IndexWriter:
        return IndexWriter(self.index_table(spec, contracts), self.settings().ann_min_rows)

    # Versions of what the assets consume besides each other --------------------------------------

    def setting_versions(self, contracts: dict[str, Contract] | None = None) -> dict[str, str]:
        """The version of every setting shared by all models, by the source asset observing it."""
        s = self.settings()
        contracts = contracts if contracts is not None else self.contracts()
        fields = json.dumps({k: [f.type, str(f.default)] for k, f in metadata_fields(contracts).items()})
        return {
            **{contract_key(source): contract_version(c) for source, c in contracts.items()},
            INDEX_SETTINGS: sha256_text(
                ANN_DEFAULTS.describe(), FUSION_DEFAULTS.describe(), str(s.ann_min_rows), fields
            ),
            CANARY_QUERIES: canary_version(s.canary),
        }

    def model_setting_versions(self, spec: ModelSpec) -> dict[str, str]:
        """The versions of one model's own settings: its chunker and its embedding identity."""
        return {
            CHUNKER_SETTINGS: "|".join(
                [
                    self.chunker_settings(spec).describe(),
                    spec.chunking_version(),
                    *sorted(self.sectioned_sources()),
                ]
            ),
            EMBEDDING_MODEL: spec.embedding_version(),
        }
