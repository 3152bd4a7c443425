"""Token-aware chunking with the embedding model's own tokenizer.

A chunk never exceeds the model's maximum sequence length (special tokens included), so
sentence-transformers never silently truncates what we embed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import polars as pl

from embedding_assets.core.hashing import frame_hash, sha256_text
from embedding_assets.gold.sections import split_sections_many

SECTIONS = "sections\x1f"  # what a split hash of a text split by its sections starts with
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n{2,}|\n(?=\s*[-*#\d])")

CHUNK_SCHEMA = pl.Schema(
    {
        "chunk_id": pl.String(),
        "doc_id": pl.String(),
        "source": pl.String(),
        "batch": pl.String(),
        "chunk_index": pl.Int32(),
        "n_chunks": pl.Int32(),
        "title": pl.String(),
        "text": pl.String(),
        "chunk_hash": pl.String(),
        "n_tokens": pl.Int32(),
        "updated_at": pl.Datetime("us", "UTC"),
        "metadata": pl.String(),
        # sha256 of the chunker's version and the document's text: the split can be reused while
        # both stay the same (null in tables written before it existed: those documents are re-split)
        "split_hash": pl.String(),
        "model": pl.String(),  # the registry name of the model whose tokenizer split it
    }
)
SPLIT_SCHEMA = pl.Schema({c: t for c, t in CHUNK_SCHEMA.items() if c != "model"})
# Columns a chunk takes from its document; the rest come from the split.
_FROM_DOCUMENT = ["doc_id", "source", "batch", "title", "updated_at", "metadata"]


class Tokenizer(Protocol):
    def __call__(self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool) -> dict: ...


@dataclass(frozen=True)
class ChunkerSettings:
    max_tokens: int = 256
    overlap: int = 32
    model_max_tokens: int = 256  # the model's max_seq_length, special tokens included
    special_tokens: int = 2  # [CLS] and [SEP] for BERT-style models

    @property
    def budget(self) -> int:
        """Tokens of text allowed per chunk."""
        return max(8, min(self.max_tokens, self.model_max_tokens - self.special_tokens))

    def __post_init__(self) -> None:
        if self.overlap < 0 or self.overlap >= self.max_tokens:
            raise ValueError(f"chunk overlap {self.overlap} must be >= 0 and < chunk size {self.max_tokens}")

    def describe(self) -> str:
        return f"tokens={self.budget},overlap={self.overlap}"


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    n_tokens: int
    whole: bool = True  # a whole sentence (False: a window of a sentence over budget)


class Chunker:
    def __init__(
        self,
        tokenizer: Tokenizer,
        settings: ChunkerSettings,
        tokenizer_id: str = "",
        sectioned: frozenset[str] = frozenset(),
    ) -> None:
        """``tokenizer_id`` names the tokenizer (the model id), so a split made with another one is
        never reused; the documents of the ``sectioned`` sources (Markdown) are split by section."""
        self._tok = tokenizer
        self.settings = settings
        self.tokenizer_id = tokenizer_id
        self.sectioned = sectioned
        self.version = f"{tokenizer_id}|{settings.describe()}"

    def split_hash(self, text: str) -> str:
        return sha256_text(self.version, text)

    def with_budget(self, tokens: int) -> Chunker:
        """The same tokenizer with a smaller budget (the overlap shrunk to fit under it)."""
        settings = replace(self.settings, max_tokens=tokens, overlap=min(self.settings.overlap, tokens - 1))
        return Chunker(self._tok, settings, self.tokenizer_id)

    @property
    def additive(self) -> bool:
        """Whether whole sentences joined at whitespace count as the sum of their tokens: true of a
        tokenizer that splits words at whitespace before anything else (WordPiece behind BERT's)."""
        return bool(getattr(self._tok, "additive_at_whitespace", False))

    def count(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False, return_offsets_mapping=False)["input_ids"])

    def counts(self, texts: list[str]) -> list[int]:
        return self._counts_many(texts)

    def _offsets_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's token offsets: in one call where the tokenizer takes a batch (the Rust
        tokenizer, on every core), else one call per text."""
        many = getattr(self._tok, "offsets_many", None)
        if many is not None:
            return many(texts)  # type: ignore[no-any-return]
        return [
            self._tok(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            for t in texts
        ]

    def _counts_many(self, texts: list[str]) -> list[int]:
        """Each text's token count, in one batch call where the tokenizer has one (no offsets
        are turned into Python objects just to be counted)."""
        many = getattr(self._tok, "counts_many", None)
        if many is not None:
            return many(texts)  # type: ignore[no-any-return]
        return [self.count(t) for t in texts]

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every sentence that is not blank."""
        bounds = [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
        starts = [0, *bounds[:-1]]
        return [(s, e) for s, e in zip(starts, bounds, strict=True) if text[s:e].strip()]

    def _pieces(
        self, start: int, end: int, n_tokens: int, offsets: list[tuple[int, int]] | None
    ) -> list[_Piece]:
        """One sentence as a piece, or split on token boundaries (``offsets``, given for a sentence
        over budget) if it alone is over budget."""
        budget = self.settings.budget
        if n_tokens <= budget:
            return [_Piece(start, end, n_tokens)]
        assert offsets is not None and len(offsets) == n_tokens
        pieces = []
        for i in range(0, len(offsets), budget):
            window = offsets[i : i + budget]
            e = start + (offsets[i + budget][0] if i + budget < len(offsets) else end - start)
            pieces.append(_Piece(start + window[0][0], e, len(window), whole=False))
        return pieces

    def split(self, text: str) -> list[tuple[str, int]]:
        """Chunks of ``text`` as (chunk text, token count), packed by sentence with overlap."""
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[tuple[str, int]]]:
        """:meth:`split` of each text, with every sentence of every text tokenised in one batch
        and every packed chunk counted in another. Packing is a fixed function of the counts, so
        the result is what one text at a time gives; a chunk that grew over budget at a seam is
        shrunk with counts taken one at a time (rare)."""
        pieces = self._pieces_many(texts)
        # A tokenizer that splits words at whitespace before anything else gives whole sentences
        # joined at whitespace the sum of their counts; any other chunk is counted for real.
        additive = self.additive

        def summed(parts: list[_Piece]) -> int | None:
            return sum(p.n_tokens for p in parts) if additive and all(p.whole for p in parts) else None

        drafts: list[str] = []  # the chunks packing makes when no seam adds tokens

        def draft(chunk: str, parts: list[_Piece]) -> int:
            n = summed(parts)
            if n is None:
                drafts.append(chunk)
                return 0
            return n

        for text, ps in zip(texts, pieces, strict=True):
            self._pack(text, ps, draft)
        known = dict(zip(drafts, self._counts_many(drafts), strict=True))

        def count(chunk: str, parts: list[_Piece]) -> int:
            n = summed(parts)
            return n if n is not None else known[chunk] if chunk in known else self.count(chunk)

        return [self._pack(text, ps, count) for text, ps in zip(texts, pieces, strict=True)]

    def _pieces_many(self, texts: list[str]) -> list[list[_Piece]]:
        """Each text's sentences as pieces, every sentence counted in one batch call; offsets are
        taken only for the sentences too long to be one piece, which are split on tokens."""
        spans = [self._spans(t) for t in texts]
        sentences = [t[s:e] for t, sp in zip(texts, spans, strict=True) for s, e in sp]
        counts = self._counts_many(sentences)
        long = [i for i, n in enumerate(counts) if n > self.settings.budget]
        offsets = dict(zip(long, self._offsets_many([sentences[i] for i in long]), strict=True))
        first = list(itertools.accumulate((len(sp) for sp in spans), initial=0))  # each text's first sentence
        return [
            [p for i, (s, e) in enumerate(sp, start) for p in self._pieces(s, e, counts[i], offsets.get(i))]
            for sp, start in zip(spans, first[:-1], strict=True)
        ]

    def _pack(
        self, text: str, pieces: list[_Piece], count: Callable[[str, list[_Piece]], int]
    ) -> list[tuple[str, int]]:
        """Pieces packed into chunks of at most the budget, with whole trailing sentences of
        overlap, ``count`` giving a chunk's tokens (from its text and its pieces)."""
        budget, overlap = self.settings.budget, self.settings.overlap
        chunks: list[tuple[str, int]] = []
        i = 0
        while i < len(pieces):
            j, used = i, 0
            while j < len(pieces) and used + pieces[j].n_tokens <= budget:
                used += pieces[j].n_tokens
                j += 1
            j = max(j, i + 1)
            chunk = text[pieces[i].start : pieces[j - 1].end].strip()
            n = count(chunk, pieces[i:j])
            while n > budget and j - 1 > i:  # joining can add tokens at seams; shrink until it fits
                j -= 1
                chunk = text[pieces[i].start : pieces[j - 1].end].strip()
                n = count(chunk, pieces[i:j])
            chunks.append((chunk, n))
            if j >= len(pieces):
                break
            # Step back over whole trailing sentences that fit in the overlap budget.
            back, k = 0, j
            while k - 1 > i and back + pieces[k - 1].n_tokens <= overlap:
                back += pieces[k - 1].n_tokens
                k -= 1
            i = k
        return chunks


