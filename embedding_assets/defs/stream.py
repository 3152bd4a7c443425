"""stream_sensor: each streamed source's next micro-batch from NATS JetStream into the landing
zone, where landing_sensor (and ``sync``) take it like any batch folder; and the dead-letter table
of the messages given up on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from embedding_assets.contracts.model import Contract
from embedding_assets.core.lake import Lake
from embedding_assets.defs.resources import PipelineResource
from embedding_assets.ingest.stream import DeadMessage, Landed, consume_once

STREAM_DEAD_LETTERS = "deadletter/stream"
STREAM_DEAD_SCHEMA = pl.Schema(
    {
        "source": pl.String(),
        "stream": pl.String(),
        "sequence": pl.Int64(),
        "message_id": pl.String(),
        "error": pl.String(),
        "deliveries": pl.Int32(),
        "failed_at": pl.Datetime("us", "UTC"),
    }
)


def record_dead(lake: Lake, contract: Contract, dead: list[DeadMessage]) -> None:
    """The messages given up on, once each (by source and message id)."""
    stream = contract.stream.stream if contract.stream else ""
    now = datetime.now(UTC)
    rows = [(contract.source, stream, d.sequence, d.message_id, d.error, d.deliveries, now) for d in dead]
    frame = pl.DataFrame(rows, schema=STREAM_DEAD_SCHEMA, orient="row")
    lake.insert_new(STREAM_DEAD_LETTERS, frame, ["source", "message_id"], partition_by=("source",))


def consume(pipeline: PipelineResource, contract: Contract) -> Landed:
    """One micro-batch of the source's stream into the landing zone."""
    lake = pipeline.lake()
    landing = pipeline.settings().landing_dir
    return asyncio.run(consume_once(contract, landing, lambda dead: record_dead(lake, contract, dead)))


def describe(source: str, landed: Landed) -> str:
    if landed.batch is None and not (landed.duplicates or landed.refused or landed.dead):
        return f"{source}: no messages"
    parts = [f"{landed.messages} messages" + (f" into {landed.batch}" if landed.batch else "")]
    for n, what in ((landed.rejected, "quarantined"), (landed.duplicates, "already landed"),
                    (landed.refused, "refused for now"), (len(landed.dead), "dead-lettered")):  # fmt: skip
        if n:
            parts.append(f"{n} {what}")
    return f"{source}: {', '.join(parts)}"


def build_stream_sensor(contracts: dict[str, Contract], interval_s: int) -> dg.SensorDefinition | None:
    """None when no contract reads a stream."""
    streamed = {s: c for s, c in contracts.items() if c.stream is not None}
    if not streamed:
        return None

    @dg.sensor(
        name="stream_sensor",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Consumes each streamed source's next micro-batch (NATS JetStream) into the landing "
        "zone; landing_sensor registers and builds it.",
    )
    def stream_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SkipReason:
        """Consumes each streamed source's next micro-batch into the landing zone."""
        lines = []
        for source, contract in streamed.items():
            try:
                lines.append(describe(source, consume(pipeline, contract)))
            except (OSError, TimeoutError, ConnectionError) as exc:
                lines.append(f"{source}: the stream at {contract.stream.url} cannot be reached: {exc}")  # type: ignore[union-attr]
        context.log.info("; ".join(lines))
        return dg.SkipReason("; ".join(lines))

    return stream_sensor
