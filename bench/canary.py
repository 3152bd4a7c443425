"""Search quality on the canary (data/canary): recall@10, MRR@10 and nDCG@10 of every mode, for
the serving model and a candidate fine-tuned from it on the exported training triples (a few
steps of MultipleNegativesRankingLoss on the CPU), and the fusion sweep the hybrid default was
chosen from. Quality figures are not timings: they are the same on any machine."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg

from embedding_assets.defs.resources import PipelineResource

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SWEEP = [(k, fts) for k in (2, 5, 20, 60) for fts in (0.7, 1.0, 1.5, 2.0)]


def _pipeline(root: Path, smoke: bool) -> PipelineResource:
    return PipelineResource(
        landing_dir=str(root / "landing"), contracts_dir=str(root / "contracts"), canary_dir=str(root / "canary"),
        lake_uri=str(root / "lake"), lancedb_uri=str(root / "lancedb"),
        embedder_kind="hashing" if smoke else "sentence-transformers", device="cpu", landing_settle_s=0.0,
    )  # fmt: skip


def fusion_sweep(pipeline: PipelineResource) -> list[dict[str, Any]]:
    """Hybrid on the serving model's index for each RRF k and full-text weight (depth 50)."""
    from embedding_assets.evaluate.canary import load_canary
    from embedding_assets.evaluate.search_quality import evaluate_index
    from embedding_assets.index.fusion import Fusion
    from embedding_assets.index.reader import IndexReader

    spec = pipeline.spec()
    queries = load_canary(pipeline.settings().canary)
    vectors = pipeline.embedder(spec).encode([q.query for q in queries])
    out = []
    for k, fts in SWEEP:
        fusion = Fusion(k=k, vector_weight=1.0, fts_weight=fts, depth=50)
        scores = evaluate_index(
            IndexReader(pipeline.index_table(spec), fusion=fusion), queries, vectors, ("hybrid",)
        )
        out.append(
            {
                "fusion": fusion.describe(),
                **{m: round(v, 3) for m, v in scores.scores["hybrid"].as_dict().items()},
            }
        )
    return out


def run(smoke: bool) -> dict[str, Any]:
    from embedding_assets.defs.lifecycle import add_model, evaluate
    from embedding_assets.defs.sync import sync
    from embedding_assets.defs.training import export_training, train_candidate
    from embedding_assets.index.fusion import FUSION_DEFAULTS

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for part in ("contracts", "landing", "canary"):
            shutil.copytree(REPO_DATA / part, root / part)
        pipeline = _pipeline(root, smoke)
        (Path(tmp) / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(tmp) / "dagster")) as instance:
            summary = sync(instance, pipeline, echo=lambda _: None)
            assert summary.ok, summary.render()
            exported = export_training(pipeline)
            base = pipeline.spec().name
            began = time.perf_counter()
            if smoke:  # the test embedder cannot be trained: a second hashing model stands in
                candidate = add_model(instance, pipeline, "other", echo=lambda _: None).spec.name
                training: dict[str, Any] = {"skipped": "smoke: the hashing embedder is not trainable"}
            else:
                trained = train_candidate(instance, pipeline, base, epochs=1, echo=lambda _: None)
                candidate = trained.name
                training = {
                    "steps": trained.steps,
                    "triples": trained.examples,
                    "train_s": round(trained.seconds, 1),
                }
            training["build_and_train_s"] = round(time.perf_counter() - began, 1)
            figures = {e.name: e.figures for e in evaluate(instance, pipeline)}
            sweep = fusion_sweep(pipeline)
    return {
        "queries": sum(1 for f in (REPO_DATA / "canary").glob("*.jsonl") for line in f.read_text().splitlines() if line.strip()),
        "serving": base,
        "candidate": candidate,
        "fusion": FUSION_DEFAULTS.describe(),
        "training": {**training, "train_triples": exported.train, "dev_triples": exported.dev,
                     "held_out_canary_documents": exported.held_out_canary_documents},
        "figures": figures,
        "fusion_sweep": sweep,
    }  # fmt: skip


def render(c: dict[str, Any]) -> list[str]:
    lines = ["", f"### Canary (section 7): {c['queries']} labelled queries, every mode, both models", ""]
    lines += ["| model | mode | recall@10 | MRR@10 | nDCG@10 |", "|---|---|---|---|---|"]
    for model, figures in c["figures"].items():
        role = "serving" if model == c["serving"] else "fine-tuned candidate"
        for mode in ("vector", "fts", "hybrid"):
            lines.append(
                f"| {model} ({role}) | {mode} | {figures.get(mode + '/recall@10')} | {figures.get(mode + '/mrr@10')} | "
                f"{figures.get(mode + '/ndcg@10')} |"
            )
    lines += [
        "",
        f"Training: {c['training']}.",
        "",
        f"Hybrid default: {c['fusion']}. The sweep it was chosen from:",
        "",
    ]
    lines += ["| fusion | recall@10 | MRR@10 | nDCG@10 |", "|---|---|---|---|"]
    lines += [
        f"| {r['fusion']} | {r['recall@10']} | {r['mrr@10']} | {r['ndcg@10']} |" for r in c["fusion_sweep"]
    ]
    return lines
