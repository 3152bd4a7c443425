"""The sync summary's verdict."""

from __future__ import annotations

from embedding_assets.defs.outcome import SyncSummary

DRIFT = "DRIFT (expected 331, actual 232, missing 99, extra 0, stale 0, dead-lettered 0)"


def test_a_drift_is_a_failure_unless_another_run_is_still_building_that_model() -> None:
    alone = SyncSummary(reconciliations={"m": DRIFT})
    assert not alone.ok and alone.drifted == ["m"]

    deferred = SyncSummary(reconciliations={"m": DRIFT}, busy=["2026-11-08|m"])
    assert deferred.ok and deferred.drifted == []
    assert "another run is still building it" in deferred.render()

    other = SyncSummary(reconciliations={"m": DRIFT}, busy=["2026-11-08|n", "2026-11-08"])
    assert not other.ok  # the busy partitions are another model's and a batch's, not m's
