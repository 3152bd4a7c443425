"""Data-quality checks for small frames: garbage text, duplicates, length outliers, missingness, drift.

Everything here is pure and deterministic so the Dagster checks that call it can be unit-tested and
re-run with identical results.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from embedding_assets.core.bulk import in_pieces

# --------------------------------------------------------------------------------------------------
# Garbage text
# --------------------------------------------------------------------------------------------------

_REPLACEMENT = "\ufffd"
# A lead character of a UTF-8 multi-byte sequence as cp1252/latin-1 renders it (Ã Â â for 2/3-byte
# Latin and punctuation, Ä Å for Central-European letters, ð for emoji) followed by what a
# continuation byte 0x80-0xBF renders as in cp1252 (the curly quotes, dashes, € ...) or latin-1.
_MOJIBAKE_LEADS = "ÃÂâÄÅð"
_MOJIBAKE = re.compile(f"[{_MOJIBAKE_LEADS}][\x80-\xbf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]")
_ENTITY = re.compile(r"&[a-zA-Z]{2,8};|&#\d{1,6};|&#x[0-9a-fA-F]{1,6};")
# C0 controls except \t \n \r, DEL, and the C1 block (which only appears after a latin-1 mis-decode).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A polars (Rust) regex for a character that every rule above needs to fire (U+FFFD, a mojibake lead,
# '&' for entities, a control character): a text without one is clean, so only the rest need
# :func:`garbage_reasons`. Keep it in step with the rules.
GARBAGE_SUSPECT = rf"[\x{{FFFD}}&\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x{{9F}}{_MOJIBAKE_LEADS}]"
_MIN_REPLACEMENTS = 3
_MIN_MOJIBAKE = 2
_MIN_ENTITIES = 3


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}% of {whole}"


def _round_trips_as_mojibake(text: str) -> bool:
    """True when re-encoding as cp1252/latin-1 and decoding as UTF-8 yields different, valid text.

    Genuine accented text fails this (a lone é is not valid UTF-8), so one suspicious match plus a
    clean round trip is strong evidence of a mis-decode.
    """
    for codec in ("cp1252", "latin-1"):
        try:
            repaired = text.encode(codec, errors="strict").decode("utf-8", errors="strict")
        except UnicodeError:
            continue
        if repaired != text:
            return True
    return False


def garbage_reasons(
    text: str | None,
    *,
    max_replacement_share: float = 0.01,
    max_entity_share: float = 0.05,
    max_control_share: float = 0.0,
) -> list[str]:
    """Return ``"<rule>: <detail>"`` for each garbage rule ``text`` breaks; ``[]`` when clean.

    Garbage text embeds to a confident-looking but meaningless vector, so it is better caught here.
    Empty and missing text return ``[]``: emptiness is a separate check.
    """
    if not text:
        return []
    n = len(text)
    reasons: list[str] = []

    replacements = text.count(_REPLACEMENT)
    if replacements and (replacements / n > max_replacement_share or replacements >= _MIN_REPLACEMENTS):
        reasons.append(f"replacement_chars: {replacements} U+FFFD characters ({_pct(replacements, n)})")

    mojibake = _MOJIBAKE.findall(text)
    if len(mojibake) >= _MIN_MOJIBAKE or (mojibake and _round_trips_as_mojibake(text)):
        shown = ", ".join(dict.fromkeys(mojibake[:5]))
        reasons.append(f"mojibake: {len(mojibake)} UTF-8-as-cp1252 sequences ({shown})")

    entities = _ENTITY.findall(text)
    entity_chars = sum(len(e) for e in entities)
    if len(entities) >= _MIN_ENTITIES and entity_chars / n > max_entity_share:
        reasons.append(f"html_entities: {len(entities)} HTML entities ({_pct(entity_chars, n)} characters)")

    controls = len(_CONTROL.findall(text))
    if controls / n > max_control_share:
        reasons.append(f"control_chars: {controls} control characters ({_pct(controls, n)})")

    return reasons


def garbage_reasons_series(texts: pl.Series, **thresholds: float) -> pl.Series:
    """:func:`garbage_reasons` per element, as a ``List(String)`` series (nulls give ``[]``)."""
    values = [garbage_reasons(text, **thresholds) for text in texts.to_list()]
    return pl.Series(texts.name, values, dtype=pl.List(pl.String))


# --------------------------------------------------------------------------------------------------
# Exact duplicates
# --------------------------------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC, casefold and collapse whitespace, so trivially different copies compare equal."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE.sub(" ", folded).strip()


# --------------------------------------------------------------------------------------------------
# Near duplicates
# --------------------------------------------------------------------------------------------------

# Text that is plain ASCII (tab, newline, CR, VT, FF and printable characters only) normalises the
# same in polars as in :func:`normalise_text`: NFKC leaves it alone and casefold is lowercasing.
_PLAIN = r"^[\t\n\r\x0b\x0c\x20-\x7e]*$"
_MIX = np.uint64(0x9E3779B97F4A7C15)  # the 64-bit golden ratio: combines word hashes into shingles


@dataclass(frozen=True)
class NearDuplicate:
    """``id`` is a near-duplicate of the earlier, kept ``of``, with exact shingle Jaccard ``similarity``."""

    id: str
    of: str
    similarity: float


def _ascii_normalised(text: pl.Expr) -> pl.Expr:
    for space in "\t\n\r\x0b\x0c":  # literal replaces: several times faster than one regex class
        text = text.str.replace_all(space, " ", literal=True)
    return text.str.to_lowercase().str.replace_all("  +", " ").str.strip_chars(" ")


def normalised_texts(texts: pl.Series) -> pl.Series:
    """:func:`normalise_text` per element (null stays null): in polars for plain ASCII text, where
    NFKC and casefolding are lowercasing, and in Python only for the rest."""
    fast = in_pieces(texts, _ascii_normalised)
    other = in_pieces(texts, lambda text: (~text.str.contains(_PLAIN)).fill_null(False))
    if not other.any():
        return fast
    slow = [normalise_text(t) for t in texts.filter(other).to_list()]
    return fast.scatter(other.arg_true(), pl.Series(slow, dtype=pl.String))


_HASH_BITS = 48  # a shingle is a 48-bit hash: two shingles of one text collide with odds ~ n^2 / 2^49
_CLASS_BITS = 4  # rarity class above the hash: log2 of how many shingles share its sketch slot
_SKETCH_SLOTS = 1 << 20
_SORT_DOCS = 1 << (64 - _HASH_BITS - _CLASS_BITS)  # documents per sort: (doc, class, hash) in 64 bits
_BLOCK_DOCS = 4 * _SORT_DOCS  # documents per block of shingling
_THREADS = 2  # blocks shingled at once


@dataclass(frozen=True)
class _Shingler:
    """Each normalised text's word ``size``-grams (the whole text when it has fewer words), as
    48-bit hashes under a rarity class, each once, sorted rarest first.

    Rarity comes from a one-row count sketch over the whole search, so the order is a fixed
    function of the shingle: prefix filtering is exact under any global order, and a rough
    rarity only costs candidates."""

    size: int
    seed: int
    rarity: np.ndarray  # the class of each sketch slot, shifted above the hash bits

    def tokens(self, per_doc: np.ndarray, token: np.ndarray, first_doc: int) -> tuple[np.ndarray, np.ndarray]:
        """(doc, key) sorted by document, then rarity, of ``_shingles``' output."""
        token |= self.rarity[_slot(token)]
        return _distinct_per_doc(per_doc, token, first_doc)

    def tokens_of(self, norm: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        return self.tokens(*_shingles(norm, self.size, self.seed), 0)


@dataclass(frozen=True)
class _Prefixes:
    """What the candidate search keeps of every document: its probing prefix (``frame``: doc, tok,
    n, indexed) and its number of distinct shingles, so memory stays a tenth of every shingle."""

    frame: pl.DataFrame
    sizes: np.ndarray
    shingler: _Shingler


def _prefixes(norm: pl.Series, rows: np.ndarray, size: int, seed: int, threshold: float) -> _Prefixes:
    """The probing prefixes of the texts ``norm[rows]`` (document ``i`` is ``norm[rows[i]]``).

    Both passes go ``_BLOCK_DOCS`` documents at a time on ``_THREADS`` threads, so temporaries are
    a few MB that the allocator reuses, not arrays of every shingle; a block's shingles are freed
    once its prefixes are taken."""
    blocks = [(lo, min(lo + _BLOCK_DOCS, rows.size)) for lo in range(0, rows.size, _BLOCK_DOCS)]
    with ThreadPoolExecutor(_THREADS) as pool:  # numpy and polars let go of the GIL on whole arrays
        shingled = list(
            pool.map(lambda span: _shingles(norm.gather(rows[span[0] : span[1]]), size, seed), blocks)
        )
    shared = np.zeros(_SKETCH_SLOTS, dtype=np.int64)
    for _, token in shingled:
        shared += np.bincount(_slot(token), minlength=_SKETCH_SLOTS)
    # A class per sketch slot, looked up per shingle: log2 of how many shingles share the slot.
    rarity = np.searchsorted(1 << np.arange(1, 1 << _CLASS_BITS), shared, side="right").astype(np.uint64)
    shingler = _Shingler(size, seed, rarity << np.uint64(_HASH_BITS))

    def prefixes(block: int) -> tuple[pl.DataFrame, np.ndarray]:
        per_doc, token = shingled[block]
        shingled[block] = (per_doc, token[:0])
        return _prefix_frame(*shingler.tokens(per_doc, token, blocks[block][0]), threshold)

    with ThreadPoolExecutor(_THREADS) as pool:
        frames, sizes = zip(*pool.map(prefixes, range(len(blocks))), strict=True)
    return _Prefixes(pl.concat(frames), np.concatenate(sizes), shingler)


def _slot(token: np.ndarray) -> np.ndarray:
    """Each shingle's sketch slot: its low hash bits."""
    return (token & np.uint64(_SKETCH_SLOTS - 1)).view(np.int64)


def _shingles(part: pl.Series, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingles per text, 48-bit hash of every shingle in text order) of the texts of ``part``."""
    words = part.str.split(" ")
    lengths = words.list.len().to_numpy().astype(np.int64)
    word_hashes = words.explode().hash(seed).to_numpy()
    # A shingle starts wherever ``size`` words follow; a shorter text is one shingle of all its words.
    per_doc = np.maximum(lengths - size + 1, 1)
    position = np.arange(word_hashes.size, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    first = np.flatnonzero(position < np.repeat(per_doc, lengths))
    span = np.repeat(np.minimum(lengths, size), per_doc)
    combined = word_hashes[first]
    last = word_hashes.size - 1
    with np.errstate(over="ignore"):
        for k in range(1, size):
            step = combined * _MIX + word_hashes[np.minimum(first + k, last)]
            combined = np.where(k < span, step, combined)
    return per_doc, combined >> np.uint64(64 - _HASH_BITS)


def _distinct_per_doc(
    per_doc: np.ndarray, token: np.ndarray, first_doc: int
) -> tuple[np.ndarray, np.ndarray]:
    """(doc, key) sorted by document, then key, each pair once, for the documents numbered from
    ``first_doc`` with ``per_doc`` shingles each: ``_SORT_DOCS`` documents at a time, packed into
    one uint64 so a plain sort does it."""
    key_bits = np.uint64(_HASH_BITS + _CLASS_BITS)
    ends = np.concatenate([[0], np.cumsum(per_doc)])
    out_doc, out_key = [], []
    for base in range(0, per_doc.size, _SORT_DOCS):
        top = min(base + _SORT_DOCS, per_doc.size)
        local = np.repeat(np.arange(top - base, dtype=np.uint64), per_doc[base:top])
        packed = (local << key_bits) | token[ends[base] : ends[top]]
        packed.sort()
        packed = packed[np.concatenate([[True], packed[1:] != packed[:-1]])]  # a repeated shingle counts once
        out_doc.append((packed >> key_bits).astype(np.int32) + np.int32(first_doc + base))
        out_key.append((packed & np.uint64((1 << int(key_bits)) - 1)).view(np.int64))
    return np.concatenate(out_doc), np.concatenate(out_key)


def _prefix_frame(doc: np.ndarray, key: np.ndarray, threshold: float) -> tuple[pl.DataFrame, np.ndarray]:
    """((doc, tok, n, indexed) for the tokens of each document's probing prefix, the first
    ``n - ceil(t n) + 1`` of its ``n``, with ``indexed`` marking its indexing prefix, the first
    ``n - ceil(2t/(1+t) n) + 1``; each document's ``n``). Only these ever make a candidate: about
    a tenth of the tokens at t = 0.9, so the rest are never kept."""
    eps = 1e-9
    start = np.flatnonzero(np.concatenate([[True], doc[1:] != doc[:-1]]))
    n = np.diff(np.append(start, key.size))
    probe = np.minimum(n - np.ceil(n * threshold - eps).astype(np.int64) + 1, n)
    index = np.minimum(n - np.ceil(n * (2 * threshold / (1 + threshold)) - eps).astype(np.int64) + 1, n)
    offset = np.arange(int(probe.sum())) - np.repeat(np.cumsum(probe) - probe, probe)
    at = np.repeat(start, probe) + offset
    frame = pl.DataFrame(
        {
            "doc": doc[at],
            "tok": key[at],
            "n": np.repeat(n, probe),
            "indexed": offset < np.repeat(index, probe),
        }
    )
    return frame, n


def _similar_pairs(
    prefixes: _Prefixes, texts: Callable[[np.ndarray], pl.Series], threshold: float
) -> pl.DataFrame:
    """Every pair of documents ``a < b`` whose token-set Jaccard is at least ``threshold``, exactly.

    Prefix filtering as in PPJoin (Xiao et al., WWW 2008): with tokens in one global rarity order,
    two sets with Jaccard >= t share a token between the first ``|x| - ceil(t|x|) + 1`` tokens of
    the larger (its probing prefix) and the first ``|y| - ceil(2t/(1+t)|y|) + 1`` of the smaller
    (its indexing prefix), so only such pairs are compared. Rare tokens come first, so text shared
    by many documents (templates, signatures) rarely makes a candidate. The candidates' whole
    token sets are shingled again from ``texts`` (the normalised texts of the documents asked for).
    """
    candidates = _candidate_pairs(prefixes.frame, threshold)
    if candidates.is_empty():
        return pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "sim": pl.Float64})
    involved = np.unique(np.concatenate([candidates["a"].to_numpy(), candidates["b"].to_numpy()]))
    local, tok = prefixes.shingler.tokens_of(texts(involved))
    members = pl.DataFrame({"doc": involved[local], "tok": tok}).join(
        pl.DataFrame({"doc": involved, "n": prefixes.sizes[involved]}), on="doc"
    )
    shared = (
        candidates.join(members.rename({"doc": "a"}), on="a")
        .join(members.select(pl.col("doc").alias("b"), "tok", pl.col("n").alias("n_b")), on=["b", "tok"])
        .group_by("a", "b", "n", "n_b")
        .len("shared")
    )
    return (
        shared.with_columns(
            (pl.col("shared") / (pl.col("n") + pl.col("n_b") - pl.col("shared"))).alias("sim")
        )
        .filter(pl.col("sim") >= threshold)
        .select("a", "b", "sim")
    )


def _candidate_pairs(prefixes: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Pairs ``a < b`` sharing a token between a probing prefix and an indexing prefix, of sizes
    that allow the threshold."""
    eps = 1e-9
    return (
        prefixes.join(prefixes.filter("indexed"), on="tok", suffix="_i")
        .filter(
            (pl.col("doc") != pl.col("doc_i"))
            & (pl.col("n_i") <= pl.col("n"))
            & (pl.col("n_i") >= pl.col("n") * threshold - eps)
        )
        .select(pl.min_horizontal("doc", "doc_i").alias("a"), pl.max_horizontal("doc", "doc_i").alias("b"))
        .unique()
    )


def near_duplicates(
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    threshold: float = 0.9,
    shingle: int = 5,
    seed: int = 1,
) -> list[NearDuplicate]:
    """Find texts whose word-shingle Jaccard with an earlier kept text is at least ``threshold``.

    Ids are processed in the given order; the first of a cluster is kept and each later one is
    reported against the earliest kept text it matches. The search is exact (every pair at or over
    the threshold is found, see :func:`_similar_pairs`), vectorised, and does not depend on ``seed``
    beyond 48-bit shingle-hash collisions.
    """
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length: {len(ids)} != {len(texts)}")
    normalised = normalised_texts(pl.Series("text", texts, dtype=pl.String))
    return near_duplicates_of(ids, normalised, threshold=threshold, shingle=shingle, seed=seed)


def near_duplicates_of(
    ids: Sequence[str], normalised: pl.Series, *, threshold: float = 0.9, shingle: int = 5, seed: int = 1
) -> list[NearDuplicate]:
    """:func:`near_duplicates` of texts already normalised by :func:`normalised_texts`."""
    _check_near_inputs(ids, normalised, shingle)
    if len(ids) < 2:
        return []
    norm = normalised.fill_null("")
    # Identical normalised texts are one set: compare the first of each, then give every copy the
    # verdict of its first (a copy of a kept text is its duplicate at 1.0).
    frame = (
        pl.DataFrame({"norm": norm})
        .with_row_index("pos")
        .select("pos", pl.col("pos").first().over("norm").alias("first"))
    )
    rows = frame.filter(pl.col("pos") == pl.col("first"))["pos"].to_numpy().astype(np.int64)
    prefixes = _prefixes(norm, rows, shingle, seed, threshold)
    pairs = _similar_pairs(prefixes, lambda docs: norm.gather(rows[docs]), threshold)
    verdict = _earliest_kept(pairs, rows.tolist())
    found: list[NearDuplicate] = []
    for pos, first in frame.iter_rows():
        if pos != first:
            of, sim = verdict.get(first, (first, 1.0))
        elif pos in verdict:
            of, sim = verdict[pos]
        else:
            continue
        found.append(NearDuplicate(id=ids[pos], of=ids[of], similarity=round(sim, 4)))
    return found


def _check_near_inputs(ids: Sequence[str], texts: pl.Series, shingle: int) -> None:
    if len(ids) != texts.len():
        raise ValueError(f"ids and texts differ in length: {len(ids)} != {texts.len()}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if shingle < 1:
        raise ValueError("shingle must be at least 1")


def _earliest_kept(pairs: pl.DataFrame, position: list[int]) -> dict[int, tuple[int, float]]:
    """{position of a near duplicate: (position of the earliest kept text it matches, similarity)};
    ``position`` maps a distinct text's index (as in ``pairs``) to its position in the ids."""
    verdict: dict[int, tuple[int, float]] = {}
    for a, b, sim in pairs.sort("b", "a").iter_rows():
        pa, pb = position[a], position[b]
        if pb not in verdict and pa not in verdict:  # pa is decided: every pair ending at it came first
            verdict[pb] = (pa, sim)
    return verdict


# --------------------------------------------------------------------------------------------------
# Length outliers
# --------------------------------------------------------------------------------------------------

_MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
_MEAN_AD_SCALE = 1.2533  # mean absolute deviation -> standard deviation for normal data


def robust_z(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Robust z-scores from the median and MAD, so the outliers cannot hide by inflating the scale.

    When more than half the values are equal the MAD is 0; then the mean absolute deviation from
    the median is used, and when that is 0 too every value is the median and all scores are 0.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=np.float64)
    median = float(np.median(x))
    deviation = np.abs(x - median)
    scale = _MAD_SCALE * float(np.median(deviation))
    if scale == 0.0:
        scale = _MEAN_AD_SCALE * float(np.mean(deviation))
    if scale == 0.0:
        return np.zeros_like(x)
    return (x - median) / scale


def length_outliers(lengths: Sequence[int], *, max_z: float = 6.0) -> np.ndarray:
    """Boolean mask of texts whose log length is more than ``max_z`` robust z away from the median.

    Text lengths are roughly log-normal, so the score is computed on ``log1p(length)``.
    """
    logs = np.log1p(np.asarray(lengths, dtype=np.float64))
    return np.abs(robust_z(logs)) > max_z


# --------------------------------------------------------------------------------------------------
# Missing values
# --------------------------------------------------------------------------------------------------


def missing_rates(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Share of null or whitespace-only values per column: a blank string is as useless as a null."""
    if frame.height == 0:
        return {column: 0.0 for column in columns}
    rates: dict[str, float] = {}
    for column in columns:
        series = frame.get_column(column)
        missing = series.is_null()
        if series.dtype == pl.String:
            missing = missing | (series.str.strip_chars() == "").fill_null(True)
        rates[column] = float(missing.sum()) / frame.height
    return rates


# --------------------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------------------

NULL_CATEGORY = "<null>"


def psi(reference: Mapping[str, int], current: Mapping[str, int], *, epsilon: float = 1e-4) -> float:
    """Population stability index over the union of categories (< 0.1 stable, > 0.25 shifted).

    Proportions are floored at ``epsilon`` so a category missing on one side gives a large but
    finite term. Returns 0.0 when either side is empty: there is nothing to compare.
    """
    total_ref = sum(reference.values())
    total_cur = sum(current.values())
    if total_ref <= 0 or total_cur <= 0:
        return 0.0
    value = 0.0
    for category in set(reference) | set(current):
        p = max(reference.get(category, 0) / total_ref, epsilon)
        q = max(current.get(category, 0) / total_cur, epsilon)
        value += (q - p) * math.log(q / p)
    return value


def category_counts(values: Sequence[str | None]) -> dict[str, int]:
    """Count each value, with None counted as ``"<null>"`` so a rise in nulls shows as drift."""
    return dict(Counter(NULL_CATEGORY if value is None else value for value in values))


def length_buckets(
    reference_lengths: np.ndarray | Sequence[float],
    current_lengths: np.ndarray | Sequence[float],
    *,
    buckets: int = 10,
) -> tuple[dict[str, int], dict[str, int]]:
    """Bucket both samples by the reference's quantile edges, for :func:`psi` on a numeric column.

    Equal quantiles (many identical lengths) are merged, so there may be fewer than ``buckets``
    labels; both dicts always carry the same labels ``q0..qk``.
    """
    reference = np.asarray(reference_lengths, dtype=np.float64)
    current = np.asarray(current_lengths, dtype=np.float64)
    if reference.size and buckets > 1:
        edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, buckets + 1)[1:-1]))
    else:
        edges = np.zeros(0, dtype=np.float64)
    labels = [f"q{i}" for i in range(edges.size + 1)]

    def count(sample: np.ndarray) -> dict[str, int]:
        index = np.searchsorted(edges, sample, side="right")
        tally = np.bincount(index, minlength=len(labels))
        return {label: int(n) for label, n in zip(labels, tally, strict=True)}

    return count(reference), count(current)


def ks_statistic(reference: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value); ``(0.0, 1.0)`` when a side is empty."""
    if len(reference) == 0 or len(current) == 0:
        return 0.0, 1.0
    from scipy import stats  # here: a second of import that a CLI call without drift checks skips

    result = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


def centroid_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Cosine distance (1 - cos) between the mean vectors of two ``(n, d)`` embedding sets.

    A cheap whole-batch signal that the embedded content moved. 0.0 when either set is empty;
    when exactly one mean is the zero vector the angle is undefined and 1.0 (orthogonal) is returned.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        return 0.0
    ref, cur = np.atleast_2d(ref), np.atleast_2d(cur)
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"dimension mismatch: {ref.shape[1]} != {cur.shape[1]}")
    a, b = ref.mean(axis=0), cur.mean(axis=0)
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0 if norm_a == norm_b else 1.0
    cosine = float(np.dot(a, b)) / (norm_a * norm_b)
    return 1.0 - max(-1.0, min(1.0, cosine))


@dataclass(frozen=True)
class DriftFigures:
    """Drift of a batch against a reference: text-length PSI and KS, and PSI per categorical field."""

    psi_length: float
    ks_length: float
    ks_pvalue: float
    psi_categorical: dict[str, float] = field(default_factory=dict)

    @property
    def max_psi(self) -> float:
        """The worst PSI, so one threshold can gate the batch."""
        return max([self.psi_length, *self.psi_categorical.values()])


def text_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    text_col: str = "text",
    categorical: Sequence[str] = (),
) -> DriftFigures:
    """Compare ``current`` with ``reference``: character lengths of ``text_col`` and each categorical column.

    Null texts are left out of the length figures; missingness is measured by :func:`missing_rates`.
    """
    ref_lengths = reference.get_column(text_col).str.len_chars().drop_nulls().to_numpy()
    cur_lengths = current.get_column(text_col).str.len_chars().drop_nulls().to_numpy()
    ref_buckets, cur_buckets = length_buckets(ref_lengths, cur_lengths)
    ks, pvalue = ks_statistic(ref_lengths.tolist(), cur_lengths.tolist())
    per_field = {
        column: psi(
            category_counts(reference.get_column(column).cast(pl.String).to_list()),
            category_counts(current.get_column(column).cast(pl.String).to_list()),
        )
        for column in categorical
    }
    return DriftFigures(
        psi_length=psi(ref_buckets, cur_buckets),
        ks_length=ks,
        ks_pvalue=pvalue,
        psi_categorical=per_field,
    )
