"""``training export`` and ``model train``: triples from gold into a versioned Delta table, and a
fine-tuned candidate trained on them (sentence-transformers, MultipleNegativesRankingLoss, on the
CPU) that enters the registry like any added model: as a candidate, with its shadow built."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.defs.gold import GOLD_DOC_SCHEMA
from embedding_assets.defs.lifecycle import Added, add_model
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.embed.embedder import describe_model
from embedding_assets.embed.registry import RegistryError
from embedding_assets.evaluate.canary import load_canary
from embedding_assets.evaluate.training import (
    TRIPLE_DEFAULTS,
    TRIPLE_SCHEMA,
    TRIPLES_TABLE,
    TripleSettings,
    training_triples,
)
from embedding_assets.gold.documents import latest_documents

EXPORT_SCHEMA = pl.Schema(
    {**TRIPLE_SCHEMA, "gold_version": pl.Int64(), "exported_at": pl.Datetime("us", "UTC")}
)


@dataclass(frozen=True)
class Exported:
    table: str
    delta_version: int
    committed: bool
    gold_version: int
    documents: int
    held_out_canary_documents: int
    train: int
    dev: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        what = "written" if self.committed else "unchanged (gold and the canary are as at the last export)"
        return (
            f"{self.train + self.dev} triples ({self.train} train, {self.dev} dev) from {self.documents} documents "
            f"of gold/documents version {self.gold_version}, {self.held_out_canary_documents} canary documents "
            f"held out: {self.table} version {self.delta_version}, {what}"
        )


def export_training(pipeline: PipelineResource, settings: TripleSettings = TRIPLE_DEFAULTS) -> Exported:
    """Write the triples of gold's live documents (one gold version, read once) to ``training/triples``."""
    lake = pipeline.lake()
    gold_version = lake.version("gold/documents")
    if gold_version is None:
        raise RegistryError("gold/documents does not exist yet: run `embedding-assets sync` first")
    docs = latest_documents(lake.read("gold/documents", GOLD_DOC_SCHEMA, version=gold_version))
    live = docs.filter(~pl.col("deleted"))
    canary = load_canary(pipeline.settings().canary)
    held_out = {d for q in canary for d in q.relevant}
    triples = training_triples(live, held_out, [q.query for q in canary], settings)
    frame = triples.with_columns(
        pl.lit(gold_version, pl.Int64()).alias("gold_version"),
        pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("exported_at"),
    )
    written = lake.replace(TRIPLES_TABLE, frame, volatile=("exported_at",))
    splits = triples["split"].value_counts()
    count = dict(zip(splits["split"].to_list(), splits["count"].to_list(), strict=True))
    return Exported(
        TRIPLES_TABLE, written.version, written.committed, gold_version, live.height,
        len(held_out & set(live["doc_id"].to_list())), int(count.get("train", 0)), int(count.get("dev", 0)),
    )  # fmt: skip


@dataclass(frozen=True)
class Trained:
    name: str
    base: str
    path: str
    steps: int
    examples: int
    seconds: float
    triples_version: int
    added: Added

    def as_dict(self) -> dict[str, Any]:
        build = self.added.build
        return {
            "name": self.name, "base": self.base, "path": self.path, "steps": self.steps, "examples": self.examples,
            "seconds": round(self.seconds, 1), "triples_version": self.triples_version, "role": "candidate",
            "model_id": self.added.spec.model_id,
            "backfill": None if build is None else {"id": build.backfill_id, "failures": build.failed},
        }  # fmt: skip

    def render(self) -> str:
        return (
            f"trained {self.name} from {self.base}: {self.steps} steps on {self.examples} triples in {self.seconds:.0f} s "
            f"({TRIPLES_TABLE} version {self.triples_version}); added as a candidate. "
            f"`embedding-assets model eval --name {self.name}` measures it, `model promote {self.name}` serves it"
        )


def fine_tune(
    base_path: str,
    triples: pl.DataFrame,
    out: Path,
    *,
    epochs: int,
    max_steps: int,
    batch_size: int,
    seed: int = 0,
) -> int:
    """Fine-tune a sentence-transformers model on (query, positive, negative) with in-batch and
    hard negatives (MultipleNegativesRankingLoss); saves it to ``out``; returns the steps taken."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    torch.manual_seed(seed)
    model = SentenceTransformer(base_path, device="cpu")
    loss = losses.MultipleNegativesRankingLoss(model)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-5)
    rows = triples.select("query", "positive", "negative").rows()
    model.train()
    steps = 0
    for epoch in range(epochs):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, len(order) - 1, batch_size):  # a batch of one has no in-batch negatives
            batch = [rows[i] for i in order[start : start + batch_size]]
            features = [model.tokenize([r[c] for r in batch]) for c in range(3)]
            value = loss(features, torch.empty(0))
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            steps += 1
            if max_steps and steps >= max_steps:
                break
        if max_steps and steps >= max_steps:
            break
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return steps


def train_candidate(
    instance: dg.DagsterInstance, pipeline: PipelineResource, base: str, *, name: str | None = None,
    epochs: int = 1, max_steps: int = 0, batch_size: int = 16, build: bool = True,
    echo: Callable[[str], None] = print,
) -> Trained:  # fmt: skip
    """Fine-tune the registered model ``base`` on the exported training split and add the result as
    a candidate (refused, with nothing written, when there is nothing to train on)."""
    spec = pipeline.registry_state().get(base).spec
    if spec.embedder != "sentence-transformers":
        raise RegistryError(
            f"{base!r} is a {spec.embedder} model: only sentence-transformers models can be fine-tuned"
        )
    lake = pipeline.lake()
    version = lake.version(TRIPLES_TABLE)
    triples = lake.read(TRIPLES_TABLE, EXPORT_SCHEMA).filter(pl.col("split") == "train")
    if version is None or triples.height < 2:
        raise RegistryError("no training triples: run `embedding-assets training export` first")
    name = name or f"{base}-ft-{datetime.now(UTC):%Y%m%d%H%M}"
    out = pipeline.settings().models / name
    if out.exists():
        raise RegistryError(f"{out} exists already: choose another --name")
    echo(f"fine-tuning {base} on {triples.height} triples (version {version} of {TRIPLES_TABLE})")
    began = time.monotonic()
    steps = fine_tune(
        describe_model(spec.target).path,
        triples,
        out,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
    )
    (out / "embedding_assets_training.json").write_text(
        json.dumps({"base": base, "base_model_id": spec.model_id, "triples_version": version, "steps": steps})
    )
    seconds = time.monotonic() - began
    added = add_model(instance, pipeline, str(out), name, build=build, echo=echo, base=base)
    return Trained(name, base, str(out), steps, triples.height, seconds, version, added)
