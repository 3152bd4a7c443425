from datetime import UTC, datetime

import polars as pl
import pytest

from embedding_assets.embed.embedder import bundled_tokenizer
from embedding_assets.gold.chunking import Chunker, ChunkerSettings, chunk_documents
from embedding_assets.gold.documents import GOLD_DOCUMENT_COLUMNS
from embedding_assets.refine.tables import SILVER_SCHEMA

SENTENCES = [
    f"Sentence number {i} explains how the {w} keeps working after a restart."
    for i, w in enumerate(["kettle", "plug", "lock", "vacuum", "thermostat", "speaker"] * 30)
]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return bundled_tokenizer()


def _tokens_with_specials(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def test_chunks_respect_budget_and_model_limit(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, ChunkerSettings(max_tokens=256, overlap=32, model_max_tokens=256))
    text = " ".join(SENTENCES)
    chunks = chunker.split(text)
    assert len(chunks) > 5
    for chunk, n in chunks:
        assert n <= chunker.settings.budget == 254
        assert _tokens_with_specials(tokenizer, chunk) <= 256  # the model never truncates
        assert chunk.endswith(".")  # sentence boundaries are preferred


def test_overlap_repeats_trailing_sentences(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, ChunkerSettings(max_tokens=64, overlap=20, model_max_tokens=256))
    chunks = [c for c, _ in chunker.split(" ".join(SENTENCES[:12]))]
    last_sentence_of_first = chunks[0].split(". ")[-1]
    assert last_sentence_of_first in chunks[1]


def test_zero_overlap_covers_text_once(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, ChunkerSettings(max_tokens=64, overlap=0, model_max_tokens=256))
    text = " ".join(SENTENCES[:20])
    chunks = [c for c, _ in chunker.split(text)]
    assert " ".join(chunks) == text


def test_a_sentence_longer_than_the_budget_is_split_on_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = Chunker(tokenizer, ChunkerSettings(max_tokens=256, overlap=32, model_max_tokens=128))
    text = "word " * 1000
    chunks = chunker.split(text.strip())
    assert len(chunks) >= 8
    assert all(_tokens_with_specials(tokenizer, c) <= 128 for c, _ in chunks)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkerSettings(max_tokens=32, overlap=32)


def test_chunk_documents_ids_hashes_and_deleted_docs(tokenizer) -> None:  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 1, tzinfo=UTC)
    docs = pl.DataFrame(
        [
            ("g:1", "g", "1", "b", "T", " ".join(SENTENCES[:40]), now, False, "{}", "h1"),
            ("g:2", "g", "2", "b", None, "", now, True, "{}", "h2"),
        ],
        schema={c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS},
        orient="row",
    )
    chunker = Chunker(tokenizer, ChunkerSettings(max_tokens=128, overlap=16, model_max_tokens=256))
    chunks = chunk_documents(docs, chunker)
    assert set(chunks["doc_id"]) == {"g:1"}
    n = chunks.height
    assert chunks["chunk_id"].to_list() == [f"g:1#{i}" for i in range(n)]
    assert chunks["n_chunks"].unique().to_list() == [n]
    assert chunks["chunk_hash"].n_unique() == n
    again = chunk_documents(docs, chunker)
    assert again.equals(chunks)  # deterministic


class _CountingTokenizer:
    """The real tokenizer, counting the texts it is asked to tokenise."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self._tok = tokenizer
        self.texts: list[str] = []

    def __call__(self, text: str, **kwargs):  # type: ignore[no-untyped-def]
        self.texts.append(text)
        return self._tok(text, **kwargs)


def _docs(texts: list[str], titles: list[str] | None = None) -> pl.DataFrame:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return pl.DataFrame(
        [
            (f"g:{i}", "g", str(i), "b", (titles or ["T"] * len(texts))[i], t, now, False, "{}", f"h{i}")
            for i, t in enumerate(texts)
        ],
        schema={c: SILVER_SCHEMA[c] for c in GOLD_DOCUMENT_COLUMNS},
        orient="row",
    )


def test_unchanged_documents_reuse_their_split_and_the_result_equals_a_fresh_split(tokenizer) -> None:  # type: ignore[no-untyped-def]
    texts = [" ".join(SENTENCES[i : i + 12]) for i in range(0, 120, 12)]
    settings = ChunkerSettings(max_tokens=64, overlap=16, model_max_tokens=256)
    before = chunk_documents(_docs(texts), Chunker(tokenizer, settings, "m"))
    edited = [*texts]
    edited[3] += " One more sentence about the kettle."
    titles = ["T"] * len(texts)
    titles[5] = "A new title"  # a document-level change: no re-split, but the chunks carry it
    counting = _CountingTokenizer(tokenizer)
    after = chunk_documents(_docs(edited, titles), Chunker(counting, settings, "m"), before)
    fresh = chunk_documents(_docs(edited, titles), Chunker(tokenizer, settings, "m"))
    assert after.equals(fresh)
    assert counting.texts and all(t in edited[3] for t in counting.texts)  # only doc 3 was tokenised
    assert set(after.filter(pl.col("doc_id") == "g:5")["title"]) == {"A new title"}
    # another chunker (settings or tokenizer) never reuses a split
    other = _CountingTokenizer(tokenizer)
    chunk_documents(_docs(edited), Chunker(other, settings, "another-model"), before)
    assert {t for t in other.texts if t in texts[0]}
    # a deleted document yields no chunks even though its split is known
    gone = _docs(edited).with_columns((pl.col("doc_id") == "g:0").alias("deleted"))
    assert "g:0" not in set(chunk_documents(gone, Chunker(tokenizer, settings, "m"), before)["doc_id"])


class _OneAtATime:
    """The bundled tokenizer without its batch call: what a transformers tokenizer gives."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self._tok = tokenizer

    def __call__(self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool) -> dict:
        return self._tok(
            text, add_special_tokens=add_special_tokens, return_offsets_mapping=return_offsets_mapping
        )


