from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from embedding_assets.core.hashing import sha256_text
from embedding_assets.embed.embedder import HashingEmbedder
from embedding_assets.index.repair import ExpectedIndex, reconcile, repair
from embedding_assets_tests.conftest import Index, open_index

T1 = datetime(2026, 11, 1, tzinfo=UTC)
T2 = datetime(2026, 11, 2, tzinfo=UTC)
EMB = HashingEmbedder()


def _batch(
    batch: str, docs: dict[str, tuple[datetime, list[str] | None]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """docs: doc_id -> (updated_at, chunk texts or None for a deletion)."""
    chunk_rows, doc_rows = [], []
    for doc_id, (ts, texts) in docs.items():
        doc_rows.append({"doc_id": doc_id, "updated_at": ts, "batch": batch, "deleted": texts is None})
        for i, text in enumerate(texts or []):
            chunk_rows.append(
                {
                    "chunk_id": f"{doc_id}#{i}",
                    "doc_id": doc_id,
                    "source": doc_id.split(":")[0],
                    "batch": batch,
                    "chunk_index": i,
                    "title": None,
                    "text": text,
                    "chunk_hash": sha256_text(text),
                    "updated_at": ts,
                    "metadata": "{}",
                    "vector": EMB.encode([text])[0].tolist(),
                }
            )
    schema = {
        "chunk_id": pl.String,
        "doc_id": pl.String,
        "source": pl.String,
        "batch": pl.String,
        "chunk_index": pl.Int32,
        "title": pl.String,
        "text": pl.String,
        "chunk_hash": pl.String,
        "updated_at": pl.Datetime("us", "UTC"),
        "metadata": pl.String,
        "vector": pl.List(pl.Float32),
    }
    return pl.DataFrame(chunk_rows, schema=schema), pl.DataFrame(
        doc_rows,
        schema={
            "doc_id": pl.String,
            "updated_at": pl.Datetime("us", "UTC"),
            "batch": pl.String,
            "deleted": pl.Boolean,
        },
    )


def _rows(store: Index) -> list[tuple]:
    return sorted(store.table.read(["chunk_id", "chunk_hash", "batch"]).iter_rows())


def test_newer_wins_deletes_propagate_and_surplus_chunks_go(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    store.writer.apply_batch(
        *_batch("b1", {"a:1": (T1, ["kettle one", "kettle two", "kettle three"]), "a:2": (T1, ["plug"])})
    )
    result = store.writer.apply_batch(*_batch("b2", {"a:1": (T2, ["kettle new"]), "a:2": (T2, None)}))
    assert (result.docs_written, result.docs_deleted, result.chunks_deleted) == (1, 1, 3)
    assert _rows(store) == [("a:1#0", sha256_text("kettle new"), "b2")]


def test_older_batch_replayed_later_never_overwrites_newer(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    newer = _batch("b2", {"a:1": (T2, ["fresh"])})
    older = _batch("b1", {"a:1": (T1, ["stale", "stale two"]), "a:3": (T1, None)})
    store.writer.apply_batch(*newer)
    result = store.writer.apply_batch(*older)
    assert result.docs_skipped_older == 1
    assert _rows(store) == [("a:1#0", sha256_text("fresh"), "b2")]


def test_apply_is_idempotent(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    batch = _batch("b1", {"a:1": (T1, ["one", "two"]), "a:2": (None, ["three"])})  # type: ignore[dict-item]
    store.writer.apply_batch(*batch)
    first = store.table.read(["chunk_id", "chunk_hash", "text", "vector"]).sort("chunk_id")
    store.writer.apply_batch(*batch)
    again = store.table.read(["chunk_id", "chunk_hash", "text", "vector"]).sort("chunk_id")
    assert first.equals(again) and again.height == 3


def test_indexes_and_search_modes(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension, ann_min_rows=300)
    texts = [
        f"device {i} {'kettle boils water' if i % 3 == 0 else 'lock opens door'} model {i}"
        for i in range(400)
    ]
    docs = {f"s{i % 2}:{i}": (T1, [t]) for i, t in enumerate(texts)}
    store.writer.apply_batch(*_batch("b1", docs))
    built = store.writer.ensure_indexes()
    assert set(built) == {"fts", "ann"} and store.reader.has_ann_index()
    query = "kettle boils water"
    vec = EMB.encode([query])[0]
    for mode in ("vector", "fts", "hybrid"):
        hits = store.reader.search(query, vec, k=5, mode=mode)  # type: ignore[arg-type]
        assert len(hits) == 5, mode
        assert all("kettle" in h["text"] for h in hits), mode
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True), mode
    only = store.reader.search(query, vec, k=5, mode="hybrid", source="s1")
    assert only and all(h["source"] == "s1" for h in only)
    assert np.isfinite([h["score"] for h in only]).all()


def test_reconcile_reports_missing_extra_and_stale(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    store.writer.apply_batch(*_batch("b1", {"a:1": (T1, ["one", "two"])}))
    expected = pl.DataFrame({"chunk_id": ["a:1#0", "a:9#0"], "chunk_hash": [sha256_text("changed"), "x"]})
    recon = reconcile(store.table, ExpectedIndex(expected))
    assert (recon.missing, recon.extra, recon.stale) == (["a:9#0"], ["a:1#1"], ["a:1#0"])
    assert not recon.ok


def test_a_batch_is_applied_in_one_commit(tmp_path: Path) -> None:
    """Upserts, surplus chunks and deleted documents land in a single LanceDB version, so a reader
    (or a process killed half-way) never sees a half-applied batch."""
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    store.writer.apply_batch(*_batch("b1", {"a:1": (T1, ["one", "two", "three"]), "a:2": (T1, ["x"])}))
    before = store.table.version()
    result = store.writer.apply_batch(*_batch("b2", {"a:1": (T2, ["uno"]), "a:2": (T2, None)}))
    assert store.table.version() == before + 1 == result.table_version
    assert result.chunks_deleted == 3 and result.chunks_upserted == 1
    assert _rows(store) == [("a:1#0", sha256_text("uno"), "b2")]
    past = store.table.open()
    past.checkout(before)
    assert past.count_rows() == 4  # the old version is still readable (time travel)


def test_repair_restores_missing_stale_and_extra_rows_without_embedding(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    chunks, docs = _batch("b1", {"a:1": (T1, ["one", "two"]), "a:2": (T1, ["three"])})
    store.writer.apply_batch(chunks, docs)
    expected = ExpectedIndex(chunks.select("chunk_id", "chunk_hash"))
    table = store.table.open()
    table.delete("chunk_id = 'a:1#1'")
    table.update(where="chunk_id = 'a:2#0'", values={"chunk_hash": "tampered"})
    rogue, _ = _batch("b0", {"z:9": (T1, ["rogue"])})
    table.add(store.table.to_arrow_rows(rogue))
    drift = reconcile(store.table, expected)
    assert (drift.missing, drift.stale, drift.extra) == (["a:1#1"], ["a:2#0"], ["z:9#0"])
    repaired = repair(store.writer, expected, chunks)
    assert (repaired.upserted, repaired.deleted) == (2, 1)
    assert reconcile(store.table, expected).ok
    assert _rows(store) == sorted(chunks.select("chunk_id", "chunk_hash", "batch").iter_rows())


def test_a_deletion_applied_first_still_beats_an_older_batch(tmp_path: Path) -> None:
    """The deletion of a document the index never had leaves no row behind; gold's view of each
    document's newest version is what stops the late, older batch from resurrecting it."""
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    _, deletion = _batch("b2", {"a:1": (T2, None)})
    store.writer.apply_batch(*_batch("b2", {"a:1": (T2, None)}), latest=deletion)
    chunks, docs = _batch("b1", {"a:1": (T1, ["resurrected?"])})
    result = store.writer.apply_batch(chunks, docs, latest=deletion.select("doc_id", "batch"))
    assert result.docs_skipped_older == 1 and store.table.read(["chunk_id"]).height == 0


def test_a_rerun_rewrites_only_documents_whose_indexed_rows_differ(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    docs = {f"a:{i}": (T1, [f"kettle {i} one", f"kettle {i} two"]) for i in range(5)}
    store.writer.apply_batch(*_batch("b1", docs))
    before = store.table.version()
    again = store.writer.apply_batch(*_batch("b1", docs))
    assert (again.docs_unchanged, again.docs_written, again.chunks_upserted) == (5, 0, 0)
    assert store.table.version() == before  # nothing committed
    chunks, documents = _batch("b1", {**docs, "a:1": (T1, ["kettle 1 one", "kettle 1 changed"])})
    chunks = chunks.with_columns(
        pl.when(pl.col("doc_id") == "a:2")
        .then(pl.lit('{"brand": "x"}'))
        .otherwise("metadata")
        .alias("metadata")
    )
    edited = store.writer.apply_batch(chunks, documents)
    assert (edited.docs_unchanged, edited.docs_written, edited.chunks_upserted) == (3, 2, 4)
    rows = store.table.read(["chunk_id", "chunk_hash", "metadata"])
    assert sha256_text("kettle 1 changed") in rows["chunk_hash"].to_list()
    assert rows.filter(pl.col("chunk_id") == "a:2#0")["metadata"].to_list() == ['{"brand": "x"}']
    shorter = store.writer.apply_batch(*_batch("b1", {**docs, "a:3": (T1, ["kettle 3 one"])}))
    assert (shorter.docs_written, shorter.chunks_deleted) == (3, 1)  # a:1, a:2 back; a:3 lost a chunk
    assert "a:3#1" not in store.table.read(["chunk_id"])["chunk_id"].to_list()


def test_new_rows_are_searchable_at_once_and_folded_into_the_indexes_past_the_share(tmp_path: Path) -> None:
    store = open_index(
        str(tmp_path / "db"), EMB.model_id, EMB.dimension, ann_min_rows=300, refresh_share=0.05
    )
    docs = {f"s:{i}": (T1, [f"device {i} lock opens door"]) for i in range(400)}
    store.writer.apply_batch(*_batch("b1", docs))
    assert {"fts", "ann"} <= set(store.writer.ensure_indexes()) and store.writer.unindexed_rows() == 0
    small = {f"s:{i}": (T2, [f"device {i} zebra kettle {i}"]) for i in range(5)}  # 5 of 400: 1.25%
    store.writer.apply_batch(*_batch("b2", small))
    assert "refresh" not in store.writer.ensure_indexes() and store.writer.unindexed_rows() == 5
    query = "zebra kettle 3"
    for mode in ("fts", "vector", "hybrid"):
        hits = store.reader.search(query, EMB.encode([query])[0], k=5, mode=mode)  # type: ignore[arg-type]
        assert "s:3#0" in [h["chunk_id"] for h in hits], mode
    stale = store.reader.search("opens door", None, k=400, mode="fts")  # type: ignore[arg-type]
    assert len(stale) == 395 and "s:3#0" not in [h["chunk_id"] for h in stale]  # replaced rows are gone
    large = {f"s:{i}": (T2, [f"device {i} zebra plug"]) for i in range(10, 40)}  # 30 more: 8.75%
    store.writer.apply_batch(*_batch("b2", large))
    assert "refresh" in store.writer.ensure_indexes() and store.writer.unindexed_rows() == 0


def test_deleting_documents_already_absent_commits_nothing(tmp_path: Path) -> None:
    store = open_index(str(tmp_path / "db"), EMB.model_id, EMB.dimension)
    store.writer.apply_batch(*_batch("b1", {"a:1": (T1, ["kettle one"])}))
    store.writer.apply_batch(*_batch("b2", {"a:1": (T2, None)}))
    before = store.table.version()
    again = store.writer.apply_batch(*_batch("b2", {"a:1": (T2, None), "a:9": (T2, None)}))
    assert again.chunks_upserted == 0
    assert store.table.version() == before
