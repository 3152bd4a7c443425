"""Personal data is masked before gold: planted e-mails, phone numbers, card numbers and IBANs never
reach gold, silver, quarantine or the index; bronze keeps the exact bytes; the counts per batch
are on the silver materialisation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import lancedb
import polars as pl
import pytest

from embedding_assets.contracts.load import load_contract
from embedding_assets.contracts.model import PiiRules
from embedding_assets.defs.sync import sync
from embedding_assets.ingest.landing import RAW_SCHEMA
from embedding_assets.refine.pii import iban_valid, luhn_valid, mask_series, mask_text
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets_tests.conftest import make_pipeline

EMAIL, PHONE, CARD, IBAN = (
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
)
PLANTED = (EMAIL, PHONE, CARD, IBAN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe@example.com today.", "Mail [EMAIL] today."),
        ("Call +44 20 7946 0958 or 0044 20 7946 0958.", "Call [PHONE] or [PHONE]."),
        ("Ring (030) 1234 5678, 555-867-5309 or 030 12345678.", "Ring [PHONE], [PHONE] or [PHONE]."),
        ("Card 4111 1111 1111 1111 and 5500-0000-0000-0004.", "Card [CARD] and [CARD]."),
        ("Card 4111 1111 1111 1111 123 then", "Card [CARD] 123 then"),  # a group after it stays
        ("IBAN GB82 WEST 1234 5698 7654 32, DE89370400440532013000.", "IBAN [IBAN], [IBAN]."),
    ],
)
def test_each_kind_is_found_and_masked(text: str, expected: str) -> None:
    assert mask_text(text, PiiRules()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Updated 2026-11-01T10:00:00Z, due 2026-11-08 10:30; price 125.00 EUR; 19.99",
        "SKU LH-KET-001, firmware v1.2.3, ticket T-100000, order 12345678, build 20261101",
        "Card 4111 1111 1111 1112 fails the Luhn check; GB82 WEST 1234 5698 7654 33 fails mod 97",
        "Error codes E1 E2 E3; 3 x 4 = 12; the 2-year warranty; call us at home",
    ],
)
def test_dates_prices_ids_and_failed_checksums_are_left_alone(text: str) -> None:
    counts: Counter[str] = Counter()
    assert mask_text(text, PiiRules(), counts) == text and not counts


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("GB82")


def test_each_kind_can_be_masked_dropped_or_kept() -> None:
    text = f"Write to {EMAIL}, call {PHONE}, pay with {CARD} or to {IBAN}."
    rules = PiiRules({"email": "mask", "phone": "keep", "card": "drop", "iban": "mask"})
    counts: Counter[str] = Counter()
    assert mask_text(text, rules, counts) == f"Write to [EMAIL], call {PHONE}, pay with or to [IBAN]."
    assert counts == {"email": 1, "card": 1, "iban": 1}


def test_a_batch_without_personal_data_is_one_vectorised_scan() -> None:
    texts = pl.Series(["The kettle stops early.", None, "Order 2026-11-01"])
    masked, counts = mask_series(texts, PiiRules())
    assert masked.to_list() == texts.to_list() and not counts


CONTRACT = """\
source: crm
format: jsonl
version: 1
owner: privacy@lumen-home.example
id: id
title: subject
text: [subject, body]
metadata: [contact]
fields:
  id: {type: str, required: true}
  subject: {type: str, required: true}
  body: {type: str, required: true}
  contact: {type: str}
