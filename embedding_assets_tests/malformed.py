"""A batch with one row of each class of breakage real sources send, and what each must become.

Every line of ``LINES`` is a (rule expected in quarantine | None for a valid row, raw bytes) pair.
The texts are written for this test; none is copied from anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

CONTRACT = """\
# Field-service tickets: the malformed-rows fixture.
source: tickets
format: jsonl
version: 1
owner: quality@lumen-home.example
id: id
title: title
text: [title, body]
updated_at: updated
deleted: {field: status, values: [deleted]}
metadata: [priority, score, escalated]
fields:
  id: {type: str, required: true, max_length: 16}
  title: {type: str, required: true, max_length: 120}
  body: {type: str, required: true, max_length: 600}
  priority: {type: str, allowed: [low, normal, high]}
  score: {type: float}
  escalated: {type: bool}
  status: {type: str, allowed: [open, closed, deleted]}
  updated: {type: datetime, required: true}
quality:
  max_quarantine_rate: {rate}
"""

BODIES = [
    "The porch light flickers whenever the heater starts; the installer checked the fuse box twice.",
    "A customer reports the garage sensor drops off the network every night after the router reboots.",
    "The smart plug clicks on and off in a loop after the latest update and the app shows it offline.",
    "Water pooled under the dishwasher after the door seal was replaced during last week's visit.",
    "The doorbell camera records only black frames at dusk until the night mode is toggled by hand.",
    "Thermostat schedules reset to factory defaults after every power cut in the block of flats.",
    "The robot vacuum stalls at the kitchen threshold and reports a wheel fault that is not there.",
]


def _row(i: int, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": f"FS-{i:03d}",
        "title": f"Visit {i}: {BODIES[i % len(BODIES)].split(';')[0][:40]}",
        "body": BODIES[i % len(BODIES)],
        "priority": "normal",
        "score": 0.5,
        "escalated": False,
        "status": "open",
        "updated": f"2026-11-0{1 + i % 8}T09:00:00Z",
    }
    row.update(overrides)
    return row


def _json(**row: object) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


MOJIBAKE = "Café déjà vu – the kettle’s display shows a crème brûlée icon".encode().decode("cp1252")
ENTITY_SOUP = (
    "&lt;p&gt;&amp;nbsp;&lt;b&gt;Kettle&lt;/b&gt;&amp;nbsp;&lt;br/&gt;&amp;quot;stops&amp;quot;&lt;/p&gt;"
)

# (expected rule or None, raw bytes). Valid rows first, then one row per malformed class.
LINES: list[tuple[str | None, bytes]] = [
    (None, _json(**_row(1))),
    (None, _json(**_row(2))),
    (None, _json(**_row(3, priority="high", escalated=True))),
    (None, _json(**_row(4, body="Café crème spilled into the espresso machine's grinder; Müller fixed it."))),
    (None, _json(**_row(5))),
    # one exact duplicate of row 1, and a conflicting update of row 2 (newer, different body)
    ("duplicate", _json(**_row(1))),
    ("superseded", _json(**_row(2, updated="2026-10-01T09:00:00Z", body="An older note about the sensor."))),
    # malformed lines
    ("invalid_json", b'{"id": "FS-100", "title": "Truncated", "body": '),
    ("invalid_utf8", b'{"id": "FS-101", "title": "Bad bytes \xff\xfe", "body": "x"}'),
    ("nul_byte", b'{"id": "FS-102", "title": "NUL\x00inside", "body": "x"}'),
    ("not_an_object", b'["FS-103", "a list is not a record"]'),
    # wrong types
    ("bad_type", _json(**_row(104, score="very high"))),
    ("bad_type", _json(**_row(105, escalated="perhaps"))),
    # ids
    ("missing_id", _json(**{k: v for k, v in _row(106).items() if k != "id"})),
    ("missing_id", _json(**_row(107, id=None))),
    # text
    ("empty_text", _json(**_row(108, title="", body=""))),
    ("empty_text", _json(**_row(109, title="  \t ", body=" \n\n  "))),
    # timestamps, lengths, allowed values, required fields
    ("bad_timestamp", _json(**_row(110, updated="sometime last Tuesday"))),
    ("too_long", _json(**_row(111, body="The heat pump hums. " * 40))),
    ("not_allowed", _json(**_row(112, priority="apocalyptic"))),
    ("missing_required", _json(**{k: v for k, v in _row(113).items() if k != "updated"})),
    # encoding garbage
    (
        "replacement_chars",
        _json(**_row(114, body="The \ufffd\ufffd boiler \ufffd\ufffd pressure \ufffd\ufffd drops.")),
    ),
    ("mojibake", _json(**_row(115, body=MOJIBAKE))),
    ("html_entities", _json(**_row(116, body=ENTITY_SOUP))),
    ("control_chars", _json(**_row(117, body="The fan\x07 rattles\x1b[0m when\x08 the timer ends."))),
]
VALID_IDS = {f"tickets:FS-{i:03d}" for i in (1, 2, 3, 4, 5)}
GARBAGE_MARKERS = ["\ufffd", "Ã", "&lt;", "\x07", "\x1b", "\x08"]


def malformed_classes() -> set[str]:
    return {rule for rule, _ in LINES if rule not in (None, "duplicate", "superseded")}


def write_fixture(data: Path, batch: str = "2026-11-15", max_quarantine_rate: float = 0.9) -> Path:
    """Write the contract and the landing batch under ``data``; returns the landing file."""
    (data / "contracts").mkdir(parents=True, exist_ok=True)
    (data / "contracts" / "tickets.yaml").write_text(CONTRACT.replace("{rate}", str(max_quarantine_rate)))
    folder = data / "landing" / "tickets" / batch
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tickets.jsonl"
    path.write_bytes(b"\n".join(raw for _, raw in LINES) + b"\n")
    return path
