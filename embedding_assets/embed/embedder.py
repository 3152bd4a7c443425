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
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedding_assets.config import DEFAULT_MODEL, EMBED_BACKENDS
from embedding_assets.embed.api import API_KIND, ApiEmbedder, ApiOptions, api_info, shared_api_embedder
from embedding_assets.embed.models import (
    ModelInfo,
    content_fingerprint,
    describe_model,
    files_stamp,
    is_bundled,
    load_tokenizer,
    model_slug,
)
from embedding_assets.embed.registry import ModelSpec, RegistryError

_LOCK = threading.Lock()
CPU_BATCH_SIZE = 16


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


__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "build_embedder", "model_slug"]


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


def gpu_batch_size(free_bytes: int, max_seq_length: int, hidden: int) -> int:
    """Texts per fp16 batch that fit in half the free GPU memory: a transformer layer's
    activations take about 16 x tokens x hidden values a text (attention, feed-forward, their
    inputs), two bytes each; a power of two between 16 and 4096."""
    per_text = 16 * max_seq_length * max(hidden, 1) * 2
    fits = max(1, (free_bytes // 2) // per_text)
    return int(min(4096, max(16, 1 << (int(fits).bit_length() - 1))))


def models_loaded() -> int:
    """How many models this process has loaded (each once per model and device, or backend)."""
    return _load_sentence_transformer.cache_info().currsize + _int8_encoder.cache_info().currsize


class SentenceTransformerEmbedder:
    """A sentence-transformers model, normalised embeddings, length-sorted batches.

    ``backend``: ``torch`` (fp32 on the CPU, fp16 on a GPU) or ``int8`` (onnxruntime on the CPU,
    see :mod:`embedding_assets.embed.int8`)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        batch_size: int = 0,
        model_id: str = "",
        backend: str = "torch",
    ) -> None:
        if backend not in EMBED_BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}: use one of {', '.join(EMBED_BACKENDS)}")
        self.info = describe_model(model)
        # ``model_id``: the registry's identity for the vectors (a local model's id carries its
        # weights' fingerprint, an int8 model's its backend); by default the model's own id.
        self._target, self.revision = self.info.path, self.info.revision
        self.model_id = model_id or backend_model_id(self.info.model_id, backend)
        self.backend = backend
        self.device = "cpu" if backend == "int8" else pick_device(device)
        self._batch_size = batch_size

    @property
    def batch_size(self) -> int:
        if self._batch_size:
            return self._batch_size
        if self.device.startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            return gpu_batch_size(free, self.max_seq_length, self.dimension)
        # On the CPU, batches of 16 beat 64 by 10-20 % on 256-token chunks (the sample's chunks
        # 4.4 s against 5.6 s, 2 cores): less padding, and the activations stay in cache.
        return CPU_BATCH_SIZE

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
        if self.backend == "int8":
            return _int8_encoder(self._target, self.max_seq_length).encode(texts)
        batch = self.batch_size
        while True:
            try:
                # encode() sorts by length internally, so each batch pads to similar lengths.
                vectors = self.model.encode(
                    texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False,
                )  # fmt: skip
                return np.asarray(vectors, dtype=np.float32)
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
                if "out of memory" not in str(exc).lower() or batch <= 1:
                    raise
                _free_cuda_cache()
                batch //= 2


def backend_model_id(model_id: str, backend: str) -> str:
    """The identity vectors are cached under: a backend other than torch makes other vectors."""
    return model_id if backend == "torch" else f"{model_id}+{backend}"


@cache
def _int8_encoder(target: str, max_seq_length: int) -> Any:
    from embedding_assets.embed.int8 import Int8Encoder

    with _LOCK:
        return Int8Encoder(target, max_seq_length)


def _free_cuda_cache() -> None:
    import torch

    torch.cuda.empty_cache()


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


def hashing_embedder(model: str) -> HashingEmbedder:
    """The test embedder a model name stands for: ``NAME`` or ``NAME@DIMENSION``."""
    if model == DEFAULT_MODEL:
        return HashingEmbedder()
    name, _, dimension = model.partition("@")
    return HashingEmbedder(model_id=f"hashing-{model}", dimension=int(dimension) if dimension else 384)


def build_embedder(
    kind: str, model: str, device: str, batch_size: int, model_id: str = "", backend: str = "torch"
) -> Embedder:
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(model, device, batch_size, model_id, backend)
    if kind == "hashing":
        return hashing_embedder(model)
    raise ValueError(f"unknown embedder {kind!r}: use 'sentence-transformers' (or 'hashing' in tests)")


def describe_spec(
    target: str, kind: str, name: str | None = None, backend: str = "torch", **extra: Any
) -> ModelSpec:
    """A registry entry for a model, read from its files (no weights loaded when its configuration
    names its dimension). A local model's identity carries the fingerprint of its weights, so two
    folders of the same name never share cached vectors, and one folder's copy does; a backend
    other than torch is part of the identity (and of the default name) too."""
    if kind != "sentence-transformers":
        backend = "torch"  # the test embedder has one way to run
    embedder = build_embedder(kind, target, "cpu", 1, backend=backend)
    info = embedder.info
    own = kind == "sentence-transformers" and not is_bundled(info)
    fingerprint = content_fingerprint(info.path) if own else ""
    base_id = f"{info.model_id}@{fingerprint[:12]}" if own else embedder.model_id
    model_id = backend_model_id(base_id, backend) if own else base_id
    resolved = target if target == DEFAULT_MODEL or not Path(target).expanduser().exists() else info.path
    return ModelSpec(
        name=name or default_name(backend_model_id(info.model_id, backend) if own else embedder.model_id), target=resolved,
        embedder=kind, model_id=model_id, revision=info.revision, dimension=int(embedder.dimension),
        max_seq_length=info.max_seq_length, tokenizer_hash=info.tokenizer_hash,
        files_stamp=files_stamp(info.path) if own else "", fingerprint=fingerprint, backend=backend, **extra,
    )  # fmt: skip


def default_name(model_id: str) -> str:
    """A registry name from a model id: its last path part, with other characters as ``-``."""
    tail = model_id.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-._")[:64] or "model"


class ModelChanged(RegistryError):
    """A registered model's files are not the ones it was registered with."""


def verify_spec(spec: ModelSpec) -> None:
    """Refuse to build with a model whose files changed since it was registered: its vectors would
    be cached under an identity that no longer describes them."""
    if spec.embedder != "sentence-transformers":
        return
    info = describe_model(spec.target)
    if not spec.fingerprint:  # the bundled model: its package version is its identity
        if info.revision != spec.revision:
            raise ModelChanged(
                f"model {spec.name!r}: the bundled weights are {info.revision}, but it was registered "
                f"with {spec.revision}; register the new version as a new model (`embedding-assets model add "
                f"{spec.target} --name NAME`) and promote it"
            )
        return
    if files_stamp(info.path) != spec.files_stamp and content_fingerprint(info.path) != spec.fingerprint:
        raise ModelChanged(
            f"model {spec.name!r}: the files at {info.path} changed since it was registered; add them as a "
            f"new model (`embedding-assets model add {info.path} --name NAME`)"
        )


def embedder_for(spec: ModelSpec, device: str, batch_size: int) -> Embedder:
    """The embedder of a registry entry, under the entry's identity."""
    if spec.embedder == API_KIND:
        options = ApiOptions(spec.api_base, spec.target, spec.api_key_env)
        info = api_info(options, spec.tokenizer or DEFAULT_MODEL, spec.max_seq_length, spec.dimension)
        return shared_api_embedder(options, info, spec.model_id)
    return build_embedder(spec.embedder, spec.target, device, batch_size, spec.model_id, spec.backend)


def describe_api_spec(
    model: str, api_base: str, name: str | None = None, *, api_key_env: str = "", tokenizer: str = "",
    max_tokens: int = 0, price_per_1k_tokens: float = 0.0,
) -> ModelSpec:  # fmt: skip
    """A registry entry for a model behind an OpenAI-compatible API: its dimension is asked of the
    API with one request; its chunks are counted with ``tokenizer`` (default: the bundled model's),
    within ``max_tokens`` (default: that tokenizer's model's maximum)."""
    options = ApiOptions(api_base, model, api_key_env)
    local = describe_model(tokenizer or DEFAULT_MODEL)
    info = api_info(options, tokenizer or DEFAULT_MODEL, max_tokens or local.max_seq_length, 0)
    dimension = ApiEmbedder(options, replace(info, dimension=None), info.model_id).dimension
    return ModelSpec(
        name=name or default_name(model), target=model, embedder=API_KIND, model_id=info.model_id,
        revision=info.revision, dimension=dimension, max_seq_length=info.max_seq_length,
        tokenizer_hash=local.tokenizer_hash, api_base=api_base, api_key_env=api_key_env,
        tokenizer=tokenizer or DEFAULT_MODEL, price_per_1k_tokens=price_per_1k_tokens,
    )  # fmt: skip
