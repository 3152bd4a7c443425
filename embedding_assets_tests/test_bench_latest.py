"""``make bench --only X`` updates X's figures on ``bench/results/latest.md`` and keeps the rest."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import _blocks, _row_key, merge_latest, render

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _report(**sections: object) -> dict:
    machine = {
        "cores": 2,
        "cpu": "x86_64",
        "memory_gib": 23.5,
        "gpu": None,
        "python": "3.11",
        "torch": "2",
        "polars": "2",
    }
    return {"date": "2026-12-09T10:00:00+00:00", "smoke": False, "machine": machine, **sections}


PEER = {
    "repeats": 3,
    **{
        s: {"ours_s": 1.0, "peer_s": 2.0, "ours_over_peer": 0.5}
        for s in ("full_load", "no_change", "one_doc_edited")
    },
    "splitter": {
        "documents": 10,
        "ours_docs_per_s": 2.0,
        "peer_docs_per_s": 1.0,
        "ours_chunks": 3,
        "peer_chunks": 3,
        "ratio": 2.0,
    },
}


def test_a_section_run_alone_replaces_its_rows_and_keeps_every_other_one() -> None:
    previous = (RESULTS / "latest.md").read_text()
    merged = merge_latest(previous, render(_report(peer=PEER)), ran=["peer"])
    old_rows, new_rows = _blocks(previous)[1], _blocks(merged)[1]  # the summary tables
    assert [r for r in new_rows if _row_key(r) == "13 vs"] == [
        r for r in render(_report(peer=PEER)).splitlines() if r.startswith("| 13 ")
    ]
    for row in old_rows:
        if not row.startswith("| 13 "):
            assert row in new_rows, row
    for heading in [line for line in previous.splitlines() if line.startswith("### ")]:
        assert heading in merged
    assert merged.splitlines()[0] == "# Benchmarks, 2026-12-09T10:00:00+00:00"
    assert "Measured on 2026-12-09: peer" in merged
    sections = [int(_row_key(r).split()[0]) for r in new_rows]
    assert sections == sorted(sections)  # rows stay in section order
    assert merge_latest(merged, render(_report(peer=PEER)), ran=["peer"]) == merged  # stable


def test_a_first_page_is_the_render_itself() -> None:
    fresh = render(_report(peer=PEER))
    assert merge_latest("", fresh, ran=["peer"]) == fresh
    assert json.loads(json.dumps(PEER))  # the section is plain JSON, as the bench writes it