def chunk_documents(
    documents: pl.DataFrame, chunker: Chunker, previous: pl.DataFrame | None = None, model: str = ""
) -> pl.DataFrame:
    """gold/chunks for one batch and one model: live documents split into chunks; deleted
    documents yield none. The documents of the chunker's ``sectioned`` sources (Markdown) are split
    by their sections (:mod:`.sections`).

    ``previous`` (this batch's earlier gold/chunks) lends its splits to documents whose text the same
    chunker split before, so an edit run tokenises only the edited documents. The result equals a
    split of every document from scratch."""
    return _chunk(documents, chunker, previous).with_columns(pl.lit(model).alias("model"))


def _chunk(documents: pl.DataFrame, chunker: Chunker, previous: pl.DataFrame | None) -> pl.DataFrame:
    live = documents.filter(~pl.col("deleted"))
    by_sections = live["source"].is_in(list(chunker.sectioned)).to_list()
    hashes = [
        chunker.split_hash(SECTIONS + t if s else t)
        for t, s in zip(live["text"].to_list(), by_sections, strict=True)
    ]
    live = live.with_columns(
        pl.Series("split_hash", hashes, dtype=pl.String),
        pl.Series("_sections", by_sections, dtype=pl.Boolean),
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_doc_position"),
    )
    reused = _reusable_chunks(live, previous)
    fresh = _split_documents(live.join(reused.select("doc_id").unique(), on="doc_id", how="anti"), chunker)
    if not reused.height:
        return fresh
    return (
        pl.concat([fresh, reused.cast(SPLIT_SCHEMA)])  # type: ignore[arg-type]
        .join(live.select("doc_id", "_doc_position"), on="doc_id")
        .sort("_doc_position", "chunk_index")
        .drop("_doc_position")
    )