pii: {card: drop}
"""


def test_silver_masks_text_title_metadata_and_fields_and_counts_per_kind(tmp_path: Path) -> None:
    path = tmp_path / "crm.yaml"
    path.write_text(CONTRACT)
    contract = load_contract(path)
    records = [
        {
            "id": "C-1",
            "subject": f"Refund to {IBAN}",
            "body": f"Card {CARD}, call {PHONE}.",
            "contact": EMAIL,
        },
        {"id": "C-2", "subject": "Kettle", "body": "It stops early."},
        {"id": "C-3", "subject": f"Mail {EMAIL}"},  # no body: quarantined, its raw text masked too
    ]
    raw = pl.DataFrame(
        [("c.jsonl", i + 1, json.dumps(r).encode(), None) for i, r in enumerate(records)],
        schema=RAW_SCHEMA,
        orient="row",
    )
    result = bronze_to_silver(contract, raw, "b1")
    assert result.pii == {"email": 2, "iban": 1, "card": 1, "phone": 1}
    row = result.silver.filter(pl.col("doc_id") == "crm:C-1").row(0, named=True)
    assert row["title"] == "Refund to [IBAN]" and row["text"] == "Refund to [IBAN]\n\nCard, call [PHONE]."
    assert json.loads(row["metadata"]) == {"contact": "[EMAIL]"} and row["f_contact"] == "[EMAIL]"
    assert result.quarantine.height == 1 and EMAIL not in result.quarantine["raw"][0]
    everything = str(result.silver.rows()) + str(result.rejected.rows())
    assert not [value for value in PLANTED if value in everything]


def _strings(frame: pl.DataFrame) -> str:
    columns = [c for c, t in frame.schema.items() if t == pl.String]
    return "\n".join("\n".join(v for v in frame[c].to_list() if v) for c in columns)


@pytest.mark.slow
def test_planted_values_never_reach_gold_silver_quarantine_or_the_index(
    root: Path, instance: dg.DagsterInstance
) -> None:
    """A synced batch with personal data: read every table back and grep every file for it."""
    contract = root / "contracts" / "helpdesk.yaml"
    contract.write_text(contract.read_text() + "pii: {phone: keep}\n")  # phones stay, the rest go
    batch = root / "landing" / "helpdesk" / "2026-11-15"
    batch.mkdir()
    tickets = [
        {"ticket_id": "T-9001", "subject": f"Refund to {IBAN}", "body": f"My card {CARD} was charged twice. "
         f"Mail me at {EMAIL} or call {PHONE}.", "product": "kettle", "priority": "high", "status": "open",
         "modified": "2026-11-14T09:00:00Z"},
        {"ticket_id": "T-9002", "subject": f"Contact {EMAIL}", "body": "", "modified": "2026-11-14T09:00:00Z"},
    ]  # fmt: skip
    tickets += [  # enough clean tickets that one quarantined row stays under the 5 % limit
        {"ticket_id": f"T-91{i:02d}", "subject": f"Kettle {i}", "body": f"The kettle stops after {i} minutes.",
         "modified": "2026-11-14T09:00:00Z"}
        for i in range(30)
    ]  # fmt: skip
    (batch / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tickets))
    pipeline = make_pipeline(root)
    assert sync(instance, pipeline, echo=lambda _: None).ok
    hidden = (EMAIL, CARD, IBAN)
    lake = root / "lake"
    for table in ("silver/helpdesk", "quarantine/helpdesk", "gold/documents", "gold/chunks"):
        assert not [v for v in hidden if v in _strings(pl.read_delta(str(lake / table)))], table
    db = lancedb.connect(str(root / "lancedb"))
    for name in db.table_names():
        indexed = _strings(pl.from_arrow(db.open_table(name).to_arrow()))  # type: ignore[arg-type]
        assert not [v for v in hidden if v in indexed], name
        if "hashing" in name:
            assert "[EMAIL]" in indexed and "[IBAN]" in indexed and PHONE in indexed  # kept
    grep = [
        str(path) for folder in (lake / "silver", lake / "quarantine", lake / "gold", root / "lancedb")
        for path in folder.rglob("*") if path.is_file() and any(v.encode() in path.read_bytes() for v in hidden)
    ]  # fmt: skip
    assert not grep
    bronze = pl.read_delta(str(lake / "bronze" / "helpdesk")).filter(pl.col("batch") == "2026-11-15")
    assert all(v.encode() in b"".join(bronze["_raw"].to_list()) for v in PLANTED)  # bronze is exact
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("silver_helpdesk"), asset_partitions=["2026-11-15"]),
        limit=1,
    ).records[0]
    metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
    assert {k: metadata[f"pii/{k}"].value for k in ("email", "card", "iban")} == {
        "email": 2,
        "card": 1,
        "iban": 1,
    }
    assert "pii/phone" not in metadata
