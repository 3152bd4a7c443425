"""The memo rule and the earlier-partitions version, as pure functions."""

import hashlib

import pytest

from embedding_assets.memo import (
    Previous,
    changed_inputs,
    decide,
    earlier_version,
    earlier_versions,
)

CONSUMED = {"bronze_helpdesk": "a1", "contract_helpdesk": "c1", "code": "silver-1"}


def _never() -> bool:
    raise AssertionError("the lake must not be read when inputs already decide")


def test_first_materialisation_rebuilds() -> None:
    decision = decide(CONSUMED, None, _never)
    assert decision.rebuild and decision.reason == "never materialised"


def test_equal_inputs_and_output_present_keep() -> None:
    decision = decide(CONSUMED, Previous("v1", dict(CONSUMED)), lambda: True)
    assert decision.skip
    assert "every consumed input equals" in decision.reason


def test_a_changed_input_rebuilds_and_is_named() -> None:
    decision = decide({**CONSUMED, "contract_helpdesk": "c2"}, Previous("v1", CONSUMED), _never)
    assert decision.rebuild
    assert decision.changed == ("contract_helpdesk",)
    assert "contract_helpdesk" in decision.reason


def test_an_input_that_appears_or_disappears_counts_as_changed() -> None:
    assert changed_inputs({**CONSUMED, "chunker_settings": "x"}, CONSUMED) == ("chunker_settings",)
    assert changed_inputs({"code": "silver-1"}, CONSUMED) == ("bronze_helpdesk", "contract_helpdesk")


def test_output_gone_from_the_lake_rebuilds() -> None:
    decision = decide(CONSUMED, Previous("v1", CONSUMED), lambda: False)
    assert decision.rebuild and "no longer in the lake" in decision.reason


def test_force_wins_over_everything() -> None:
    decision = decide(CONSUMED, Previous("v1", CONSUMED), _never, force="run tag ea/force")
    assert decision.rebuild and decision.reason == "run tag ea/force"


def test_earlier_version_depends_only_on_partitions_before() -> None:
    versions = {"b1": "x", "b2": "y", "b3": "z"}
    assert earlier_version(versions, "b1") == hashlib.sha256().hexdigest()
    assert earlier_version(versions, "b3") == earlier_version({"b1": "x", "b2": "y"}, "b3")
    assert earlier_version(versions, "b3") != earlier_version({**versions, "b2": "y2"}, "b3")
    assert earlier_version(versions, "b2") == earlier_version({**versions, "b2": "y2", "b3": "w"}, "b2")


@pytest.mark.parametrize("wanted", [["b0", "b2", "b9"], ["b1"], [], ["b3", "b3", "a"]])
def test_earlier_versions_equals_one_at_a_time(wanted: list[str]) -> None:
    versions = {"b1": "x", "b2": "y", "b3": "z", "b4": "w"}
    assert earlier_versions(versions, wanted) == {p: earlier_version(versions, p) for p in wanted}
