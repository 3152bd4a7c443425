"""Markdown split by its sections: a chunk starts where a section starts and never ends inside one.

Whole sections are packed into a chunk while they fit the budget, their headings in the text; a
section too long for one chunk is split on its own by sentences, and each of its chunks starts
with the path of headings it sits under ("Brew Kettle guide 1 › Troubleshooting"), so a passage
deep in a long section still says what it is about, to the model and to whoever reads the hit."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the chunker calls this module; only its type is needed here
    from embedding_assets.gold.chunking import Chunker

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
SEPARATOR = " › "
SEAM = "\n\n"


def markdown_sections(text: str) -> list[tuple[str, str]]:
    """(heading path, section text with its heading line) of each section, in order. A heading
    nests under the nearest shallower one before it; text before the first heading has no path.
    Lines in fenced code blocks are never headings."""
    fenced = _fenced_spans(text)
    marks = [m for m in _HEADING.finditer(text) if not any(a <= m.start() < b for a, b in fenced)]
    sections: list[tuple[str, str]] = []
    if not marks or marks[0].start() > 0:
        head = text[: marks[0].start() if marks else len(text)].strip()
        if head:
            sections.append(("", head))
    stack: list[tuple[int, str]] = []
    for i, mark in enumerate(marks):
        level, name = len(mark.group(1)), mark.group(2).strip()
        stack = [(lvl, n) for lvl, n in stack if lvl < level] + [(level, name)]
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        sections.append((SEPARATOR.join(n for _, n in stack), text[mark.start() : end].strip()))
    return sections


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    fences = [m.start() for m in _FENCE.finditer(text)]
    return [(fences[i], fences[i + 1]) for i in range(0, len(fences) - 1, 2)]


def split_sections_many(texts: list[str], chunker: Chunker) -> list[list[tuple[str, int]]]:
    """Each markdown text's chunks as (chunk text, token count): whole sections packed while they
    fit the budget, a longer section split by :func:`_long_sections` on its own."""
    budget = chunker.settings.budget
    sections = [(i, path, body) for i, text in enumerate(texts) for path, body in markdown_sections(text)]
    counts = chunker.counts([body for _, _, body in sections])
    long = [k for k, n in enumerate(counts) if n > budget]
    pieces = dict(zip(long, _long_sections([sections[k][1:] for k in long], chunker), strict=True))
    out: list[list[tuple[str, int]]] = [[] for _ in texts]
    group: list[int] = []  # sections packed into the chunk being filled

    def flush() -> None:
        if group:
            out[sections[group[0]][0]].extend(
                _packed([sections[k][2] for k in group], [counts[k] for k in group], chunker)
            )
            group.clear()

    for k, (i, _, _) in enumerate(sections):
        if group and (
            sections[group[0]][0] != i or sum(counts[j] for j in group) + counts[k] > budget or k in pieces
        ):
            flush()
        if k in pieces:
            out[i].extend(pieces[k])
        else:
            group.append(k)
    flush()
    return out


def _packed(bodies: list[str], counts: list[int], chunker: Chunker) -> list[tuple[str, int]]:
    """Whole sections joined into one chunk; where the tokenizer is not additive at whitespace
    and the seams pushed the joined text over budget, the last section goes to a chunk of its own."""
    text = SEAM.join(bodies)
    if chunker.additive:
        return [(text, sum(counts))]
    n = chunker.count(text)
    if n <= chunker.settings.budget or len(bodies) == 1:
        return [(text, n)]
    return _packed(bodies[:-1], counts[:-1], chunker) + _packed(bodies[-1:], counts[-1:], chunker)


def _long_sections(sections: list[tuple[str, str]], chunker: Chunker) -> list[list[tuple[str, int]]]:
    """Sections over budget, each split by sentences within the budget less its heading path,
    the path (which names the section) put before each chunk in place of the heading line."""
    budget = chunker.settings.budget
    bodies = [body.split("\n", 1)[1].strip() if path and "\n" in body else body for path, body in sections]
    prefix = chunker.counts([path + SEAM if path else "" for path, _ in sections])
    taken = [n if 0 < n <= budget // 2 else 0 for n in prefix]  # a path too long is left out
    out = []
    for (path, _), body, n in zip(sections, bodies, taken, strict=True):
        split = (chunker.with_budget(budget - n) if n else chunker).split(body)
        out.append(_prefixed(path if n else "", split, n, chunker))
    return out


def _prefixed(path: str, split: list[tuple[str, int]], taken: int, chunker: Chunker) -> list[tuple[str, int]]:
    """Each chunk with ``path`` before it: counted apart they sum to the whole for a tokenizer
    additive at whitespace; any other counts each for real, and one the seam pushed over budget
    goes without its path."""
    if not path:
        return split
    whole = [(f"{path}{SEAM}{text}", text, n + taken) for text, n in split]
    if chunker.additive:
        return [(w, n) for w, _, n in whole]
    counted = zip(whole, chunker.counts([w for w, _, _ in whole]), strict=True)
    return [
        (w, n) if n <= chunker.settings.budget else (bare, chunker.count(bare)) for (w, bare, _), n in counted
    ]
