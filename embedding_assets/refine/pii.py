"""Personal data found in text and masked before it reaches gold, the vectors or the index.

Four kinds: e-mail addresses, phone numbers, payment card numbers (Luhn-checked) and IBANs
(ISO 13616 mod-97 checked). Per contract each kind is masked (replaced by a placeholder such as
``[EMAIL]``: the default for every kind), dropped (removed) or kept.

A polars (Rust) regex that every kind's pattern needs to match picks the texts worth a look, so
a batch without personal data costs one vectorised scan; only the texts it flags go through the
Python patterns and their checksums. Cards and IBANs are checked before phone numbers, so a card
number is never counted (or masked) as a phone number.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import polars as pl

from embedding_assets.contracts.model import PiiRules

PLACEHOLDERS = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "phone": "[PHONE]"}

_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_IBAN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
_CARD = r"(?<![\d+-])(?:\d[ -]?){12,18}\d(?![\d-])"
# International (+44 20 7946 0958, 0044 ...), an area code in brackets ((030) 1234 5678), North
# American (555-123-4567) and European national numbers with a trunk 0 (030 12345678). Dates,
# times, prices, versions and ids do not take these shapes; the digit count is checked too.
_PHONE = (
    r"(?<![\w+])(?:(?:\+|00)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,5}"
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"
    r"|0\d{2,4}[ /-]?\d{5,8})(?![\w])"
)
PATTERNS = {"email": _EMAIL, "iban": _IBAN, "card": _CARD, "phone": _PHONE}
# Something each pattern needs: an '@', two capitals and two digits, or a run of digits with at
# most one separator between them (Rust's regex has no look-around, so this is looser).
_SUSPECT = r"@|[A-Z]{2}\d{2}|\d[ ./()-]?\d[ ./()-]?\d[ ./()-]?\d[ ./()-]?\d[ ./()-]?\d[ ./()-]?\d"


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as 10-35, mod 97 is 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


_VALID: dict[str, Callable[[str], bool]] = {
    "email": lambda _: True,
    "iban": iban_valid,
    "card": lambda m: 13 <= len(_digits(m)) <= 19 and luhn_valid(_digits(m)),
    "phone": lambda m: 9 <= len(_digits(m)) <= 15,
}
_COMPILED = {kind: re.compile(f"([ \\t])?({pattern})") for kind, pattern in PATTERNS.items()}
_GROUP_END = re.compile(r"(?<=[A-Za-z0-9])(?=[ -])")


def valid_length(kind: str, found: str) -> int:
    """How much of a pattern's match is the personal data: all of it when it passes its check,
    else the longest leading run of whole groups that does (a card or IBAN followed by another
    group of digits), else 0."""
    if _VALID[kind](found):
        return len(found)
    for end in sorted((m.start() for m in _GROUP_END.finditer(found)), reverse=True):
        if _VALID[kind](found[:end]):
            return end
    return 0


def mask_text(text: str, rules: PiiRules, counts: Counter[str] | None = None) -> str:
    """``text`` with every valid match of each active kind masked or dropped (with the blank
    before it, so no gap is left); ``counts`` gains the matches per kind."""
    for kind, action in rules.active.items():
        drop = action == "drop"

        def replace(match: re.Match[str], kind: str = kind, drop: bool = drop) -> str:
            lead, found = match.group(1) or "", match.group(2)
            n = valid_length(kind, found)
            if not n:
                return match.group(0)
            if counts is not None:
                counts[kind] += 1
            return ("" if drop else lead + PLACEHOLDERS[kind]) + found[n:]

        text = _COMPILED[kind].sub(replace, text)
    return text


def mask_series(texts: pl.Series, rules: PiiRules) -> tuple[pl.Series, Counter[str]]:
    """:func:`mask_text` of every text (nulls stay null), and the matches per kind; only the
    texts the vectorised scan flags are looked at in Python."""
    counts: Counter[str] = Counter()
    if not rules.active or texts.len() == 0:
        return texts, counts
    suspect = texts.str.contains(_SUSPECT).fill_null(False)
    if not suspect.any():
        return texts, counts
    at = suspect.arg_true()
    masked = [mask_text(t, rules, counts) for t in texts.gather(at).to_list()]
    return texts.scatter(at, pl.Series(masked, dtype=pl.String)), counts


def mask_columns(
    frame: pl.DataFrame, columns: list[str], rules: PiiRules
) -> tuple[pl.DataFrame, Counter[str]]:
    """:func:`mask_series` of each of ``columns``, with the matches of all of them per kind."""
    counts: Counter[str] = Counter()
    masked = []
    for name in columns:
        series, found = mask_series(frame[name], rules)
        masked.append(series)
        counts.update(found)
    return frame.with_columns(masked), counts
