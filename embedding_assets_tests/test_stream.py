"""The NATS JetStream source, against the real server on 127.0.0.1:4222: micro-batches closed by
size and by time, each landing as a batch folder; exactly once across a consumer that stops before
it acknowledges, and across a message published twice; an oversized message quarantined with its
reason, a poison one dead-lettered after its deliveries; and the stream searchable after a sync."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import nats
import polars as pl
import pytest
from nats.js.api import StreamConfig

from embedding_assets.contracts.load import load_contract
from embedding_assets.contracts.model import Contract
from embedding_assets.defs.stream import STREAM_DEAD_LETTERS, consume
from embedding_assets.defs.sync import sync
from embedding_assets.ingest.landing import read_raw_batch, scan_landing, settled
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests.conftest import make_pipeline

URL = "nats://127.0.0.1:4222"
CONTRACT = """\
source: {source}
format: jsonl
version: 1
owner: support-data@lumen-home.example
id: ticket_id
title: subject
text: [subject, body]
updated_at: modified
fields:
  ticket_id: {{type: str, required: true}}
  subject: {{type: str, required: true}}
  body: {{type: str, required: true, max_length: 5000}}
  modified: {{type: datetime, required: true}}
stream: {{subject: "{subject}", stream: {stream}, max_messages: {size}, max_seconds: {seconds}, max_message_bytes: 4096, max_deliver: 3}}
"""


def _ticket(i: int, body: str = "") -> bytes:
    record = {"ticket_id": f"S-{i}", "subject": f"Kettle {i}", "body": body or f"The kettle stops after {i} minutes.",
              "modified": "2026-11-14T09:00:00Z"}  # fmt: skip
    return json.dumps(record).encode()


async def _publish(subject: str, payloads: list[tuple[bytes, dict[str, str]]]) -> None:
    client = await nats.connect(URL)
    js = client.jetstream()
    for data, headers in payloads:
        await js.publish(subject, data, headers=headers or None)
    await client.close()


async def _stream(name: str, subject: str, duplicate_window: float) -> None:
    client = await nats.connect(URL)
    js = client.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[subject], duplicate_window=duplicate_window))
    await client.close()


async def _drop(name: str) -> None:
    client = await nats.connect(URL)
    try:
        await client.jetstream().delete_stream(name)
    finally:
        await client.close()


@pytest.fixture
def stream(root: Path) -> Iterator[tuple[Contract, str]]:
    """A fresh JetStream stream (tiny duplicate window, so the consumer's own dedupe is what is
    tested) and a contract consuming it in micro-batches of 10 or 1 s."""
    tag = uuid.uuid4().hex[:8]
    name, subject = f"TICKETS_{tag}", f"tickets.{tag}"
    asyncio.run(_stream(name, subject, duplicate_window=0.1))
    path = root / "contracts" / "live.yaml"
    path.write_text(CONTRACT.format(source="live", subject=subject, stream=name, size=10, seconds=1.0))
    try:
        yield load_contract(path), subject
    finally:
        asyncio.run(_drop(name))


def _lines(root: Path) -> dict[str, list[bytes]]:
    folder = root / "landing" / "live"
    return (
        {b.name: (b / "messages.jsonl").read_bytes().splitlines() for b in sorted(folder.iterdir())}
        if folder.is_dir()
        else {}
    )


def test_micro_batches_close_by_size_and_by_time_and_land_complete(
    root: Path, stream: tuple[Contract, str]
) -> None:
    contract, subject = stream
    asyncio.run(_publish(subject, [(_ticket(i), {}) for i in range(25)]))
    pipeline = make_pipeline(root)
    started = time.monotonic()
    sizes = [consume(pipeline, contract).messages for _ in range(3)]
    assert sizes == [10, 10, 5]  # two closed by size at once, the last by time after 1 s
    assert 0.9 < time.monotonic() - started < 10
    assert consume(pipeline, contract).batch is None  # nothing left
    landed = _lines(root)
    assert sum(len(v) for v in landed.values()) == 25 and len(landed) == 3
    scan = scan_landing(root / "landing", {"live": contract})
    assert all(settled(b, None, 0.0, 1e9) for b in scan.batches)  # _SUCCESS: taken at once


def test_exactly_once_across_a_consumer_that_stops_before_it_acknowledges(
    root: Path, stream: tuple[Contract, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first consumer commits the micro-batch but stops before acknowledging (its acks become
    naks, so JetStream redelivers at once); the next finds them landed and writes nothing again.
    A message published twice under one id lands once."""
    contract, subject = stream
    asyncio.run(_publish(subject, [(_ticket(i), {"Nats-Msg-Id": f"t-{i}"}) for i in range(6)]))
    pipeline = make_pipeline(root)
    from nats.aio.msg import Msg

    real_ack = Msg.ack

    async def stop_before_ack(self: Any) -> None:
        await self.nak()

    monkeypatch.setattr(Msg, "ack", stop_before_ack)
    assert consume(pipeline, contract).messages == 6
    monkeypatch.setattr(Msg, "ack", real_ack)
    again = consume(pipeline, contract)
    assert again.batch is None and again.duplicates == 6
    time.sleep(0.3)  # past the stream's duplicate window: JetStream stores the second copy
    asyncio.run(
        _publish(subject, [(_ticket(3), {"Nats-Msg-Id": "t-3"}), (_ticket(6), {"Nats-Msg-Id": "t-6"})])
    )
    third = consume(pipeline, contract)
    assert third.messages == 1 and third.duplicates == 1
    ids = [json.loads(line)["ticket_id"] for lines in _lines(root).values() for line in lines]
    assert sorted(ids) == [f"S-{i}" for i in range(7)]  # each once


