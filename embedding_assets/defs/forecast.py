"""``sync --dry-run``: the runs a sync would launch, and inside each, which assets would rebuild and
how many chunks would be embedded; computed in memory, nothing written.

Each asset is judged by the same rule as when it runs (``memo.decide`` over the same ``Consumes``
declarations), with the data versions of upstream assets that would rebuild predicted by the same
pure functions the assets call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.contracts.model import Contract
from embedding_assets.core.lake import Lake
from embedding_assets.defs import embed as embed_defs
from embedding_assets.defs import index as index_defs
from embedding_assets.defs.bronze import BRONZE_CODE
from embedding_assets.defs.gold import (
    CHUNKS_CODE,
    CHUNKS_CONSUMES,
    DOCUMENTS_CODE,
    GOLD_DOC_SCHEMA,
    documents_consumes,
)
from embedding_assets.defs.keys import (
    EMBEDDINGS,
    GOLD_CHUNKS,
    GOLD_DOCUMENTS,
    VECTOR_INDEX,
    batch_model,
    layer_key,
    split_key,
)
from embedding_assets.defs.memo import Consumes, as_previous, partition_versions, previous_record
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.silver import SILVER_CODE, silver_consumes
from embedding_assets.defs.sync import Options, model_runs_now, requests_now
from embedding_assets.embed.encode import CACHE_SCHEMA, embeddings_version
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.gold.assemble import assemble, silver_schema
from embedding_assets.gold.chunking import CHUNK_SCHEMA, Chunker, chunk_documents, chunks_version
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import EMPTY_HASH, read_raw_batch, scan_landing
from embedding_assets.memo import EARLIER, MISSING, decide, earlier_version
from embedding_assets.refine.silver import bronze_to_silver, documents_version, quarantine_version

ASSUMED_CHUNKS_PER_S = {"cpu": 50.0, "cuda": 1500.0}


@dataclass
class BatchForecast:
    batch: str  # the run's partition: a batch, or a batch|model
    why: str
    rebuilt: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    chunks_total: int = 0
    to_embed: frozenset[str] = frozenset()
    tokens_to_embed: int = 0  # of those chunks, in the model's own tokenizer
    price_per_1k_tokens: float = 0.0  # an API model's price (0: local, free)

    @property
    def cost(self) -> float:
        return self.tokens_to_embed / 1000 * self.price_per_1k_tokens

    @property
    def chunks_to_embed(self) -> int:
        return len(self.to_embed)


@dataclass
class Predictor:
    """Plays one batch's assets forward: each is judged as the memo would, and what would be
    rebuilt is computed in memory so that its downstream is judged on the right version."""

    instance: dg.DagsterInstance
    lake: Lake
    batch: str
    settings: Mapping[str, str]
    forecast: BatchForecast
    versions: dict[str, str] = field(default_factory=dict)  # asset key -> its data version after the run
    partition: str = ""  # the partition judged (default: the batch)

    def judge(
        self, keys: list[dg.AssetKey], code: str, consumes: Consumes, extra: Mapping[str, str] = {}
    ) -> bool:
        consumed = {
            "code": code,
            **extra,
            **{
                k.to_user_string(): self.versions[k.to_user_string()]
                for k in (*consumes.assets, *consumes.batch_assets)
            },
        }
        consumed |= {name: self.settings[name] for name in consumes.settings}
        for key in consumes.earlier:
            consumed[f"{EARLIER}{key.to_user_string()}"] = earlier_version(
                partition_versions(self.instance, key), self.batch
            )
        partition = self.partition or self.batch
        previous = {k: as_previous(previous_record(self.instance, k, partition)) for k in keys}
        rebuild = any(decide(consumed, p, lambda: True).rebuild for p in previous.values())
        for key, p in previous.items():
            (self.forecast.rebuilt if rebuild else self.forecast.kept).append(key.to_user_string())
            if not rebuild and p is not None:
                self.versions[key.to_user_string()] = p.data_version
        return rebuild

    def refine(self, contract: Contract, landing_dir: Any) -> pl.DataFrame:
        """A source's bronze and silver; its silver rows after the run."""
        source, batch = contract.source, self.batch
        landed = read_raw_batch(contract, landing_dir / source / batch)
        bronze = layer_key("bronze", source)
        if self.judge([bronze], BRONZE_CODE, Consumes(), {f"landing_{source}": landed.content_hash}):
            existing = self.lake.read_batch(f"bronze/{source}", batch, bronze_lib.BRONZE_SCHEMA)
            held = (
                landed.content_hash
                if landed.files
                else bronze_lib.latest_delivery_hash(existing) or EMPTY_HASH
            )
            self.versions[bronze.to_user_string()] = bronze_lib.bronze_version(held)
            rows = (
                landed.records
                if landed.files
                else bronze_lib.as_raw_records(bronze_lib.latest_delivery(existing))
            )
        else:
            existing = self.lake.read_batch(f"bronze/{source}", batch, bronze_lib.BRONZE_SCHEMA)
            rows = bronze_lib.as_raw_records(bronze_lib.latest_delivery(existing))
        keys = [layer_key("quarantine", source), layer_key("silver", source)]
        if not self.judge(keys, SILVER_CODE, silver_consumes(source)):
            return self.lake.read_batch(f"silver/{source}", batch, silver_schema(contract))
        result = bronze_to_silver(contract, rows, batch)
        self.versions[keys[1].to_user_string()] = documents_version(result.silver)
        self.versions[keys[0].to_user_string()] = quarantine_version(result.rejected)
        return result.silver

    def documents(
        self,
        contracts: dict[str, Contract],
        silvers: dict[str, pl.DataFrame],
        pending: dict[str, pl.DataFrame],
    ) -> pl.DataFrame:
        if not self.judge([GOLD_DOCUMENTS], DOCUMENTS_CODE, documents_consumes(contracts)):
            return self.lake.read_batch("gold/documents", self.batch, GOLD_DOC_SCHEMA)
        documents = assemble(self.lake, contracts, silvers, self.batch, pending).documents
        self.versions[GOLD_DOCUMENTS.to_user_string()] = documents_version(documents)
        return documents

    def chunks(self, documents: pl.DataFrame, chunker: Chunker, model: str) -> pl.DataFrame:
        where = {"model": model}
        if not self.judge([GOLD_CHUNKS], CHUNKS_CODE, CHUNKS_CONSUMES):
            return self.lake.read_batch("gold/chunks", self.batch, CHUNK_SCHEMA, where)
        earlier = self.lake.read_batch("gold/chunks", self.batch, CHUNK_SCHEMA).unique(
            ["chunk_id", "split_hash"]
        )
        chunks = chunk_documents(documents, chunker, earlier, model)
        self.versions[GOLD_CHUNKS.to_user_string()] = chunks_version(chunks)
        return chunks

    def embeddings(self, chunks: pl.DataFrame, model_id: str, pending: frozenset[str]) -> None:
        self.forecast.chunks_total = chunks.height
        if not self.judge([EMBEDDINGS], embed_defs.EMBEDDINGS_CODE, embed_defs.CONSUMES):
            return
        of_model = (pl.col("model_id") == model_id) & pl.col("chunk_hash").is_in(
            chunks["chunk_hash"].implode()
        )
        cache = self.lake.read("embeddings", CACHE_SCHEMA, of_model)
        missing = chunks.select("chunk_hash").unique().join(cache, on="chunk_hash", how="anti")
        self.forecast.to_embed = frozenset(missing["chunk_hash"].to_list()) - pending
        embedded = chunks.filter(pl.col("chunk_hash").is_in(list(self.forecast.to_embed))).unique(
            "chunk_hash"
        )
        self.forecast.tokens_to_embed = int(embedded["n_tokens"].sum() or 0)
        frame = chunks.select("chunk_id", "chunk_hash").with_columns(pl.lit(model_id).alias("model_id"))
        self.versions[EMBEDDINGS.to_user_string()] = embeddings_version(frame)


