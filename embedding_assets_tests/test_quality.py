"""Data-quality building blocks: garbage text, duplicates, outliers, missingness and drift."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest

from embedding_assets.refine.quality import (
    GARBAGE_SUSPECT,
    DriftFigures,
    NearDuplicate,
    category_counts,
    centroid_distance,
    garbage_reasons,
    garbage_reasons_series,
    ks_statistic,
    length_buckets,
    length_outliers,
    missing_rates,
    near_duplicates,
    normalise_text,
    normalised_texts,
    psi,
    robust_z,
    text_drift,
)

CLEAN_TEXTS = [
    "Café crème à la française, s'il vous plaît.",
    "Müller wohnt in der Hauptstraße; viele Grüße aus München.",
    "A naïve résumé on the façade of the coöperative.",
    "東京は日本の首都です。春には桜がとても綺麗ですね。",
    "Great job on the launch 🎉👍 see you soon 😀🇯🇵",
    "Tom &amp; Jerry is a classic cartoon series that ran for decades on television.",
    "Tabs\tand\nnewlines\r\nare ordinary whitespace.",
    "¿Dónde está la biblioteca? ¡Allí, en SÃO PAULO, não em Lisboa!",
    "Åsa åker till Älvsjö. Það er gott veður í dag. Łódź, żółć, Příliš žluťoučký kůň.",
    "Привет, мир! Price: 5 € — “quoted” and ‘single’ – with a dash…",
]


def _rules(text: str | None, **thresholds: float) -> set[str]:
    return {reason.split(":", 1)[0] for reason in garbage_reasons(text, **thresholds)}


def _sloppy_cp1252(data: bytes) -> str:
    """Decode like Windows/browsers do: bytes cp1252 leaves undefined map to the C1 code point."""
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in data)


# ---------------------------------------------------------------------------------------------- garbage


@pytest.mark.parametrize("text", CLEAN_TEXTS)
def test_clean_multilingual_prose_is_not_garbage(text: str) -> None:
    assert garbage_reasons(text) == []


def test_missing_and_empty_text_is_not_garbage() -> None:
    assert garbage_reasons(None) == []
    assert garbage_reasons("") == []


def test_replacement_characters_fire_with_count_and_share() -> None:
    text = "The caf\ufffd served cr\ufffd\ufffdme br\ufffdl\ufffde to every guest in the old town today."
    reasons = garbage_reasons(text)
    assert [r.split(":")[0] for r in reasons] == ["replacement_chars"]
    assert f"5 U+FFFD characters ({100 * 5 / len(text):.1f}% of {len(text)})" in reasons[0]


def test_replacement_characters_respect_share_threshold() -> None:
    long_text = "A perfectly ordinary sentence about the weather. " * 5 + "caf\ufffd"
    assert "replacement_chars" not in _rules(long_text)  # one in ~250 characters is under 1%
    assert "replacement_chars" in _rules("caf\ufffd")  # one in four is not
    assert "replacement_chars" in _rules(long_text + "\ufffd\ufffd")  # three always fire


def test_mojibake_from_utf8_read_as_cp1252_fires() -> None:
    original = "Café déjà vu – “quoted”"
    data = original.encode("utf-8")
    # Python's strict cp1252 cannot decode 0x9D (the last byte of ”); real mis-decodes either
    # replace it or, like browsers, keep it as the C1 character.
    replaced = data.decode("cp1252", errors="replace")
    sloppy = _sloppy_cp1252(data)
    assert replaced != original and sloppy != original
    assert "mojibake" in _rules(replaced)
    assert "mojibake" in _rules(sloppy)
    assert "mojibake" in _rules(data.decode("latin-1"))


def test_single_mojibake_sequence_fires_when_it_round_trips() -> None:
    assert "mojibake" in _rules("The CafÃ© on the corner opens at eight.")
    assert "mojibake" in _rules("Donâ€™t forget the meeting.")
    assert "mojibake" in _rules("Price:Â\u00a012 euros")  # a mis-decoded no-break space


def test_mojibake_detail_shows_sequences() -> None:
    (reason,) = garbage_reasons("RÃ©sumÃ© of the naÃ¯ve candidate")
    assert reason.startswith("mojibake: 3 ")
    assert "Ã©" in reason and "Ã¯" in reason


def test_html_entity_soup_fires_but_one_amp_does_not() -> None:
    soup = "&lt;p&gt;Hello&nbsp;world &#8217;s &#x2019; best&lt;/p&gt;"
    assert _rules(soup) == {"html_entities"}
    assert _rules("Fish &amp; chips, salt &amp; vinegar, please.") == set()  # only two
    sparse = "A long paragraph about Tom &amp; Jerry. " * 2 + "Then " + "more words here " * 40 + "&amp;"
    assert "html_entities" not in _rules(sparse)  # three entities, but under 5% of the text
    assert "html_entities" in _rules(sparse, max_entity_share=0.01)


@pytest.mark.parametrize("bad", ["Hello\x00world", "Colour \x1b[31mred\x1b[0m", "next\x85line", "rub\x7fout"])
def test_control_characters_fire(bad: str) -> None:
    assert "control_chars" in _rules(bad)


def test_control_characters_threshold() -> None:
    text = "x" * 99 + "\x07"
    assert "control_chars" in _rules(text)
    assert "control_chars" not in _rules(text, max_control_share=0.02)


def test_every_text_a_garbage_rule_flags_matches_the_prefilter() -> None:
    """with_garbage runs the rules only on texts GARBAGE_SUSPECT matches: it must miss none."""
    rng = random.Random(7)
    pieces = [
        *(" ".join(CLEAN_TEXTS[i].split()[:4]) for i in range(len(CLEAN_TEXTS))),
        "\ufffd", "Ã©", "â€™", "Ã¼", "ðŸ", "&amp;", "&#39;", "&#x27;", "\x07", "\x1b", "\x85", "\x7f",
        " ", "\n", "\t", "&", "é",
    ]  # fmt: skip
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    flagged = [t for t in texts if garbage_reasons(t)]
    assert len(flagged) > 500  # the rules fire often enough for this to mean something
    assert pl.Series(flagged).str.contains(GARBAGE_SUSPECT).all()
    assert not pl.Series(CLEAN_TEXTS).str.contains(GARBAGE_SUSPECT).all()  # it is a filter, not "match all"


def test_garbage_reasons_series_is_list_of_strings() -> None:
    texts = pl.Series("text", ["Fine text.", None, "caf\ufffd \x00", ""])
    out = garbage_reasons_series(texts)
    assert out.dtype == pl.List(pl.String)
    assert out.name == "text"
    values = out.to_list()
    assert values[0] == [] and values[1] == [] and values[3] == []
    assert {r.split(":")[0] for r in values[2]} == {"replacement_chars", "control_chars"}
    strict = garbage_reasons_series(pl.Series(["x" * 99 + "\x07"]), max_control_share=0.02)
    assert strict.to_list() == [[]]


# ------------------------------------------------------------------------------------------ exact dupes


def test_normalise_text() -> None:
    assert normalise_text("  Hello\u00a0 WORLD\n\tagain ") == "hello world again"
    assert normalise_text("ＦＵＬＬ ｗｉｄｔｈ ﬁ") == "full width fi"  # NFKC
    assert normalise_text("Straße") == "strasse"  # casefold, not lower


def test_normalised_texts_match_trivial_variants() -> None:
    texts = pl.Series("text", ["Hello  World", "hello world\n", "ＨＥＬＬＯ world", "Goodbye world", None])
    normalised = normalised_texts(texts)
    assert normalised.dtype == pl.String
    values = normalised.to_list()
    assert values[0] == values[1] == values[2]
    assert values[0] != values[3]
    assert values[4] is None


def test_normalised_texts_equal_normalise_text_on_ascii_and_other_text() -> None:
    texts = [
        "  Hello\u00a0 WORLD\n\tagain ",
        "ＦＵＬＬ ｗｉｄｔｈ ﬁ",
        "Straße",
        "Plain ASCII\r\n\x0b\x0cwith   runs\tof  space ",
        "",
        "   ",
        "MiXeD case, punctuation! 123",
        "café au lait",
    ]
    assert normalised_texts(pl.Series(texts)).to_list() == [normalise_text(t) for t in texts]


# ------------------------------------------------------------------------------------------- near dupes

BASE = (
    "The quarterly maintenance report describes how the cooling system in the north data centre was "
    "inspected by two engineers who replaced three worn fan bearings, recalibrated the humidity sensors, "
    "cleaned the intake filters and verified that the backup chillers started within the required ninety "
    "seconds during the simulated power failure on Tuesday morning before the audit."
)
VARIANT = BASE.replace("three worn", "four worn")
UNRELATED = (
    "Our bakery opens at seven every weekday and sells sourdough, rye and spelt loaves baked overnight, "
    "along with cinnamon buns, almond croissants and a rotating seasonal tart made from local fruit that "
    "changes every few weeks depending on what the orchard down the road has harvested this season."
)


def test_near_duplicates_finds_one_word_edit() -> None:
    assert 55 <= len(BASE.split()) <= 65
    found = near_duplicates(["a", "b", "c"], [BASE, UNRELATED, VARIANT], threshold=0.8)
    assert len(found) == 1
    dup = found[0]
    assert (dup.id, dup.of) == ("c", "a")
    assert 0.8 <= dup.similarity < 1.0
    assert dup.similarity == round(dup.similarity, 4)


def test_near_duplicates_ignores_unrelated_texts() -> None:
    assert near_duplicates(["a", "b"], [BASE, UNRELATED], threshold=0.5) == []


def test_near_duplicates_is_deterministic_and_order_respecting() -> None:
    ids, texts = ["a", "b", "c"], [BASE, UNRELATED, VARIANT]
    first = near_duplicates(ids, texts, threshold=0.8)
    assert near_duplicates(ids, texts, threshold=0.8) == first
    reversed_found = near_duplicates(ids[::-1], texts[::-1], threshold=0.8)
    assert [(d.id, d.of) for d in reversed_found] == [("a", "c")]
    assert reversed_found[0].similarity == first[0].similarity


def test_near_duplicates_reports_against_earliest_kept() -> None:
    # BASE~VARIANT and VARIANT~TWO_EDITS are about 0.82; BASE~TWO_EDITS only about 0.68.
    two_edits = VARIANT.replace("Tuesday", "Wednesday")
    ids, texts = ["x", "y", "z"], [BASE, two_edits, VARIANT]
    found = near_duplicates(ids, texts, threshold=0.75)
    assert [(d.id, d.of) for d in found] == [("z", "x")]  # z matches both kept texts; x came first
    found = near_duplicates(["y", "x", "z"], [two_edits, BASE, VARIANT], threshold=0.75)
    assert [(d.id, d.of) for d in found] == [("z", "y")]


def test_near_duplicates_compare_only_with_kept_texts() -> None:
    two_edits = VARIANT.replace("Tuesday", "Wednesday")
    found = near_duplicates(["x", "y", "z"], [BASE, VARIANT, two_edits], threshold=0.75)
    # z resembles y, but y is itself a duplicate and not kept; z is too far from x, so z is kept.
    assert [(d.id, d.of) for d in found] == [("y", "x")]


def test_identical_normalised_texts_are_near_duplicates() -> None:
    found = near_duplicates(["a", "b"], [BASE, "  " + BASE.upper() + "\n"])
    assert found == [NearDuplicate(id="b", of="a", similarity=1.0)]


def test_near_duplicates_short_and_empty_texts() -> None:
    assert near_duplicates([], []) == []
    assert near_duplicates(["only"], [BASE]) == []
    found = near_duplicates(["a", "b", "c", "d"], ["", "Hi there", "", "hi  THERE"])
    assert [(d.id, d.of, d.similarity) for d in found] == [("c", "a", 1.0), ("d", "b", 1.0)]


def test_near_duplicates_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        near_duplicates(["a"], [BASE, VARIANT])
    with pytest.raises(ValueError):
        near_duplicates(["a", "a"], [BASE, VARIANT])


# ------------------------------------------------------------------------------------------- outliers

SIMILAR_LENGTHS = [480, 500, 510, 495, 505, 520, 490, 515, 500, 485, 530, 470]


def test_length_outliers_flag_a_fifty_times_longer_text() -> None:
    lengths = [*SIMILAR_LENGTHS, 500 * 50]
    mask = length_outliers(lengths)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [False] * len(SIMILAR_LENGTHS) + [True]


def test_length_outliers_flag_nothing_in_homogeneous_list() -> None:
    assert not length_outliers(SIMILAR_LENGTHS).any()
    assert not length_outliers([1000, 1200, 800, 1500, 900, 1100, 700, 1300]).any()


def test_robust_z_zero_mad_falls_back_to_mean_absolute_deviation() -> None:
    z = robust_z([100.0] * 9 + [5000.0])
    assert np.all(z[:9] == 0.0)
    assert z[9] == pytest.approx(4900.0 / (1.2533 * 490.0))
    assert length_outliers([100] * 9 + [5000]).tolist() == [False] * 9 + [True]


def test_robust_z_uses_median_and_mad() -> None:
    z = robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, MAD 1
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 97 / 1.4826])


def test_robust_z_constant_and_empty() -> None:
    assert robust_z([7.0, 7.0, 7.0]).tolist() == [0.0, 0.0, 0.0]
    assert robust_z([]).shape == (0,)


# -------------------------------------------------------------------------------------------- missing


def test_missing_rates_count_whitespace_as_missing() -> None:
    frame = pl.DataFrame(
        {
            "text": ["a", " ", None, "\t\n", "b"],
            "title": ["x", "y", "z", "w", "v"],
            "n": [1, None, 3, 4, 5],
        }
    )
    assert missing_rates(frame, ["text", "title", "n"]) == {"text": 0.6, "title": 0.0, "n": 0.2}


def test_missing_rates_empty_frame() -> None:
    empty = pl.DataFrame({"text": []}, schema={"text": pl.String})
    assert missing_rates(empty, ["text"]) == {"text": 0.0}


# ---------------------------------------------------------------------------------------------- drift


def test_psi_zero_for_equal_and_large_for_shifted() -> None:
    reference = {"news": 500, "blog": 300, "forum": 200}
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, {"news": 50, "blog": 30, "forum": 20}) == pytest.approx(0.0, abs=1e-12)
    assert psi(reference, {"news": 100, "blog": 200, "forum": 700}) > 0.25
    slight = psi(reference, {"news": 480, "blog": 310, "forum": 210})
    assert 0.0 < slight < 0.1


def test_psi_new_category_is_finite_and_empty_is_zero() -> None:
    value = psi({"a": 100}, {"a": 50, "b": 50})
    assert 0.25 < value < float("inf")
    assert psi({}, {"a": 1}) == 0.0
    assert psi({"a": 1}, {}) == 0.0


def test_category_counts_names_nulls() -> None:
    assert category_counts(["a", None, "b", "a", None]) == {"a": 2, "<null>": 2, "b": 1}


def test_length_buckets_use_reference_quantiles() -> None:
    reference = list(range(1, 1001))
    ref_counts, cur_counts = length_buckets(reference, [1, 2, 3, 999, 1000, 5000])
    assert list(ref_counts) == [f"q{i}" for i in range(10)]
    assert list(cur_counts) == list(ref_counts)
    assert all(90 <= n <= 110 for n in ref_counts.values())
    assert sum(ref_counts.values()) == 1000
    assert cur_counts["q0"] == 3 and cur_counts["q9"] == 3


def test_length_buckets_deduplicate_tied_edges() -> None:
    ref_counts, cur_counts = length_buckets([5] * 50 + [10] * 50, [5, 10, 20])
    assert len(ref_counts) < 10
    assert ref_counts.keys() == cur_counts.keys()
    assert sum(ref_counts.values()) == 100 and sum(cur_counts.values()) == 3


def test_ks_detects_shift() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0.0, 1.0, 400).tolist()
    same = rng.normal(0.0, 1.0, 400).tolist()
    shifted = rng.normal(1.0, 1.0, 400).tolist()
    stat_same, p_same = ks_statistic(reference, same)
    stat_shift, p_shift = ks_statistic(reference, shifted)
    assert p_same > 0.01 and stat_same < 0.1
    assert p_shift < 1e-6 and stat_shift > 0.3
    assert ks_statistic([], shifted) == (0.0, 1.0)


def test_centroid_distance() -> None:
    rng = np.random.default_rng(3)
    direction = np.ones(16)
    cloud = direction + rng.normal(0.0, 0.1, (200, 16))
    same = direction + rng.normal(0.0, 0.1, (200, 16))
    opposite = -direction + rng.normal(0.0, 0.1, (200, 16))
    assert centroid_distance(cloud, same) < 1e-3
    assert centroid_distance(cloud, opposite) > 1.9
    assert centroid_distance(cloud, np.zeros((0, 16))) == 0.0
    with pytest.raises(ValueError):
        centroid_distance(cloud, np.ones((3, 8)))


def _frame(lengths: list[int], sources: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"text": ["x" * n for n in lengths], "source": sources})


def test_text_drift_stable_and_shifted() -> None:
    rng = np.random.default_rng(11)
    lengths = rng.integers(200, 400, 300).tolist()
    sources = (["news", "blog", "forum"] * 100)[:300]
    reference = _frame(lengths, sources)

    stable = text_drift(reference, reference, categorical=["source"])
    assert isinstance(stable, DriftFigures)
    assert stable.max_psi == pytest.approx(0.0, abs=1e-12)
    assert stable.ks_length == 0.0 and stable.ks_pvalue == 1.0

    current = _frame(rng.integers(800, 1600, 300).tolist(), ["news"] * 250 + ["blog"] * 50)
    drift = text_drift(reference, current, categorical=["source"])
    assert drift.psi_length > 0.25
    assert drift.ks_length > 0.9 and drift.ks_pvalue < 1e-6
    assert set(drift.psi_categorical) == {"source"}
    assert drift.psi_categorical["source"] > 0.25
    assert drift.max_psi == max(drift.psi_length, drift.psi_categorical["source"])


def test_drift_max_psi_picks_worst_field() -> None:
    figures = DriftFigures(
        psi_length=0.05, ks_length=0.1, ks_pvalue=0.5, psi_categorical={"a": 0.3, "b": 0.01}
    )
    assert figures.max_psi == 0.3
    assert DriftFigures(psi_length=0.2, ks_length=0.0, ks_pvalue=1.0).max_psi == 0.2


def _reference_near_duplicates(
    ids: list[str], texts: list[str], threshold: float
) -> list[tuple[str, str, float]]:
    """The definition, one text at a time against every kept text, with Python sets of shingles."""

    def shingles(text: str) -> set[str]:
        words = normalise_text(text).split(" ") if normalise_text(text) else []
        if len(words) < 5:
            return {normalise_text(text)}
        return {" ".join(words[i : i + 5]) for i in range(len(words) - 4)}

    kept: list[tuple[str, set[str]]] = []
    found = []
    for doc_id, text in zip(ids, texts, strict=True):
        mine = shingles(text)
        match = next(
            (
                (of, len(mine & s) / len(mine | s))
                for of, s in kept
                if len(mine & s) / len(mine | s) >= threshold
            ),
            None,
        )
        if match:
            found.append((doc_id, match[0], round(match[1], 4)))
        else:
            kept.append((doc_id, mine))
    return found


@pytest.mark.parametrize("seed", range(6))
def test_near_duplicates_equal_the_pairwise_definition(seed: int) -> None:
    # Families of texts from one vocabulary, each member a few random word edits away from its
    # family's base, so clusters overlap, chain, and sit on both sides of the threshold.
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)] + ["Ünïcode", "ＦＵＬＬ", "Straße", "strasse"]
    ids, texts = [], []
    for family in range(12):
        base = [rng.choice(vocab) for _ in range(rng.choice([3, 8, 20, 40]))]
        for member in range(rng.randint(1, 6)):
            words = list(base)
            for _ in range(rng.randint(0, 3)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            sep = rng.choice([" ", "  ", "\n", "\t "])
            ids.append(f"{family}-{member}")
            texts.append(sep.join(words).upper() if rng.random() < 0.2 else sep.join(words))
    order = list(range(len(ids)))
    rng.shuffle(order)
    ids, texts = [ids[i] for i in order], [texts[i] for i in order]
    for threshold in (0.5, 0.7, 0.9):
        found = [(d.id, d.of, d.similarity) for d in near_duplicates(ids, texts, threshold=threshold)]
        assert found == _reference_near_duplicates(ids, texts, threshold)