def test_a_batch_splits_as_one_text_at_a_time_does(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Batched tokenisation changes no chunk: long sentences cut on token boundaries, words
    glued across a cut, blank paragraphs, empty and one-word texts."""
    settings = ChunkerSettings(max_tokens=40, overlap=12, model_max_tokens=64)
    glued = "x".join(f"unbreakable{w}" for w in ["kettle", "plug", "lock"] * 12)
    texts = [
        " ".join(SENTENCES[:25]),
        glued,
        f"{glued}. Short one.\n\n\n{' '.join(SENTENCES[30:34])}",
        "",
        "word",
        "\n\n- a list item\n- another item\n# A heading\n" + " ".join(SENTENCES[40:50]),
        # Counts summed over sentences must equal real ones across accents, CJK, tabs, no-break
        # spaces and control characters at the seams.
        "Café crème brûlée.\tNaïve façade! 東京の天気は晴れ。\u00a0Ärger über Öl? \x07Bell char."
        + " Über-long: "
        + "Größenwahnsinnigkeitsüberprüfung" * 9
        + ". "
        + " ".join(SENTENCES[60:70]),
    ]
    batched = Chunker(tokenizer, settings).split_many(texts)
    alone = Chunker(_OneAtATime(tokenizer), settings)
    assert batched == [alone.split(t) for t in texts]
    assert sum(len(c) for c in batched) > 15


def test_only_a_tokenizer_that_splits_at_whitespace_first_sums_sentence_counts(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The bundled WordPiece tokenizer does; a byte-level BPE one (GPT-2 style, where the space
    belongs to the next token) does not, so its chunks are counted for real."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from embedding_assets.embed.models import additive_at_whitespace

    assert tokenizer.additive_at_whitespace
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert not additive_at_whitespace(bpe)
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
    assert not additive_at_whitespace(wordpiece)  # no pre-tokenizer: words are not split first
    wordpiece.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits()])
    assert not additive_at_whitespace(wordpiece)  # not one this module vouches for


GUIDE = """# Kettle guide

Read this once before you fill the kettle.

## Setup

Fill it to the line and press the button.

```
# not a heading: a comment in a code block
```

### Wi-Fi

Hold the button for five seconds to pair it with the app.

## Troubleshooting

""" + " ".join(SENTENCES[:40])


def test_markdown_sections_nest_under_their_headings_and_skip_code_blocks() -> None:
    from embedding_assets.gold.sections import markdown_sections

    sections = markdown_sections("Intro before any heading.\n\n" + GUIDE)
    assert [path for path, _ in sections] == [
        "",
        "Kettle guide",
        "Kettle guide › Setup",
        "Kettle guide › Setup › Wi-Fi",
        "Kettle guide › Troubleshooting",
    ]
    assert sections[2][1].startswith("## Setup") and "# not a heading" in sections[2][1]


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_markdown_chunks_start_at_sections_and_long_ones_carry_their_path(
    tokenizer, one_at_a_time: bool
) -> None:  # type: ignore[no-untyped-def]
    """Small sections are packed whole; a section over budget is split alone, each chunk starting
    with its heading path; every count is exact and within budget, with an additive tokenizer and
    with one counted for real."""
    from embedding_assets.gold.sections import split_sections_many

    tok = _OneAtATime(tokenizer) if one_at_a_time else tokenizer
    chunker = Chunker(tok, ChunkerSettings(max_tokens=64, overlap=16, model_max_tokens=256))
    chunks = split_sections_many([GUIDE], chunker)[0]
    for text, n in chunks:
        assert n == chunker.count(text) and n <= chunker.settings.budget
    texts = [t for t, _ in chunks]
    assert texts[0].startswith("# Kettle guide") and "## Setup" in texts[0] + texts[1]
    long = [t for t in texts if "Sentence number" in t]
    assert len(long) > 3 and all(t.startswith("Kettle guide › Troubleshooting\n\n") for t in long)
    assert not any("## Troubleshooting" in t and "## Setup" in t for t in texts)  # never across a heading
    assert not any("Wi-Fi" in t and "Sentence number" in t for t in texts)


def test_sectioned_sources_split_by_sections_and_their_splits_are_told_apart(tokenizer) -> None:  # type: ignore[no-untyped-def]
    """The same text splits differently as Markdown, and a split is reused only in the same mode."""
    settings = ChunkerSettings(max_tokens=64, overlap=16, model_max_tokens=256)
    docs = _docs([GUIDE]).with_columns(pl.lit("guides").alias("source"))
    plain = chunk_documents(docs, Chunker(tokenizer, settings, "m"))
    sectioned = Chunker(tokenizer, settings, "m", frozenset({"guides"}))
    by_sections = chunk_documents(docs, sectioned)
    assert plain["text"].to_list() != by_sections["text"].to_list()
    assert chunk_documents(docs, sectioned, plain)["text"].to_list() == by_sections["text"].to_list()
    assert plain["split_hash"][0] != by_sections["split_hash"][0]
