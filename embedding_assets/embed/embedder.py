"""Embedders: sentence-transformers for real work, a hashing embedder for fast tests only.

The sentence-transformers model loads lazily and once per process (per model, device).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Protocol

import numpy as np

from embedding_assets.config import DEFAULT_MODEL
from embedding_assets.embed.models import ModelInfo, describe_model, load_tokenizer

_LOCK = threading.Lock()


class Embedder(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    @property
    def model_id(self) -> str: ...

    @property
    def revision(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

    @property
    def device(self) -> str: ...

    def tokenizer(self) -> Any: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...


def model_slug(model_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def _load_sentence_transformer(target: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # One progress bar per weight file, per run, in every run's log: say nothing instead.
    transformers_logging.disable_progress_bar()
    model = SentenceTransformer(target, device=device)
    if device.startswith("cuda"):
        model.half()  # fp16 on the GPU: twice the throughput, cosine agreement stays > 0.999
    model.eval()
    return model


class SentenceTransformerEmbedder:
    """A sentence-transformers model, normalised embeddings, length-sorted batches."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 0) -> None:
        self.info = describe_model(model)
        self._target, self.model_id, self.revision = self.info.path, self.info.model_id, self.info.revision
        self.device = pick_device(device)
        self.batch_size = batch_size or (256 if self.device.startswith("cuda") else 64)

    @property
    def model(self) -> Any:
        with _LOCK:
            return _load_sentence_transformer(self._target, self.device)

    @property
    def dimension(self) -> int:
        if self.info.dimension:
            return self.info.dimension
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        return self.info.max_seq_length

    def tokenizer(self) -> Any:
        return load_tokenizer(self.info.path)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # encode() sorts by length internally, so each batch pads to similar lengths.
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def bundled_tokenizer() -> Any:
    return load_tokenizer(describe_model(DEFAULT_MODEL).path)


@dataclass
class HashingEmbedder:
    """Deterministic bag-of-words hashing embedder. For tests only; never the default.

    It tokenises with the bundled model's tokenizer, so chunking is exercised for real.
    """

    dimension: int = 384
    model_id: str = "hashing-embedder-v1"
    revision: str = "1"
    max_seq_length: int = 256
    device: str = "cpu"
    calls: int = 0

    @property
    def _salt(self) -> bytes:
        """Different model ids give different vectors, as two real models would."""
        return hashlib.blake2b(self.model_id.encode(), digest_size=16).digest()

    @property
    def info(self) -> ModelInfo:
        """The bundled model's tokenizer, under this embedder's own id."""
        bundled = describe_model(DEFAULT_MODEL)
        return replace(
            bundled, model_id=self.model_id, revision=self.revision, max_seq_length=self.max_seq_length,
            dimension=self.dimension,
        )  # fmt: skip

    def tokenizer(self) -> Any:
        return bundled_tokenizer()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8, salt=self._salt).digest()
                h = int.from_bytes(digest, "little")
                out[row, h % self.dimension] += 1.0 if (h >> 32) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out


def build_embedder(kind: str, model: str, device: str, batch_size: int) -> Embedder:
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(model, device, batch_size)
    if kind == "hashing":
        return HashingEmbedder() if model == DEFAULT_MODEL else HashingEmbedder(model_id=f"hashing-{model}")
    raise ValueError(f"unknown embedder {kind!r}: use 'sentence-transformers' (or 'hashing' in tests)")
