"""A NATS JetStream source: messages consumed in micro-batches into the landing zone, where each
micro-batch is a batch folder (and so a partition) like any delivery of files.

Exactly once into bronze, across consumer restarts:

- A micro-batch is written to a folder outside the landing zone and renamed into it in one step
  (the commit), with a ``_SUCCESS`` marker, so the landing sensor takes it at once and never half.
- Messages are acknowledged only after that commit. A consumer that stops between the commit and
  the acknowledgement gets the same messages again; their ids are listed in the landed folders'
  ``messages.ids``, so they are acknowledged without being written again. A message's id is its
  ``Nats-Msg-Id`` header, else its stream and sequence number.
- A message published twice under one ``Nats-Msg-Id`` is kept once: JetStream drops the second
  within its duplicate window, and the consumer drops ids the recent micro-batches landed.

Bad messages never stop the stream: one over ``max_message_bytes`` lands as a line silver
quarantines with that reason; one that cannot be read (a gzip body that does not inflate) is
refused (nak) and redelivered, and after ``max_deliver`` deliveries goes to the dead-letter table.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedding_assets.contracts.model import Contract, StreamSpec

REJECTED = "_landing_rejected"  # a landed line that stands for a message that could not land as it was
COMPLETE = "_SUCCESS"  # a batch folder's marker: its writer finished it
IDS_FILE = "messages.ids"
_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{6}Z-(?P<source>.+)-(?P<first>\d{12})-(?P<last>\d{12})$")
RECENT_BATCHES = 20  # micro-batches whose message ids are checked against


@dataclass(frozen=True)
class DeadMessage:
    sequence: int
    message_id: str
    error: str
    deliveries: int


@dataclass
class Landed:
    """What one micro-batch did: the batch folder it landed as (None when nothing did)."""

    batch: str | None = None
    messages: int = 0  # lines written (rejected ones included)
    rejected: int = 0  # oversized or unreadable as one line: quarantined by silver with the reason
    duplicates: int = 0  # already landed (redelivered, or published twice): acknowledged only
    refused: int = 0  # could not be read this time: redelivered later
    dead: list[DeadMessage] = field(default_factory=list)
    first_published: datetime | None = None


def landed_ids(source_dir: Path, source: str) -> set[str]:
    """The message ids the source's recent micro-batches landed (a redelivery is never older:
    JetStream redelivers only what was not acknowledged, within its ack wait)."""
    found = sorted(
        (int(m.group("last")), folder)
        for folder in (source_dir.iterdir() if source_dir.is_dir() else ())
        if (m := _FOLDER.match(folder.name)) and m.group("source") == source
    )
    ids: set[str] = set()
    for _, folder in found[-RECENT_BATCHES:]:
        listed = folder / IDS_FILE
        if listed.is_file():
            ids.update(line.split(" ", 1)[1] for line in listed.read_text().splitlines() if " " in line)
    return ids


def landed_line(payload: bytes, headers: dict[str, str], spec: StreamSpec, label: str) -> bytes:
    """The JSON line a message lands as: its payload (inflated when gzip-encoded), or a line that
    silver quarantines with the reason. Raises ``ValueError`` when it cannot be read at all."""
    if headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError) as exc:
            raise ValueError(f"the gzip body does not inflate: {exc}") from None
    if len(payload) > spec.max_message_bytes:
        return _rejected(
            f"oversized_message: {len(payload)} bytes, over max_message_bytes {spec.max_message_bytes}", label
        )
    line = payload.rstrip(b"\r\n")
    if b"\n" in line:  # a pretty-printed record: one line of the same JSON, else a reason
        try:
            return json.dumps(json.loads(line), ensure_ascii=False).encode()
        except (ValueError, UnicodeDecodeError):
            return _rejected(
                "multi_line_message: a message of several lines that is not one JSON value", label
            )
    return line


def _rejected(reason: str, label: str) -> bytes:
    return json.dumps({REJECTED: reason, "_message": label}).encode()


def commit_batch(landing_dir: Path, source: str, lines: list[tuple[int, str, bytes]], now: datetime) -> str:
    """Write the micro-batch ((sequence, message id, line) each) outside the landing zone, then
    rename it into place with its ``_SUCCESS`` marker: the commit. Returns the batch name."""
    first, last = lines[0][0], lines[-1][0]
    batch = f"{now.strftime('%Y-%m-%dT%H%M%SZ')}-{source}-{first:012d}-{last:012d}"
    staging = landing_dir.parent / ".stream-staging" / f"{source}-{batch}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "messages.jsonl").write_bytes(b"".join(line + b"\n" for _, _, line in lines))
    (staging / IDS_FILE).write_text("".join(f"{seq} {mid}\n" for seq, mid, _ in lines))
    (staging / COMPLETE).write_bytes(b"")
    target = landing_dir / source / batch
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    return batch


async def consume_once(
    contract: Contract,
    landing_dir: Path,
    dead_letter: Callable[[list[DeadMessage]], None],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Landed:
    """One micro-batch of ``contract``'s stream into the landing zone (see the module docstring);
    ``dead_letter`` records the messages given up on, before they are acknowledged."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    spec = contract.stream
    assert spec is not None, f"{contract.source} has no stream"
    client = await nats.connect(spec.url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        subscription = await client.jetstream().pull_subscribe(
            spec.subject, durable=spec.durable, stream=spec.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_deliver=-1, ack_wait=max(30.0, 4 * spec.max_seconds)),
        )  # fmt: skip
        messages = await _micro_batch(subscription, spec)
        return await _land(contract, landing_dir, messages, now(), dead_letter)
    finally:
        await client.close()


