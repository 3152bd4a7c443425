"""Data quality end to end: real Delta tables, a real LanceDB and real Dagster runs.

Bad rows are quarantined with their reasons and never reach gold or the index; a batch over its
quarantine threshold is held back until the contract or the data is fixed; a contract that adds
a column evolves silver, gold and the index without re-embedding anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest
import yaml
from deltalake import DeltaTable

from embedding_assets.cli import main as cli_main
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.sync import sync
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets_tests import malformed
from embedding_assets_tests.conftest import CORE_SOURCES, index_snapshot, make_pipeline, open_index

SAMPLE_SOURCES = CORE_SOURCES  # the whole-sync tests here need no HTML or PDF

pytestmark = pytest.mark.slow
BATCH = "2026-11-15"


class Echo(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def _tickets_root(root: Path, rate: float) -> Path:
    malformed.write_fixture(root, BATCH, max_quarantine_rate=rate)
    return root


def _check_status(instance: dg.DagsterInstance, asset: str, check: str) -> str:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    return record.status.value


def test_malformed_rows_are_quarantined_and_no_garbage_reaches_gold_or_the_index(
    root: Path, instance: dg.DagsterInstance
) -> None:
    _tickets_root(root, 0.9)
    echo = Echo()
    summary = sync(instance, make_pipeline(root), echo=echo)
    assert summary.ok, summary.render()
    quarantine = pl.read_delta(str(root / "lake" / "quarantine" / "tickets")).filter(pl.col("batch") == BATCH)
    silver = pl.read_delta(str(root / "lake" / "silver" / "tickets")).filter(pl.col("batch") == BATCH)
    # rows read = silver + quarantined + duplicates dropped, and every rejected row says why
    assert silver.height + quarantine.height == len(malformed.LINES)
    assert quarantine.group_by("kind").len().sort("kind").rows() == [
        ("duplicate", 1),
        ("invalid", 18),
        ("superseded", 1),
    ]
    rules = {r.split(":")[0] for reasons in quarantine["reasons"] for r in reasons}
    assert rules >= malformed.malformed_classes()
    for check in ("rows_accounted", "quarantine_rate"):
        assert _check_status(instance, "silver_tickets", check) == "SUCCEEDED", check
    gold = pl.read_delta(str(root / "lake" / "gold" / "documents")).filter(pl.col("source") == "tickets")
    assert set(gold["doc_id"]) == malformed.VALID_IDS
    index = index_snapshot(root)
    tickets = index.filter(pl.col("source") == "tickets")
    assert set(tickets["doc_id"]) == malformed.VALID_IDS
    for marker in malformed.GARBAGE_MARKERS:
        assert not gold["text"].str.contains(marker, literal=True).any(), marker
        assert not index["text"].str.contains(marker, literal=True).any(), marker
    # metadata columns from the contract are real, filterable index columns
    assert tickets.schema["escalated"] == pl.Boolean and tickets.schema["score"] == pl.Float64
    # the quality report, stored and printed by the CLI
    assert cli_main(["quality", "--batch", BATCH, "--source", "tickets", "--json"]) == 0


def test_a_batch_over_its_quarantine_threshold_is_held_back_until_fixed(
    root: Path, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    _tickets_root(root, 0.05)
    pipeline = make_pipeline(root)
    summary = sync(instance, pipeline, echo=Echo())
    assert not summary.ok  # the CLI exits non-zero
    [why] = summary.blocked[BATCH]
    assert why.startswith("silver_tickets: quarantine_rate: ")
    assert "quarantine_rate: 18 of 25 rows quarantined" in why and "invalid_json (1 row)" in why
    assert "BLOCKED: batch 2026-11-15" in summary.render()
    gold = pl.read_delta(str(root / "lake" / "gold" / "documents"))
    assert gold.filter(pl.col("batch") == BATCH).height == 0  # nothing flowed downstream
    assert cli_main(["quality", "--batch", BATCH, "--source", "tickets"]) == 1
    assert "| quarantine_rate | BLOCK: 18 of 25 rows" in capsys.readouterr().out
    # Fix the contract (accept this source's noise), re-run: the batch flows.
    malformed.write_fixture(root, BATCH, max_quarantine_rate=0.9)
    again = sync(instance, pipeline, echo=Echo())
    assert again.ok, again.render()
    gold = pl.read_delta(str(root / "lake" / "gold" / "documents"))
    assert set(gold.filter(pl.col("source") == "tickets")["doc_id"]) == malformed.VALID_IDS


def _add_language_field(root: Path) -> None:
    path = root / "contracts" / "helpdesk.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["fields"]["language"] = {"type": "str", "default": "en", "allowed": ["en", "de", "fr"]}
    raw["metadata"] = [*raw["metadata"], "language"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_a_new_contract_column_evolves_silver_gold_and_the_index_without_reembedding(
    root: Path, pipeline: PipelineResource, instance: dg.DagsterInstance
) -> None:
    assert sync(instance, pipeline, echo=Echo()).ok
    silver_path = str(root / "lake" / "silver" / "helpdesk")
    version_before = DeltaTable(silver_path).version()
    rows_before = pl.read_delta(silver_path).height
    _add_language_field(root)
    summary = sync(instance, pipeline, echo=Echo())
    assert summary.ok, summary.render()
    assert summary.totals["chunks_embedded"] == 0  # metadata drift: nothing re-embedded
    assert summary.rebuilt["vector_index"] == 2  # ...but both partitions' index rows updated
    # Delta merged the schema: the new column is there, and history still reads without it.
    silver = pl.read_delta(silver_path)
    assert silver.height == rows_before and set(silver["f_language"]) == {"en"}
    old = pl.read_delta(silver_path, version=version_before)
    assert "f_language" not in old.columns and old.height == rows_before
    gold = pl.read_delta(str(root / "lake" / "gold" / "documents"))
    assert gold.filter(pl.col("source") == "helpdesk")["language"].to_list() == ["en"] * rows_before
    # The index got the column, backfilled: every old row has the default.
    index = index_snapshot(root)
    assert index.filter(pl.col("source") == "helpdesk")["language"].null_count() == 0
    # A new batch with German tickets: filters on the new field work across old and new rows.
    new = root / "landing" / "helpdesk" / "2026-11-22"
    new.mkdir(parents=True)
    tickets = [
        {"ticket_id": f"T-9{i}", "subject": "Heizung", "body": f"Die Heizung {i} bleibt kalt, obwohl der "
         "Thermostat auf zwanzig Grad steht.", "priority": "low", "status": "open", "language": "de",
         "modified": "2026-11-21T08:00:00Z"}
        for i in range(3)
    ]  # fmt: skip
    (new / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tickets))
    assert sync(instance, pipeline, echo=Echo()).ok
    store = open_index(str(root / "lancedb"), HashingEmbedder().model_id, HashingEmbedder().dimension)
    german = store.table.read(["doc_id", "language"], "language = 'de'")
    assert sorted(german["doc_id"]) == ["helpdesk:T-90", "helpdesk:T-91", "helpdesk:T-92"]
    english = store.table.read(["doc_id", "batch"], "language = 'en' AND source = 'helpdesk'")
    assert set(english["batch"]) == {"2026-11-01", "2026-11-08"}
    table = lancedb.connect(str(root / "lancedb")).open_table(store.table.name)
    hits = table.search([0.0] * HashingEmbedder().dimension).where("language = 'de'").limit(10).to_list()
    assert {h["doc_id"] for h in hits} == {"helpdesk:T-90", "helpdesk:T-91", "helpdesk:T-92"}
