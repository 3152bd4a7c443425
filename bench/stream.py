"""14. Streaming: lag from a message published on NATS JetStream to its document being searchable.

A publisher sends help-desk tickets at a steady rate while the consumer takes micro-batches
(closed at 50 messages or 2 s) and syncs each one with the real model, as ``embedding-assets
consume --sync`` does; after every sync the index is read, and each message newly found there is
searchable from that moment. Lag = searchable - published, p50 / p95 / max over every message.
Skipped, saying so, when no NATS server answers on 127.0.0.1:4222."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg

from bench.common import percentile, ticket_rows
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.defs.stream import consume
from embedding_assets.defs.sync import sync

REPO = Path(__file__).resolve().parents[1]
URL = "nats://127.0.0.1:4222"


def _contract(subject: str, stream: str) -> str:
    helpdesk = (
        (REPO / "data" / "contracts" / "helpdesk.yaml")
        .read_text()
        .replace("source: helpdesk", "source: live")
    )
    return (
        helpdesk + f'stream: {{subject: "{subject}", stream: {stream}, max_messages: 50, max_seconds: 2}}\n'
    )


async def _admin(stream: str, subject: str, create: bool) -> None:
    import nats
    from nats.js.api import StreamConfig

    client = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=1)
    js = client.jetstream()
    if create:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    else:
        await js.delete_stream(stream)
    await client.close()


def _publisher(subject: str, rows: list[dict[str, Any]], rate: float, published: dict[str, float]) -> None:
    async def send() -> None:
        import nats

        client = await nats.connect(URL)
        js = client.jetstream()
        for row in rows:
            published[f"live:{row['ticket_id']}"] = time.time()
            await js.publish(subject, json.dumps(row).encode())
            await asyncio.sleep(1 / rate)
        await client.close()

    asyncio.run(send())


def _searchable(root: Path) -> set[str]:
    import lancedb

    db = lancedb.connect(str(root / "lancedb"))
    return {
        d for name in db.list_tables().tables for d in db.open_table(name).to_arrow()["doc_id"].to_pylist()
    }


def run(smoke: bool = False) -> dict[str, Any]:
    n, rate = (20, 10.0) if smoke else (300, 10.0)
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"BENCH_{tag}", f"bench.{tag}"
    try:
        asyncio.run(_admin(stream, subject, create=True))
    except Exception as exc:  # no server: say so
        return {"skipped": f"no NATS JetStream server at {URL}: {type(exc).__name__}"}
    try:
        return _measure(stream, subject, ticket_rows(n, "2026-12-01", start=700_000), rate, smoke)
    finally:
        asyncio.run(_admin(stream, subject, create=False))


def _measure(
    stream: str, subject: str, rows: list[dict[str, Any]], rate: float, smoke: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "contracts").mkdir()
        (root / "contracts" / "live.yaml").write_text(_contract(subject, stream))
        shutil.copytree(REPO / "data" / "canary", root / "canary")
        pipeline = PipelineResource(
            landing_dir=str(root / "landing"), contracts_dir=str(root / "contracts"), lake_uri=str(root / "lake"),
            lancedb_uri=str(root / "lancedb"), canary_dir=str(root / "canary"), landing_settle_s=0.0,
            embedder_kind="hashing" if smoke else "sentence-transformers",
        )  # fmt: skip
        contract = pipeline.contracts()["live"]
        published: dict[str, float] = {}
        sender = threading.Thread(target=_publisher, args=(subject, rows, rate, published))
        (root / "dagster").mkdir()
        searchable: dict[str, float] = {}
        cycles = []
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            sender.start()
            deadline = time.monotonic() + len(rows) / rate + 300
            while len(searchable) < len(rows) and time.monotonic() < deadline:
                started = time.perf_counter()
                if consume(pipeline, contract).batch:
                    sync(instance, pipeline, echo=lambda _: None)
                    now = time.time()
                    for doc in _searchable(root) - searchable.keys():
                        searchable[doc] = now
                    cycles.append(time.perf_counter() - started)
            sender.join()
    lags = [searchable[d] - published[d] for d in searchable if d in published]
    return {
        "messages": len(rows), "rate_per_s": rate, "searchable": len(lags), "micro_batches": len(cycles),
        "lag_p50_s": round(percentile(lags, 50), 2), "lag_p95_s": round(percentile(lags, 95), 2),
        "lag_max_s": round(max(lags), 2), "cycle_mean_s": round(sum(cycles) / max(len(cycles), 1), 2),
        "model": "hashing (smoke)" if smoke else "all-MiniLM-L6-v2 (cpu)",
    }  # fmt: skip
