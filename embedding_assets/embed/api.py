"""An embedder behind an OpenAI-compatible HTTP API: ``POST {api_base}/embeddings`` with
``{"model": ..., "input": [...]}``, answered by ``{"data": [{"index": i, "embedding": [...]}],
"usage": {"total_tokens": n}}`` (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM, text-embeddings-
inference and others speak it).

Hosted APIs limit rates and fail now and then, so every request is resilient:

- 429 and 5xx answers, timeouts and refused connections are retried with exponential backoff and
  full jitter; a ``Retry-After`` header (seconds or an HTTP date) is honoured instead;
- another 4xx is the input's fault (too long, malformed): :class:`RequestRejected`, not retried,
  so the caller isolates the chunk and dead-letters it;
- a circuit breaker opens after consecutive failures: while it is open every call fails at once
  with :class:`EmbedderUnavailable` (no request is sent), after its cool-down one trial request
  decides whether it closes. The caller dead-letters a window that meets an open circuit whole,
  and ``sync --retry-dead-letters`` embeds those chunks once the API is back.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import numpy as np

from embedding_assets.core.retry import Backoff
from embedding_assets.embed.failures import EmbedderUnavailable, RequestRejected
from embedding_assets.embed.models import ModelInfo, describe_model, load_tokenizer

API_KIND = "openai"
RETRY_AFTER_MAX_S = 120.0  # a Retry-After beyond this is treated as an outage, not a wait


@dataclass
class CircuitBreaker:
    """Closed: calls pass. After ``threshold`` consecutive failures it opens for ``cool_down_s``;
    then one trial call is let through (half-open): a success closes it, a failure opens it again."""

    threshold: int = 5
    cool_down_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self) -> bool:
        with self._lock:
            if self.opened_at is None:
                return True
            if self.trial or self.clock() - self.opened_at < self.cool_down_s:
                return False
            self.trial = True  # half-open: this call decides
            return True

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.trial = 0, None, False

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.trial or self.failures >= self.threshold:
                self.opened_at, self.trial = self.clock(), False

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "half-open" if self.trial else "open"


@dataclass(frozen=True)
class ApiOptions:
    base_url: str  # e.g. https://api.openai.com/v1
    model: str  # the API's model name
    api_key_env: str = ""  # the environment variable holding the key (never the key itself)
    timeout_s: float = 30.0
    batch_size: int = 64  # texts per request
    retry: Backoff = Backoff(attempts=6, base_s=0.5, max_s=30.0)
    breaker_threshold: int = 5
    breaker_cool_down_s: float = 30.0


@dataclass
class Usage:
    requests: int = 0
    tokens: int = 0  # as the API reports them (usage.total_tokens)
    retries: int = 0


class ApiEmbedder:
    """The Embedder protocol over an OpenAI-compatible API. Chunking uses a local tokenizer
    (``tokenizer``: a model folder or the bundled model's), so the chunk budget is counted before
    any request; vectors are normalised here, whatever the API returns."""

    def __init__(
        self,
        options: ApiOptions,
        info: ModelInfo,
        model_id: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.options, self.info, self.model_id, self.revision = options, info, model_id, info.revision
        self.device = "api"
        self.breaker = CircuitBreaker(options.breaker_threshold, options.breaker_cool_down_s)
        self.usage = Usage()
        self._sleep, self._rng = sleep, rng or random.Random()

    @property
    def dimension(self) -> int:
        if self.info.dimension is None:  # not known before the first answer: ask once
            self.info = replace(self.info, dimension=int(self._request(["dimension probe"]).shape[1]))
        return int(self.info.dimension)  # type: ignore[arg-type]

    @property
    def max_seq_length(self) -> int:
        return self.info.max_seq_length

    def tokenizer(self) -> Any:
        return load_tokenizer(self.info.path)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        size = self.options.batch_size
        parts = [self._request(texts[i : i + size]) for i in range(0, len(texts), size)]
        vectors = np.concatenate(parts).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.full_like(vectors, np.nan), where=norms > 0)

    def _request(self, texts: list[str]) -> np.ndarray:
        """One request's vectors, retried as the module says."""
        last = ""
        for attempt in range(self.options.retry.attempts):
            if not self.breaker.allow():
                raise EmbedderUnavailable(
                    f"the circuit to {self.options.base_url} is open after repeated failures ({last or 'earlier calls'})"
                )
            try:
                vectors = self._post(texts)
            except _Transient as exc:
                self.breaker.failed()
                last = str(exc)
                if attempt + 1 == self.options.retry.attempts:
                    break
                self.usage.retries += 1
                self._sleep(exc.retry_after if exc.retry_after is not None else self._backoff(attempt))
                continue
            self.breaker.succeeded()
            return vectors
        raise EmbedderUnavailable(f"{self.options.retry.attempts} attempts failed, the last: {last}")

    def _backoff(self, attempt: int) -> float:
        policy = self.options.retry
        return self._rng.uniform(0.0, min(policy.max_s, policy.base_s * 2**attempt))

    def _post(self, texts: list[str]) -> np.ndarray:
        body = json.dumps({"model": self.options.model, "input": texts}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.options.api_key_env, "") if self.options.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.options.base_url.rstrip("/") + "/embeddings"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        self.usage.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:  # noqa: S310
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _answer_error(exc) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            raise _Transient(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        return self._vectors(payload, len(texts))

    def _vectors(self, payload: dict[str, Any], n: int) -> np.ndarray:
        data = sorted(payload.get("data") or [], key=lambda d: d.get("index", 0))
        if len(data) != n:
            raise _Transient(f"the API answered {len(data)} embeddings for {n} inputs")
        self.usage.tokens += int((payload.get("usage") or {}).get("total_tokens") or 0)
        return np.asarray([d["embedding"] for d in data], dtype=np.float32)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _answer_error(exc: urllib.error.HTTPError) -> Exception:
    """A 429 or 5xx is transient (with its Retry-After, when it gives one); another 4xx rejects."""
    detail = exc.read()[:300].decode("utf-8", errors="replace").strip()
    message = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
    if exc.code == 429 or exc.code >= 500:
        return _Transient(message, retry_after(exc.headers.get("Retry-After")))
    return RequestRejected(message)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), at most
    ``RETRY_AFTER_MAX_S``; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def api_info(options: ApiOptions, tokenizer: str, max_tokens: int, dimension: int) -> ModelInfo:
    """The model's description: the local tokenizer's files and hash, the API's dimension."""
    local = describe_model(tokenizer)
    return replace(
        local, model_id=f"{options.base_url.rstrip('/')}#{options.model}", revision=options.model,
        max_seq_length=max_tokens, dimension=dimension,
    )  # fmt: skip


@cache
def shared_api_embedder(options: ApiOptions, info: ModelInfo, model_id: str) -> ApiEmbedder:
    """One embedder per API model and process, so its circuit breaker sees every call."""
    return ApiEmbedder(options, info, model_id)
