"""Resources: thin, configurable handles on the lake, the embedder and the index.

Unset fields fall back to :class:`Settings` (environment, then defaults under ``data/``),
resolved at run time, never while the definitions load.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.contracts.load import contract_version, load_contracts
from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.lake import Lake
from embedding_assets.embed.embedder import Embedder, build_embedder, resolve_model
from embedding_assets.gold.chunking import Chunker, ChunkerSettings
from embedding_assets.index.table import ChunkTable
from embedding_assets.index.writer import IndexWriter


class PipelineResource(dg.ConfigurableResource):
    """Where the landing zone, the lake and the index live, and which model embeds."""

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

    def settings(self) -> Settings:
        env = Settings.from_env()
        return Settings(
            data_dir=env.data_dir,
            landing_dir=Path(self.landing_dir) if self.landing_dir else env.landing_dir,
            contracts_dir=Path(self.contracts_dir) if self.contracts_dir else env.contracts_dir,
            lake_uri=self.lake_uri or env.lake_uri,
            lancedb_uri=self.lancedb_uri or env.lancedb_uri,
            model=self.model or env.model,
            embedder=self.embedder_kind or env.embedder,
            device=self.device or env.device,
            batch_size=self.batch_size if self.batch_size is not None else env.batch_size,
            chunk_tokens=self.chunk_tokens or env.chunk_tokens,
            chunk_overlap=self.chunk_overlap if self.chunk_overlap is not None else env.chunk_overlap,
            ann_min_rows=self.ann_min_rows if self.ann_min_rows is not None else env.ann_min_rows,
            retry_attempts=self.retry_attempts if self.retry_attempts is not None else env.retry_attempts,
            max_embed_failure_rate=(
                self.max_embed_failure_rate
                if self.max_embed_failure_rate is not None
                else env.max_embed_failure_rate
            ),
        )

    def lake(self) -> Lake:
        return Lake(self.settings().lake_uri)

    def contracts(self) -> dict[str, Contract]:
        return load_contracts(self.settings().contracts_dir)

    def landing_dir_path(self) -> Path:
        return self.settings().landing_dir

    def embedder(self) -> Embedder:
        s = self.settings()
        return build_embedder(s.embedder, s.model, s.device, s.batch_size)

    def model_id(self) -> str:
        """The model id without loading the model."""
        s = self.settings()
        if s.embedder == "sentence-transformers":
            return resolve_model(s.model)[1]
        return build_embedder(s.embedder, s.model, "cpu", 1).model_id

    def chunker_settings(self, embedder: Embedder | None = None) -> ChunkerSettings:
        s = self.settings()
        return ChunkerSettings(
            max_tokens=s.chunk_tokens,
            overlap=s.chunk_overlap,
            model_max_tokens=embedder.max_seq_length if embedder else s.chunk_tokens + 2,
        )

    def chunker(self, embedder: Embedder) -> Chunker:
        return Chunker(embedder.tokenizer(), self.chunker_settings(embedder), tokenizer_id=embedder.model_id)

    def index_table(self, embedder: Embedder) -> ChunkTable:
        s = self.settings()
        return ChunkTable(
            s.lancedb_uri,
            embedder.model_id,
            embedder.dimension,
            metadata_fields(load_contracts(s.contracts_dir)),
        )

    def index_writer(self, embedder: Embedder) -> IndexWriter:
        return IndexWriter(self.index_table(embedder), self.settings().ann_min_rows)

    def chunker_version(self) -> str:
        s = self.settings()
        return f"tokens={s.chunk_tokens},overlap={s.chunk_overlap}"

    def config_versions(self, contracts: dict[str, Contract]) -> dict[str, str]:
        """Settings that act as inputs: changing them makes the assets that read them stale."""
        versions = {"config/chunker": self.chunker_version(), "config/model": self.model_id()}
        for source, contract in contracts.items():
            versions[f"contract/{source}"] = contract_version(contract)
        return versions
