"""Partition writes on real Delta tables: a write of what the table already holds commits nothing."""

from pathlib import Path

import polars as pl

from embedding_assets.core.lake import Lake, same_rows

SCHEMA = {
    "batch": pl.String,
    "id": pl.String,
    "n": pl.Int64,
    "vec": pl.List(pl.Float32),
    "seen_at": pl.String,
}


def _frame(batch: str, ids: list[str], seen: str = "t0") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "batch": [batch] * len(ids),
            "id": ids,
            "n": list(range(len(ids))),
            "vec": [[float(i), 1.0] for i in range(len(ids))],
            "seen_at": [seen] * len(ids),
        },
        schema=SCHEMA,
    )


def test_rewriting_the_same_rows_commits_nothing(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    first = lake.overwrite_batch("t", _frame("b1", ["a", "b"]), "b1")
    assert first.committed
    again = lake.overwrite_batch("t", _frame("b1", ["a", "b"]).reverse(), "b1")
    assert not again.committed and again.version == first.version == lake.version("t")


def test_volatile_columns_do_not_count_as_a_change(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.overwrite_batch("t", _frame("b1", ["a"], seen="t0"), "b1", volatile=("seen_at",))
    written = lake.overwrite_batch("t", _frame("b1", ["a"], seen="t9"), "b1", volatile=("seen_at",))
    assert not written.committed
    assert lake.read("t", SCHEMA)["seen_at"].to_list() == ["t0"]


def test_a_changed_partition_commits_once_and_leaves_others(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.overwrite_batch("t", _frame("b1", ["a"]), "b1")
    lake.overwrite_batch("t", _frame("b2", ["x"]), "b2")
    before = lake.version("t")
    written = lake.overwrite_batch("t", _frame("b1", ["a", "c"]), "b1")
    assert written.committed and written.version == (before or 0) + 1
    rows = lake.read("t", SCHEMA).sort("id")
    assert rows["id"].to_list() == ["a", "c", "x"]
    assert lake.count("t", "b1") == 2 and lake.count("t", "b2") == 1


def test_an_empty_frame_clears_a_partition_once(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.overwrite_batch("t", _frame("b1", ["a"]), "b1")
    assert lake.overwrite_batch("t", _frame("b1", []), "b1").committed
    assert not lake.overwrite_batch("t", _frame("b1", []), "b1").committed
    assert lake.count("t", "b1") == 0


def test_where_limits_the_rows_replaced(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    both = pl.concat([_frame("b1", ["a"]), _frame("b1", ["z"])])
    lake.overwrite_batch("t", both, "b1")
    lake.overwrite_batch(
        "t", _frame("b1", ["z"]).with_columns(n=pl.lit(7, pl.Int64)), "b1", where={"id": "z"}
    )
    rows = lake.read("t", SCHEMA).sort("id")
    assert rows.select("id", "n").rows() == [("a", 0), ("z", 7)]


def test_same_rows_sees_a_changed_vector() -> None:
    frame = _frame("b1", ["a", "b"])
    changed = frame.with_columns(vec=pl.Series([[0.0, 1.0], [1.0, 2.0]], dtype=pl.List(pl.Float32)))
    assert same_rows(frame, frame.reverse())
    assert not same_rows(frame, changed)
    assert not same_rows(frame, frame.head(1))