async def _micro_batch(subscription: Any, spec: StreamSpec) -> list[Any]:
    """Messages until ``max_messages`` or ``max_seconds``, whichever comes first."""
    deadline = time.monotonic() + spec.max_seconds
    messages: list[Any] = []
    while len(messages) < spec.max_messages and (left := deadline - time.monotonic()) > 0:
        try:
            messages += await subscription.fetch(spec.max_messages - len(messages), timeout=left)
        except TimeoutError:
            break
    return messages


async def _land(
    contract: Contract, landing_dir: Path, messages: list[Any], now: datetime,
    dead_letter: Callable[[list[DeadMessage]], None],
) -> Landed:  # fmt: skip
    spec, source = contract.stream, contract.source
    assert spec is not None
    landed, lines, done = Landed(), [], []
    recent = landed_ids(landing_dir / source, source)
    for message in sorted(messages, key=lambda m: m.metadata.sequence.stream):
        seq, headers = message.metadata.sequence.stream, dict(message.headers or {})
        message_id = headers.get("Nats-Msg-Id") or f"{spec.stream}:{seq}"
        if message_id in recent:
            landed.duplicates += 1
            done.append(message)
            continue
        try:
            line = landed_line(message.data, headers, spec, f"{spec.stream}:{seq}")
        except ValueError as exc:
            if message.metadata.num_delivered >= spec.max_deliver:
                landed.dead.append(DeadMessage(seq, message_id, str(exc), message.metadata.num_delivered))
                done.append(message)
            else:
                landed.refused += 1
                await message.nak(delay=1)
            continue
        recent.add(message_id)
        lines.append((seq, message_id, line))
        landed.rejected += line.startswith(b'{"' + REJECTED.encode())
        stamp = message.metadata.timestamp
        landed.first_published = min(filter(None, (landed.first_published, stamp)), default=stamp)
        done.append(message)
    if lines:
        landed.batch, landed.messages = commit_batch(landing_dir, source, lines, now), len(lines)
    if landed.dead:
        dead_letter(landed.dead)
    for message in done:  # after the commit: a stop before it redelivers them, and they are found landed
        await message.ack()
    return landed