def forecast_batch(
    instance: dg.DagsterInstance, pipeline: PipelineResource, contracts: dict[str, Contract], batch: str,
    why: str, pending: dict[str, pl.DataFrame],
) -> tuple[BatchForecast, str, pl.DataFrame]:  # fmt: skip
    """What one batch's run would do, and its gold/documents version and rows after it. ``pending``:
    each source's silver rows predicted for the batches forecast before it (not in the lake yet);
    this batch's are added to it."""
    predictor = Predictor(
        instance, pipeline.lake(), batch, pipeline.setting_versions(contracts), BatchForecast(batch, why)
    )
    landing_dir = pipeline.settings().landing_dir
    silvers = {s: predictor.refine(c, landing_dir) for s, c in contracts.items()}
    documents = predictor.documents(contracts, silvers, pending)
    for source, rows in silvers.items():
        pending[source] = (
            pl.concat([pending[source], rows], how="diagonal_relaxed") if source in pending else rows
        )
    return predictor.forecast, predictor.versions.get(GOLD_DOCUMENTS.to_user_string(), MISSING), documents


def forecast_model_run(
    instance: dg.DagsterInstance, pipeline: PipelineResource, spec: ModelSpec, batch: str, why: str,
    documents: tuple[str, pl.DataFrame], pending: frozenset[str],
) -> BatchForecast:  # fmt: skip
    """What one batch's run for one model would do. ``documents``: the batch's gold/documents
    version and rows as the batch's own run leaves them; ``pending``: chunk hashes that runs before
    it embed first."""
    partition = batch_model(batch, spec.name)
    settings = {**pipeline.setting_versions(), **pipeline.model_setting_versions(spec)}
    predictor = Predictor(
        instance, pipeline.lake(), batch, settings, BatchForecast(partition, why),
        {GOLD_DOCUMENTS.to_user_string(): documents[0]}, partition,
    )  # fmt: skip
    chunks = predictor.chunks(documents[1], pipeline.chunker(spec), spec.name)
    predictor.forecast.price_per_1k_tokens = spec.price_per_1k_tokens
    predictor.embeddings(chunks, spec.model_id, pending)
    predictor.judge([VECTOR_INDEX], index_defs.INDEX_CODE, index_defs.CONSUMES)
    return predictor.forecast