def _reusable_chunks(live: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """``previous`` chunks of documents (with one row in ``live``) whose split_hash is unchanged,
    with the document's current columns."""
    if previous is None or not previous.height:
        return pl.DataFrame(schema=SPLIT_SCHEMA)
    split_cols = [c for c in SPLIT_SCHEMA if c not in _FROM_DOCUMENT]
    return (
        previous.select("doc_id", *split_cols)
        .join(
            live.filter(pl.col("doc_id").is_unique()).select("doc_id", "split_hash"),
            on=["doc_id", "split_hash"],
            how="semi",
        )
        .join(live.select(*_FROM_DOCUMENT), on="doc_id", how="inner")
        .select(SPLIT_SCHEMA.names())
    )


def _split_documents(documents: pl.DataFrame, chunker: Chunker) -> pl.DataFrame:
    """Every document split from scratch: a CHUNK_SCHEMA row per chunk, in document order."""
    rows: list[tuple] = []
    for doc, pieces in zip(documents.iter_rows(named=True), _splits(documents, chunker), strict=True):
        for index, (text, n_tokens) in enumerate(pieces):
            rows.append(
                (
                    f"{doc['doc_id']}#{index}",
                    doc["doc_id"],
                    doc["source"],
                    doc["batch"],
                    index,
                    len(pieces),
                    doc["title"],
                    text,
                    sha256_text(text),
                    n_tokens,
                    doc["updated_at"],
                    doc["metadata"],
                    doc["split_hash"],
                )
            )
    return pl.DataFrame(rows, schema=SPLIT_SCHEMA, orient="row")


def _splits(documents: pl.DataFrame, chunker: Chunker) -> list[list[tuple[str, int]]]:
    """Each document's chunks: by sentences, or by sections first where ``_sections`` says so."""
    texts, by_sections = documents["text"].to_list(), documents["_sections"].to_list()
    plain = iter(chunker.split_many([t for t, s in zip(texts, by_sections, strict=True) if not s]))
    sectioned = iter(split_sections_many([t for t, s in zip(texts, by_sections, strict=True) if s], chunker))
    return [next(sectioned) if s else next(plain) for s in by_sections]


def chunks_version(chunks: pl.DataFrame) -> str:
    """Data version of gold/chunks: which chunks, with which text, title and metadata, of which
    document version. A metadata-only change (a contract adding a field) re-runs the index, while
    the embedding cache, keyed by chunk text, embeds nothing."""
    return frame_hash(
        chunks, ["chunk_id", "chunk_hash", "updated_at", "title", "metadata"], sort_by=["chunk_id"]
    )
