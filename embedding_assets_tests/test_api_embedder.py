"""The API embedder against a real local HTTP server serving the bundled model: Retry-After
honoured, 5xx and timeouts retried with backoff, the circuit breaker, rejected chunks isolated
and dead-lettered, and an API model registered, built, forecast and priced through the pipeline."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from embedding_assets.config import DEFAULT_MODEL
from embedding_assets.core.retry import Backoff
from embedding_assets.defs.embed import DEAD_LETTER_TABLE
from embedding_assets.defs.forecast import forecast
from embedding_assets.defs.lifecycle import add_model
from embedding_assets.defs.sync import sync
from embedding_assets.embed.api import ApiEmbedder, ApiOptions, CircuitBreaker, api_info, retry_after
from embedding_assets.embed.embedder import SentenceTransformerEmbedder
from embedding_assets.embed.encode import encode_resilient
from embedding_assets.embed.failures import EmbedderUnavailable, RequestRejected
from embedding_assets_tests.api_server import POISON, Script, embeddings_server
from embedding_assets_tests.conftest import make_pipeline

pytestmark = [pytest.mark.model, pytest.mark.xdist_group("real-model")]
TEXTS = ["The kettle stops before the water boils.", "The doorbell chime does not ring indoors."]


@pytest.fixture(scope="module")
def local() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(DEFAULT_MODEL, device="cpu")


def _embedder(base: str, *, sleeps: list[float] | None = None, **options: object) -> ApiEmbedder:
    opts = ApiOptions(base, "all-MiniLM-L6-v2", **options)  # type: ignore[arg-type]
    info = api_info(opts, DEFAULT_MODEL, 256, 384)
    record = sleeps if sleeps is not None else []
    return ApiEmbedder(opts, info, info.model_id, sleep=lambda s: (record.append(s), time.sleep(s))[0])


def test_retry_after_is_honoured_and_the_vectors_are_the_models(local: SentenceTransformerEmbedder) -> None:
    script = Script(faults=["429:1"])
    with embeddings_server(script) as base:
        sleeps: list[float] = []
        vectors = _embedder(base, sleeps=sleeps).encode(TEXTS)
    assert sleeps == [1.0] and script.requests[1][0] - script.requests[0][0] >= 1.0
    assert np.allclose(vectors, local.encode(TEXTS), atol=1e-5)


def test_5xx_and_timeouts_are_retried_with_exponential_backoff_and_jitter() -> None:
    script = Script(faults=["503", "slow:6", "502", "500"])
    with embeddings_server(script) as base:
        sleeps: list[float] = []
        # 3 s: the model's answer on a busy 2-core machine stays well inside, the slow one does not
        api = _embedder(base, sleeps=sleeps, timeout_s=3.0, retry=Backoff(attempts=6, base_s=0.1, max_s=2.0))
        assert api.encode(TEXTS).shape == (2, 384)
    assert len(script.requests) == 5 and api.usage.retries == 4
    assert all(0 <= s <= min(2.0, 0.1 * 2**k) for k, s in enumerate(sleeps))  # full jitter under the cap
    assert api.breaker.state == "closed" and api.usage.tokens > 0


def test_the_circuit_opens_after_repeated_failures_and_a_trial_closes_it() -> None:
    script = Script(then="503")
    clock = [0.0]
    with embeddings_server(script) as base:
        api = _embedder(base, retry=Backoff(attempts=2, base_s=0.01, max_s=0.01), breaker_threshold=3)
        api.breaker = CircuitBreaker(3, 30.0, clock=lambda: clock[0])
        for _ in range(2):
            with pytest.raises(EmbedderUnavailable):
                api.encode(TEXTS)
        sent = len(script.requests)
        assert sent == 3 and api.breaker.state == "open"  # the third failure opened it
        with pytest.raises(EmbedderUnavailable, match="circuit .* is open"):
            api.encode(TEXTS)
        assert len(script.requests) == sent  # open: nothing is sent
        clock[0] += 31.0
        script.then = "ok"
        assert api.encode(TEXTS).shape == (2, 384)  # the half-open trial succeeds
        assert api.breaker.state == "closed" and len(script.requests) == sent + 1


def test_a_rejected_chunk_is_isolated_and_the_others_embedded() -> None:
    with embeddings_server(Script()) as base:
        api = _embedder(base, batch_size=4)
        with pytest.raises(RequestRejected, match="HTTP 400"):
            api.encode([f"{POISON} text"])
        texts = [f"chunk {i} about kettles" for i in range(10)]
        texts[6] = f"chunk 6 {POISON}"
        outcome = encode_resilient(api, texts, window=8, backoff=Backoff(attempts=3, base_s=0.01))
    assert list(outcome.failures) == [6] and "HTTP 400" in outcome.failures[6].error
    assert outcome.failures[6].attempts == 1  # a rejection is not retried
    assert np.isfinite(np.delete(outcome.vectors, 6, axis=0)).all()


def test_an_outage_dead_letters_whole_windows_at_once() -> None:
    script = Script(then="503")
    with embeddings_server(script) as base:
        api = _embedder(base, retry=Backoff(attempts=3, base_s=0.01, max_s=0.01), breaker_threshold=3)
        outcome = encode_resilient(api, [f"text {i}" for i in range(40)], window=8)
    assert sorted(outcome.failures) == list(range(40))
    assert all("EmbedderUnavailable" in f.error for f in outcome.failures.values())
    assert len(script.requests) == 3  # no window split into single-text retries


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert retry_after("7") == 7.0 and retry_after("0.5") == 0.5 and retry_after(None) is None
    assert retry_after("Sun, 06 Dec 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("86400") == 120.0 and retry_after("soon") is None


@pytest.fixture
def api_server() -> Iterator[tuple[str, Script]]:
    script = Script()
    with embeddings_server(script) as base:
        yield base, script


@pytest.mark.slow
def test_an_api_model_is_forecast_priced_built_and_dead_letters_its_rejected_chunk(
    root: Path, instance: dg.DagsterInstance, api_server: tuple[str, Script]
) -> None:
    base, script = api_server
    for source in ("catalog", "guides", "kb", "manuals", "storefront"):  # the help desk alone: fewer chunks
        (root / "contracts" / f"{source}.yaml").unlink()
        shutil.rmtree(root / "landing" / source)
    shutil.rmtree(root / "contracts" / "entities")
    pipeline = make_pipeline(root, max_embed_failure_rate=0.05)  # 1 chunk in 24 is refused
    assert sync(instance, pipeline, echo=lambda _: None).ok  # the serving model, as usual
    poison = root / "landing" / "helpdesk" / "2026-11-15"
    poison.mkdir()
    rows = [{"ticket_id": f"T-77{i:02d}", "subject": f"Kettle {i}", "body": f"The kettle stops after {i} minutes.",
             "modified": "2026-11-14T09:00:00Z"} for i in range(24)]  # fmt: skip
    rows[5]["body"] = f"{POISON}: this ticket makes the API refuse the request."
    (poison / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    api = {"api_base": base, "price_per_1k_tokens": 0.02}
    added = add_model(
        instance, pipeline, "all-MiniLM-L6-v2", "minilm-api", build=False, echo=lambda _: None, api=api
    )
    assert added.spec.embedder == "openai" and added.spec.dimension == 384

    planned = forecast(instance, pipeline)
    api_runs = [b for b in planned.batches if b.batch.endswith("|minilm-api") and b.chunks_to_embed]
    assert api_runs and all(
        b.tokens_to_embed > 0 and b.cost == pytest.approx(b.tokens_to_embed / 1000 * 0.02) for b in api_runs
    )
    assert "tokens, cost" in planned.render() and "API cost:" in planned.render()

    requests_before = len(script.requests)
    assert sync(instance, pipeline, echo=lambda _: None).ok
    assert len(script.requests) > requests_before  # built through HTTP
    dead = pl.read_delta(str(root / "lake" / DEAD_LETTER_TABLE)).filter(
        pl.col("model_id") == added.spec.model_id
    )
    assert dead["chunk_id"].to_list() == ["helpdesk:T-7705#0"] and "HTTP 400" in dead["error"][0]
    vectors = pl.read_delta(str(root / "lake" / "embeddings")).filter(
        (pl.col("model_id") == added.spec.model_id) & (pl.col("batch") == "2026-11-15")
    )
    assert vectors.height == 23
