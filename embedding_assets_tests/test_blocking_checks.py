"""Blocking checks stop bad data before it reaches vectors, and the sync says so."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets_tests.conftest import CORE_SOURCES, materialization_count

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

pytestmark = pytest.mark.slow


def test_failed_silver_schema_check_blocks_gold(
    pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("embedding_assets.defs.silver.silver_failures", lambda frame: ["doc_id: not unique"])
    summary = sync(instance, pipeline, echo=lambda _: None)
    assert not summary.ok
    assert all(any(w.startswith("silver_") for w in why) for why in summary.blocked.values())
    assert materialization_count(instance, "gold_documents") == 0
    assert materialization_count(instance, "vector_index") == 0
    # The next plan reports the partitions as blocked instead of running downstream.
    monkeypatch.undo()
    again = sync(instance, pipeline, echo=lambda _: None)
    assert again.blocked and materialization_count(instance, "gold_documents") == 0


def test_invalid_vectors_never_reach_the_index(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: HashingEmbedder, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.dimension), np.nan, dtype=np.float32)
        return out

    monkeypatch.setattr(HashingEmbedder, "encode", broken)
    summary = sync(instance, pipeline, echo=lambda _: None)
    assert not summary.ok
    assert materialization_count(instance, "vector_index") == 0
    assert not (root / "lancedb" / "chunks__hashing_embedder_v1.lance").exists()


def test_fixing_the_contract_lets_a_blocked_batch_flow(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("embedding_assets.defs.silver.silver_failures", lambda frame: ["doc_id: not unique"])
    assert not sync(instance, pipeline, echo=lambda _: None).ok
    monkeypatch.undo()
    helpdesk = root / "contracts" / "helpdesk.yaml"
    helpdesk.write_text(helpdesk.read_text() + "# reviewed\n")
    # Only the helpdesk contract changed: its silver re-runs in every batch; the others stay held.
    partial = sync(instance, pipeline, echo=lambda _: None)
    assert partial.blocked.keys() == {"2026-11-01", "2026-11-08"}
    assert materialization_count(instance, "silver_helpdesk") == 4
    assert materialization_count(instance, "silver_catalog") == 2
    assert materialization_count(instance, "gold_documents") == 0
    for path in (root / "contracts").glob("*.yaml"):  # every other source's contract
        if path != helpdesk:
            path.write_text(path.read_text() + "# reviewed\n")
    fixed = sync(instance, pipeline, echo=lambda _: None)
    assert fixed.ok, fixed.render()
    assert materialization_count(instance, "vector_index") == 2
    assert fixed.reconciliation.startswith("ok")
