"""The int8 CPU backend: the model's transformer exported to ONNX once, its weights quantised to
int8 per channel (onnxruntime dynamic quantisation: activations are quantised per batch at run
time), and run by onnxruntime with the model's own pooling and normalisation.

About twice raw fp32 ``encode`` on a laptop-class CPU, at a cosine of ~0.994 to the fp32 vectors
(``make bench``, section 10). Vectors of this backend are cached and indexed under their own
model id, so they never mix with fp32 ones.

The export is cached on disk by the content fingerprint of the model's files and the exporting
library versions (``EA_ONNX_CACHE``, default ``~/.cache/embedding-assets/onnx``); only the first
process to need it imports torch for the export, every later one runs onnxruntime alone.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets.embed.models import content_fingerprint

INSTALL_HINT = "the int8 backend needs onnx and onnxruntime: pip install 'embedding_assets[int8]'"
_POOLINGS = ("cls", "mean", "max")


class Int8Unsupported(RuntimeError):
    """The model cannot run on the int8 backend; the message says why and what to use instead."""


def read_pooling(folder: Path) -> str:
    """How the model pools token states (cls, mean or max), from its ``modules.json``: a
    transformer, a pooling layer and optionally a normaliser. Anything else (a dense projection,
    say) is refused by name."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean"  # a bare transformers model: sentence-transformers mean-pools it
    modules = json.loads(modules_file.read_text())
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or set(kinds) - {"Transformer", "Pooling", "Normalize"}:
        raise Int8Unsupported(
            f"the int8 backend runs Transformer -> Pooling -> Normalize models; {folder} has "
            f"{' -> '.join(kinds)}: use EA_EMBED_BACKEND=torch for it"
        )
    config_file = next(
        (folder / m["path"] / "config.json" for m in modules if m["type"].endswith("Pooling")), None
    )
    if config_file is None or not config_file.is_file():
        return "mean"
    config = json.loads(config_file.read_text())
    chosen = [
        p
        for p in _POOLINGS
        if config.get(f"pooling_mode_{p}_token") or config.get(f"pooling_mode_{p}_tokens")
    ]
    others = (
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    )
    if len(chosen) != 1 or any(config.get(k) for k in others):
        raise Int8Unsupported(
            f"the int8 backend pools by one of cls, mean or max; {config_file} asks for another"
        )
    return chosen[0]


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Token states (batch, tokens, dim) to one vector per text, over the unmasked tokens."""
    if how == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(hidden.dtype)
    if how == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1)
    return (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def cache_root() -> Path:
    return Path(os.environ.get("EA_ONNX_CACHE") or Path.home() / ".cache" / "embedding-assets" / "onnx")


def _versions() -> str:
    from importlib.metadata import version

    return f"onnxruntime={version('onnxruntime')},onnx={version('onnx')}"


def quantised_model(folder: str) -> Path:
    """The model's int8 ONNX file, exported and quantised on first use (atomically: a process
    that races another one writes its own copy and renames it over)."""
    try:
        key = f"{content_fingerprint(folder)[:16]}-{_versions()}"
    except ImportError:  # importlib.metadata.PackageNotFoundError is an ImportError
        raise Int8Unsupported(INSTALL_HINT) from None
    target = cache_root() / key.replace("=", "").replace(",", "-") / "model-int8.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        _export(folder, fp32)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
        quantize_dynamic(
            str(fp32), str(Path(tmp) / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True
        )
        os.replace(Path(tmp) / "int8.onnx", target)
    return target


def _export(folder: str, path: Path) -> None:
    """The model's transformer to ONNX with dynamic batch and sequence axes (torch's exporter)."""
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax, which the quantiser and every runtime know.
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if model.config.type_vocab_size > 1 else [])

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it takes as constants
        torch.onnx.export(
            Hidden(), sample, str(path), input_names=names, output_names=["hidden"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip


@cache
def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class Int8Encoder:
    """Encodes like ``SentenceTransformer.encode(normalize_embeddings=True)``, on onnxruntime,
    truncating at the model's maximum length.

    Each text runs alone. Dynamic quantisation scales a layer's activations by their range over
    the whole input, so a text batched with others (and their padding) would get a slightly
    different vector each time; alone, its vector depends on its text only, as the embedding
    cache assumes, and with no padding to compute it is no slower on the CPU."""

    def __init__(self, folder: str, max_seq_length: int) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise Int8Unsupported(INSTALL_HINT) from None
        from tokenizers import Tokenizer

        root = Path(folder)
        if not (root / "tokenizer.json").is_file():
            raise Int8Unsupported(f"the int8 backend needs a fast tokenizer (tokenizer.json) in {folder}")
        self.pooling = read_pooling(root)
        self._tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        self._tok.enable_truncation(max_seq_length)
        self._tok.no_padding()
        self._session = _session(str(quantised_model(folder)), os.cpu_count() or 1)
        self._inputs = [i.name for i in self._session.get_inputs()]

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [self._one(e) for e in self._tok.encode_batch(texts)]
        return np.vstack(rows).astype(np.float32)

    def _one(self, encoding: Any) -> np.ndarray:
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.asarray([encoding.type_ids], dtype=np.int64)
        hidden = self._session.run(None, feeds)[0]
        vector = pool(hidden, feeds["attention_mask"], self.pooling)[0]
        # Normalised whether or not the model has a Normalize module, as the torch backend asks for.
        return vector / max(float(np.linalg.norm(vector)), 1e-12)