@dataclass
class SyncForecast:
    """What ``sync`` would do now; computed without writing anything."""

    batches: list[BatchForecast]
    chunks_per_s: float
    rate_source: str

    @property
    def chunks_to_embed(self) -> int:
        return sum(b.chunks_to_embed for b in self.batches)

    @property
    def chunks_reused(self) -> int:
        return sum(b.chunks_total - b.chunks_to_embed for b in self.batches if "embeddings" in b.rebuilt)

    def render(self) -> str:
        lines = ["dry run: nothing is written"]
        lines += [] if self.batches else ["nothing to do: every batch is up to date"]
        for b in self.batches:
            lines.append(
                f"[{b.batch}] one run ({b.why}): rebuilds {len(b.rebuilt)} assets: {', '.join(b.rebuilt) or 'none'}"
            )
            if "embeddings" in b.rebuilt:
                lines.append(
                    f"  {b.chunks_total} chunks: {b.chunks_to_embed} to embed, {b.chunks_total - b.chunks_to_embed} reused"
                    + _priced(b.tokens_to_embed, b.price_per_1k_tokens, b.cost)
                )
        estimate = self.chunks_to_embed / self.chunks_per_s if self.chunks_per_s else 0.0
        lines.append(
            f"total: {len(self.batches)} runs, {sum(len(b.rebuilt) for b in self.batches)} asset partitions rebuilt, "
            f"{self.chunks_to_embed} chunks to embed, {self.chunks_reused} reused; estimated embedding time "
            f"{estimate:.1f}s at {self.chunks_per_s:.0f} chunks/s ({self.rate_source})"
        )
        if self.cost:
            lines.append(f"API cost: {self.tokens_to_embed} tokens, {self.cost:.4f} at the registered prices")
        return "\n".join(lines)

    @property
    def tokens_to_embed(self) -> int:
        return sum(b.tokens_to_embed for b in self.batches if b.price_per_1k_tokens)

    @property
    def cost(self) -> float:
        return sum(b.cost for b in self.batches)


def _priced(tokens: int, price: float, cost: float) -> str:
    """An API model's tokens and their cost, for a batch line (nothing for a local model)."""
    return f"; {tokens} tokens, cost {cost:.4f} at {price:g} per 1k tokens" if price else ""


def forecast(instance: dg.DagsterInstance, pipeline: PipelineResource) -> SyncForecast:
    """The dry run: the runs ``sync`` would launch, each played forward in memory: every batch
    run, then every active model's run of each batch whose gold may change or that is due anyway."""
    contracts = pipeline.contracts()
    scan = scan_landing(pipeline.settings().landing_dir, contracts)
    requests, _, changed = requests_now(instance, pipeline, contracts, scan, Options(), {})
    state = pipeline.planned_state()
    active = pipeline.active_models(state)
    found, documents, predicted = [], {}, dict[str, pl.DataFrame]()
    for batch in sorted(requests.batches):  # in batch order: a later batch's gold reads the earlier silver
        run, version, docs = forecast_batch(
            instance, pipeline, contracts, batch, requests.why(batch), predicted
        )
        found.append(run)
        documents[batch] = (version, docs)
    due, _, _ = model_runs_now(instance, pipeline, active, changed, Options())
    pending = frozenset[str]()
    for spec in active:
        for batch in sorted(
            {*documents, *(split_key(k)[0] for k in due.batches if split_key(k)[1] == spec.name)}
        ):
            key = batch_model(batch, spec.name)
            why = due.why(key) if key in due.reasons else f"batch {batch} runs first"
            if batch not in documents:
                documents[batch] = (partition_versions(instance, GOLD_DOCUMENTS).get(batch, MISSING),
                                    pipeline.lake().read_batch("gold/documents", batch, GOLD_DOC_SCHEMA))  # fmt: skip
            run = forecast_model_run(instance, pipeline, spec, batch, why, documents[batch], pending)
            if run.rebuilt or key in due.reasons:
                found.append(run)
                pending |= run.to_embed
    serving = pipeline.spec(state=state)
    return SyncForecast(found, *embedding_rate(instance, serving.model_id, pipeline.settings().device))


def embedding_rate(instance: dg.DagsterInstance, model_id: str, device: str) -> tuple[float, str]:
    """Chunks per second measured by recent ``embeddings`` runs of this model, else an assumption."""
    chunks, seconds, used = 0, 0.0, 0
    for record in instance.fetch_materializations(EMBEDDINGS, limit=50, ascending=False).records:
        mat = record.asset_materialization
        meta: dict[str, Any] = {k: v.value for k, v in mat.metadata.items()} if mat else {}
        if meta.get("model_id") == model_id and float(meta.get("encode_seconds") or 0) > 0:
            chunks, seconds, used = (
                chunks + int(meta.get("chunks_embedded") or 0),
                seconds + float(meta["encode_seconds"]),
                used + 1,
            )
    if chunks >= 50 and seconds > 0:
        return chunks / seconds, f"measured by {used} recent embeddings runs of this model"
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return ASSUMED_CHUNKS_PER_S[kind], f"assumed for {kind}: no runs of this model to measure yet"
