"""Point in time: ``search --as-of`` and :mod:`embedding_assets.history` answer from the Delta and
LanceDB versions of a moment, across an update and a delete, and say so when a moment is before
the first sync or its files were vacuumed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.defs.factory import build_defs
from embedding_assets.defs.maintenance import MAINTENANCE_JOB
from embedding_assets.defs.sync import sync
from embedding_assets.history import HistoryError, chunks_as_of, documents_as_of
from embedding_assets.index.searcher import IndexEmpty, SearchRefused, run_search
from embedding_assets_tests.conftest import HASHING, make_pipeline

pytestmark = pytest.mark.slow
B2 = "2026-11-08"
UPDATED, DELETED = "helpdesk:T-1007", "helpdesk:T-1013"  # the second batch rewrites one, deletes the other
NEW_TEXT = "the replacement thermostat arrived"


def _hits(settings: object, doc_id: str, when: datetime | None) -> list[str]:
    """The texts of a document's chunks in the index as of ``when`` (a vector search narrowed to
    the document finds every chunk it has there)."""
    where = f"doc_id = '{doc_id}'"
    results = run_search(settings, ["thermostat schedule"], 50, "vector", None, where=where, as_of=when)  # type: ignore[arg-type]
    return [hit["text"] for hit in results[0]["hits"]]


def test_search_and_gold_as_of_a_moment_across_an_update_and_a_delete(
    root: Path, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    aside = tmp_path / "aside"
    for folder in (root / "landing").iterdir():
        if (folder / B2).is_dir():
            shutil.move(folder / B2, aside / folder.name / B2)
    pipeline, quiet = make_pipeline(root), (lambda _: None)
    before = datetime.now(UTC)
    time.sleep(1.1)  # Delta and LanceDB stamp versions in milliseconds
    assert sync(instance, pipeline, echo=quiet).ok
    first = datetime.now(UTC)
    time.sleep(1.1)
    for folder in aside.iterdir():
        shutil.move(folder / B2, root / "landing" / folder.name / B2)
    assert sync(instance, pipeline, echo=quiet).ok
    settings = pipeline.settings()

    # The index: the deleted ticket was there, the rewritten one read as it did then.
    assert _hits(settings, DELETED, first) and not _hits(settings, DELETED, None)
    assert not any(NEW_TEXT in t for t in _hits(settings, UPDATED, first))
    assert any(NEW_TEXT in t for t in _hits(settings, UPDATED, None))
    assert _hits(settings, UPDATED, datetime.now(UTC)) == _hits(settings, UPDATED, None)

    # Gold, through the Python API: the same moments, the same answers.
    then, now = (
        documents_as_of(first, settings.lake_uri),
        documents_as_of(datetime.now(UTC), settings.lake_uri),
    )
    assert DELETED in then["doc_id"].to_list() and DELETED not in now["doc_id"].to_list()
    assert DELETED in documents_as_of(datetime.now(UTC), settings.lake_uri, deleted=True)["doc_id"].to_list()
    text = {
        d: dict(zip(f["doc_id"], f["text"], strict=True))[UPDATED] for d, f in (("then", then), ("now", now))
    }
    assert NEW_TEXT not in text["then"] and NEW_TEXT in text["now"]
    chunks = chunks_as_of(first, HASHING, settings.lake_uri)
    assert set(chunks["doc_id"]) == set(then["doc_id"]) - {
        d for d, t in zip(then["doc_id"], then["text"], strict=True) if not t
    }

    # Before the first sync there is nothing to answer from; the message says so.
    with pytest.raises(IndexEmpty, match="nothing was indexed at"):
        run_search(settings, ["kettle"], 5, "fts", None, as_of=before)
    with pytest.raises(HistoryError, match="did not exist yet"):
        documents_as_of(before, settings.lake_uri)
    with pytest.raises(SearchRefused, match="not both"):
        run_search(settings, ["kettle"], 5, "fts", None, index_version=1, as_of=first)

    # A moment whose files a later run replaced and maintenance then vacuumed (with a window of
    # 0 h) is gone, and said to be.
    tickets = root / "landing" / "helpdesk" / "2026-11-01" / "tickets.jsonl"
    tickets.write_text(tickets.read_text().replace("Since last week", "Since last month", 1))
    assert sync(instance, pipeline, echo=quiet).ok
    bare = make_pipeline(root, model_retention_h=0.0)
    job = build_defs(Path(bare.contracts_dir or ""), bare).get_job_def(MAINTENANCE_JOB)
    assert job.execute_in_process(instance=instance).success
    with pytest.raises(HistoryError, match="vacuumed"):
        documents_as_of(first, settings.lake_uri)
    with pytest.raises(IndexEmpty, match="cleaned up"):
        run_search(settings, ["kettle"], 5, "fts", None, as_of=first)


def test_the_cli_takes_as_of_and_refuses_a_bad_one(root: Path) -> None:
    env = {
        **os.environ,
        "EA_DATA_DIR": str(root),
        "EA_EMBEDDER": "hashing",
        "DAGSTER_HOME": str(root / "dagster"),
    }
    run = [sys.executable, "-m", "embedding_assets.cli", "search", "kettle", "--mode", "fts", "--as-of"]
    bad = subprocess.run([*run, "last tuesday"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--as-of must be an ISO 8601 time" in bad.stderr
    early = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    empty = subprocess.run([*run, early], capture_output=True, text=True, env=env, timeout=120)
    assert empty.returncode != 0 and "run `embedding-assets sync` first" in empty.stderr + empty.stdout