def test_an_oversized_message_is_quarantined_and_a_poison_one_dead_lettered(
    root: Path, stream: tuple[Contract, str]
) -> None:
    contract, subject = stream
    big = _ticket(1, body="x" * 8000)
    asyncio.run(_publish(subject, [(_ticket(0), {}), (big, {}), (b"\x1f\x8b not gzip at all", {"Content-Encoding": "gzip"}),
                                   (gzip.compress(_ticket(2)), {"Content-Encoding": "gzip"})]))  # fmt: skip
    pipeline = make_pipeline(root)
    first = consume(pipeline, contract)
    assert (first.messages, first.rejected, first.refused) == (3, 1, 1)  # the poison one waits for redelivery
    deliveries = [first]
    while not deliveries[-1].dead and len(deliveries) < 6:
        deliveries.append(consume(pipeline, contract))
    assert len(deliveries) == 3 and deliveries[-1].dead[0].deliveries == 3  # max_deliver: 3
    dead = pl.read_delta(str(root / "lake" / STREAM_DEAD_LETTERS))
    assert dead.height == 1 and "gzip" in dead["error"][0] and dead["deliveries"][0] == 3
    batch = next(iter(_lines(root)))
    result = bronze_to_silver(
        contract, read_raw_batch(contract, root / "landing" / "live" / batch).records, batch
    )
    assert sorted(result.silver["source_id"].to_list()) == ["S-0", "S-2"]  # the gzipped one inflated
    assert result.quarantine["reason"].to_list() == [
        f"oversized_message: {len(big)} bytes, over max_message_bytes 4096"
    ]


@pytest.mark.slow
def test_streamed_messages_become_searchable_through_a_sync(
    root: Path, stream: tuple[Contract, str], instance: dg.DagsterInstance
) -> None:
    contract, subject = stream
    asyncio.run(_publish(subject, [(_ticket(i), {}) for i in range(4)]))
    pipeline = make_pipeline(root)
    assert consume(pipeline, contract).messages == 4
    assert sync(instance, pipeline, echo=lambda _: None).ok
    from embedding_assets.index.searcher import run_search

    hits = run_search(pipeline.settings(), ["kettle stops"], 20, "fts", "live")[0]["hits"]
    assert {h["doc_id"] for h in hits} == {f"live:S-{i}" for i in range(4)}
