"""The one resource: where the landing zone, the lake and the index live, and which model embeds.

Unset fields fall back to :class:`Settings` (environment, then defaults under ``data/``), resolved
at run time, never while the definitions load.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.contracts.load import ContractSet, contract_version, read_contracts
from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.hashing import sha256_text
from embedding_assets.core.lake import Lake
from embedding_assets.embed.embedder import Embedder, build_embedder
from embedding_assets.embed.models import ModelInfo
from embedding_assets.gold.chunking import Chunker, ChunkerSettings
from embedding_assets.index.table import ANN_DEFAULTS, ChunkTable
from embedding_assets.index.writer import IndexWriter

# Settings that act as inputs of the assets, by the key of the source asset that observes them.
CHUNKER_SETTINGS, EMBEDDING_MODEL, INDEX_SETTINGS = "chunker_settings", "embedding_model", "index_settings"


def contract_key(source: str) -> str:
    return f"contract_{source}"


class PipelineResource(dg.ConfigurableResource):
    """Overrides of :class:`Settings` (None: the environment's value, else the default)."""

    landing_dir: str | None = None
    contracts_dir: str | None = None
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

    def embedder(self) -> Embedder:
        s = self.settings()
        return build_embedder(s.embedder, s.model, s.device, s.batch_size)

    def model_info(self) -> ModelInfo:
        """The model's identity, tokenizer and limits, read from its files (no weights loaded)."""
        s = self.settings()
        return build_embedder(s.embedder, s.model, "cpu", 1).info

    def chunker_settings(self, info: ModelInfo | None = None) -> ChunkerSettings:
        s = self.settings()
        info = info or self.model_info()
        return ChunkerSettings(
            max_tokens=s.chunk_tokens, overlap=s.chunk_overlap, model_max_tokens=info.max_seq_length
        )

    def chunker(self) -> Chunker:
        """Splits with the model's own tokenizer, loaded from its files without the weights."""
        info = self.model_info()
        embedder = build_embedder(self.settings().embedder, self.settings().model, "cpu", 1)
        return Chunker(
            embedder.tokenizer(), self.chunker_settings(info), tokenizer_id=info.chunking_version()
        )

    def index_table(self, contracts: dict[str, Contract] | None = None) -> ChunkTable:
        s, info = self.settings(), self.model_info()
        fields = metadata_fields(contracts if contracts is not None else self.contracts())
        return ChunkTable(s.lancedb_uri, info.model_id, info.dimension or self.embedder().dimension, fields)

    def index_writer(self, contracts: dict[str, Contract] | None = None) -> IndexWriter:
        return IndexWriter(self.index_table(contracts), self.settings().ann_min_rows)

    def setting_versions(self, contracts: dict[str, Contract] | None = None) -> dict[str, str]:
        """The version of every setting an asset consumes, by the source asset observing it."""
        s, info = self.settings(), self.model_info()
        contracts = contracts if contracts is not None else self.contracts()
        fields = json.dumps({k: [f.type, str(f.default)] for k, f in metadata_fields(contracts).items()})
        return {
            **{contract_key(source): contract_version(c) for source, c in contracts.items()},
            CHUNKER_SETTINGS: f"{self.chunker_settings(info).describe()}|{info.chunking_version()}",
            EMBEDDING_MODEL: info.embedding_version(),
            INDEX_SETTINGS: sha256_text(ANN_DEFAULTS.describe(), str(s.ann_min_rows), fields),
        }
