"""search_index: one model's whole index as search sees it, evaluated on the canary; and the
``canary_regression`` check that warns, then blocks, when search gets worse."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from embedding_assets.core.hashing import sha256_text
from embedding_assets.defs.bronze import STEP_RETRY
from embedding_assets.defs.failures import classified
from embedding_assets.defs.gold import GOLD_DOC_SCHEMA
from embedding_assets.defs.index import expected_index
from embedding_assets.defs.keys import SEARCH_INDEX, VECTOR_INDEX, models, shape_tag
from embedding_assets.defs.memo import Consumes, Memo, consumed_versions
from embedding_assets.defs.resources import (
    CANARY_QUERIES,
    EMBEDDING_MODEL,
    INDEX_SETTINGS,
    MODEL_SETTINGS,
    PipelineResource,
)
from embedding_assets.embed.registry import ModelSpec
from embedding_assets.evaluate.canary import CanaryError, check_relevant, load_canary
from embedding_assets.evaluate.search_quality import Evaluation, evaluate_index, regression
from embedding_assets.gold.documents import latest_documents
from embedding_assets.index.reader import IndexReader
from embedding_assets.index.repair import Reconciliation, reconcile
from embedding_assets.refine.report import CheckOutcome

SEARCH_CODE = "search-index-1"
CANARY_CHECK = "canary_regression"
CONSUMES = Consumes(
    shape="model", model_assets=(VECTOR_INDEX,), settings=(EMBEDDING_MODEL, INDEX_SETTINGS, CANARY_QUERIES)
)


@dataclass(frozen=True)
class ModelReport:
    spec: ModelSpec
    evaluation: Evaluation | None  # None without canary files
    reconciliation: Reconciliation

    @property
    def complete(self) -> bool:
        """The index covers every live gold chunk (dead-lettered ones aside) and nothing else."""
        return self.reconciliation.complete


def evaluate_model(pipeline: PipelineResource, spec: ModelSpec) -> ModelReport:
    """The model's index against gold (complete?) and against the canary (how good?)."""
    lake, table = pipeline.lake(), pipeline.index_table(spec)
    recon = reconcile(table, expected_index(lake, spec))
    queries = load_canary(pipeline.settings().canary)
    if not queries:
        return ModelReport(spec, None, recon)
    live = latest_documents(lake.read("gold/documents", GOLD_DOC_SCHEMA)).filter(~pl.col("deleted"))
    check_relevant(queries, set(live["doc_id"].to_list()))
    vectors = pipeline.embedder(spec).encode([q.query for q in queries])
    return ModelReport(spec, evaluate_index(IndexReader(table), queries, vectors), recon)


def canary_figures(metadata: Mapping[str, Any]) -> dict[str, float]:
    """``<mode>/<metric>`` -> value from a ``search_index`` materialisation's metadata."""
    return {k: float(v.value) for k, v in metadata.items() if "@10" in k and isinstance(v.value, float)}


def previous_figures(memo: Memo) -> dict[str, float] | None:
    """The canary figures of the model's previous evaluation, if it read the same canary."""
    record = memo.records[SEARCH_INDEX]
    mat = record.asset_materialization if record is not None else None
    if mat is None or "consumed" not in mat.metadata:
        return None
    consumed: Mapping[str, str] = mat.metadata["consumed"].value  # type: ignore[assignment]
    if consumed.get(CANARY_QUERIES) != memo.consumed.get(CANARY_QUERIES):
        return None
    return canary_figures(mat.metadata)


def canary_outcome(report: ModelReport, previous: dict[str, float] | None) -> CheckOutcome:
    figures = report.evaluation.figures() if report.evaluation else {}
    if not figures:
        return CheckOutcome(CANARY_CHECK, True, False, "no canary queries (data/canary/*.jsonl)", {})
    verdict = regression(figures, previous)
    return CheckOutcome(
        CANARY_CHECK, verdict.passed, verdict.blocking, verdict.message, {**figures, **verdict.figures}
    )


@dg.asset(
    key=SEARCH_INDEX,
    deps=CONSUMES.deps(MODEL_SETTINGS),
    partitions_def=models,
    tags=shape_tag("model"),
    group_name="index",
    kinds={"lancedb"},
    code_version=SEARCH_CODE,
    retry_policy=STEP_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            CANARY_CHECK,
            asset=SEARCH_INDEX,
            blocking=True,
            partitions_def=models,
            description="The canary's recall@10, MRR@10 and nDCG@10 in each search mode: a drop of more "
            "than 2 points against the model's previous evaluation warns, more than 5 fails.",
        )
    ],  # fmt: skip
)
@classified
def search_index(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> Iterator[Any]:
    """One model's whole index as search sees it: its canary figures per mode (recall@10, MRR@10,
    nDCG@10) and whether it covers every live gold chunk (a candidate must, to be promoted)."""
    spec = pipeline.spec(str(context.partition_key))
    settings = {**pipeline.setting_versions(), **pipeline.model_setting_versions(spec)}
    memo = Memo(context, consumed_versions(context.instance, CONSUMES, str(context.partition_key), settings))
    decision = memo.decide(lambda _, __: pipeline.index_table(spec).exists())
    if decision.skip:
        yield from memo.kept(decision)
        return
    try:
        report = evaluate_model(pipeline, spec)
    except CanaryError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    check = canary_outcome(report, previous_figures(memo))
    recon = report.reconciliation
    metadata = {
        "dagster/row_count": recon.actual,
        "table": spec.table,
        "lancedb_version": report.evaluation.index_version
        if report.evaluation
        else pipeline.index_table(spec).version(),
        "complete": report.complete,
        "missing": len(recon.missing),
        "unchunked": recon.unchunked,
        "extra": len(recon.extra),
        "stale": len(recon.stale),
        "canary_queries": report.evaluation.scores["hybrid"].queries if report.evaluation else 0,
        **(report.evaluation.figures() if report.evaluation else {}),
        "model_id": spec.model_id,
    }
    version = sha256_text(memo.consumed[f"earlier:{VECTOR_INDEX.to_user_string()}"], settings[CANARY_QUERIES])
    yield from memo.built(SEARCH_INDEX, version, metadata, decision, [check])
