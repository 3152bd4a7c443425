import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from embedding_assets.contracts.load import load_contracts
from embedding_assets.gold.documents import latest_documents, union_documents
from embedding_assets.ingest.landing import RAW_SCHEMA
from embedding_assets.refine.schemas import silver_failures
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets.refine.tables import SILVER_SCHEMA
from embedding_assets_tests.conftest import SAMPLE

HELPDESK = load_contracts(SAMPLE / "contracts")["helpdesk"]
CATALOG = load_contracts(SAMPLE / "contracts")["catalog"]
GUIDES = load_contracts(SAMPLE / "contracts")["guides"]


def _ticket(
    tid: str | None,
    body: str = "The kettle stops early.",
    modified: str = "2026-11-01T10:00:00Z",
    **extra: object,
) -> bytes:
    row = {
        "ticket_id": tid,
        "subject": "Kettle",
        "body": body,
        "modified": modified,
        "priority": "low",
        **extra,
    }
    return json.dumps(row).encode()


def _raw(*records: bytes) -> pl.DataFrame:
    return pl.DataFrame(
        [("t.jsonl", i + 1, r, None) for i, r in enumerate(records)], schema=RAW_SCHEMA, orient="row"
    )


def test_valid_rows_become_typed_canonical_silver() -> None:
    result = bronze_to_silver(HELPDESK, _raw(_ticket("T-1"), _ticket("T-2", body="Lock jams.")), "b1")
    assert result.quarantine.height == 0
    silver = result.silver
    assert silver["doc_id"].to_list() == ["helpdesk:T-1", "helpdesk:T-2"]
    assert silver["text"][0] == "Kettle\n\nThe kettle stops early."
    assert silver.schema["updated_at"] == pl.Datetime("us", "UTC")
    assert json.loads(silver["metadata"][0]) == {"priority": "low", "product": None, "status": None}
    assert silver_failures(silver) == []
    assert result.accounted


def test_bad_rows_are_quarantined_with_every_reason() -> None:
    raw = _raw(
        _ticket("T-1"),
        b'{"ticket_id": "T-2", "body": ',  # truncated JSON
        b"\xff\xfe not utf-8",
        _ticket(None),
        _ticket("T-5", body="   ", modified="not a date", subject=" "),
        _ticket("T-6", priority="sometimes"),
        b"[1, 2]",
        _ticket("T-8", body="x" * 20001),
        b'{"ticket_id": "T-9", "subject": "nul\\u0000", "body": "b", "modified": "2026-11-01"}'.replace(
            b"\\u0000", b"\x00"
        ),
        # json.loads keeps an unpaired surrogate escape; it is no text, and used to fail the step
        b'{"ticket_id": "T-10", "subject": "half \\ud800", "body": "b", "modified": "2026-11-01"}',
        _ticket("T-11", body="a whole pair \ud83d\ude00 is fine"),
    )
    result = bronze_to_silver(HELPDESK, raw, "b1")
    assert result.silver["doc_id"].to_list() == ["helpdesk:T-1", "helpdesk:T-11"]
    reasons = {line: reasons for line, reasons in result.quarantine.select("_line", "reasons").iter_rows()}
    assert reasons[2][0].startswith("invalid_json")
    assert reasons[3][0].startswith("invalid_utf8")
    assert any(r.startswith("missing_id") for r in reasons[4])
    assert {r.split(":")[0] for r in reasons[5]} >= {"empty_text", "bad_timestamp", "missing_required"}
    assert any("field 'modified'" in r for r in reasons[5])
    assert reasons[6] == ["not_allowed: field 'priority' must be one of ['low', 'normal', 'high', 'urgent']"]
    assert reasons[7][0].startswith("not_an_object")
    assert any(r.startswith("too_long: field 'body'") for r in reasons[8])
    assert reasons[9][0].startswith("nul_byte")
    assert reasons[10] == ["invalid_json: a \\u escape gives half of a surrogate pair, which is not text"]
    assert result.accounted and result.rows_read == 11


def test_duplicates_and_conflicting_versions_are_resolved_by_updated_at() -> None:
    raw = _raw(
        _ticket("T-1", body="old", modified="2026-11-01T09:00:00Z"),
        _ticket("T-1", body="new", modified="2026-11-01T11:00:00Z"),
        _ticket("T-1", body="middle", modified="2026-11-01T10:00:00Z"),
        _ticket("T-2"),
        _ticket("T-2"),
    )
    result = bronze_to_silver(HELPDESK, raw, "b1")
    assert result.silver.height == 2
    assert result.silver.filter(pl.col("doc_id") == "helpdesk:T-1")["text"][0].endswith("new")
    assert result.duplicates_dropped == 3 and result.superseded == 2
    assert result.accounted


def test_deleted_marker_needs_only_the_id() -> None:
    raw = _raw(
        json.dumps({"ticket_id": "T-3", "status": "deleted", "modified": "2026-11-02T00:00:00Z"}).encode()
    )
    result = bronze_to_silver(HELPDESK, raw, "b1")
    assert result.quarantine.height == 0
    assert result.silver["deleted"].to_list() == [True]
    assert result.silver["text"].to_list() == [""]


def test_csv_and_markdown_sources_parse() -> None:
    header = b"sku,name,description,category,price_eur,status,updated"
    csv_raw = pl.DataFrame(
        [
            ("p.csv", 2, b'A-1,Kettle,"Boils, fast",kettle,19.50,active,2026-11-01T00:00:00Z', header),
            ("p.csv", 3, b"A-2,Plug,Switches,plug,abc,active,2026-11-01T00:00:00Z", header),
        ],
        schema=RAW_SCHEMA,
        orient="row",
    )
    result = bronze_to_silver(CATALOG, csv_raw, "b1")
    assert result.silver["doc_id"].to_list() == ["catalog:A-1"]
    assert json.loads(result.silver["metadata"][0]) == {"category": "kettle", "price_eur": 19.5}
    assert "bad_type: field 'price_eur' is not a valid float" in result.quarantine["reasons"][0].to_list()

    md = b"---\nid: g-1\ntitle: Setup\nupdated: 2026-11-01T00:00:00Z\n---\n# Setup\n\nPlug it in."
    result = bronze_to_silver(
        GUIDES, pl.DataFrame([("g.md", 1, md, None)], schema=RAW_SCHEMA, orient="row"), "b1"
    )
    assert result.silver["doc_id"].to_list() == ["guides:g-1"]
    assert result.silver["text"][0] == "# Setup\n\nPlug it in."

    half = b'---\nid: g-2\ntitle: "half \\ud800"\n---\n# Setup\n\nPlug it in.'  # failed the step before
    result = bronze_to_silver(
        GUIDES, pl.DataFrame([("g.md", 1, half, None)], schema=RAW_SCHEMA, orient="row"), "b1"
    )
    assert result.quarantine["reasons"].to_list() == [
        ["invalid_front_matter: a \\u escape gives half of a surrogate pair, which is not text"]
    ]


def test_latest_documents_prefers_updated_at_then_batch(tmp_path: Path) -> None:
    a = bronze_to_silver(
        HELPDESK, _raw(_ticket("T-1", body="newer", modified="2026-11-05T00:00:00Z")), "b1"
    ).silver
    b = bronze_to_silver(
        HELPDESK, _raw(_ticket("T-1", body="older", modified="2026-11-01T00:00:00Z")), "b2"
    ).silver
    c = bronze_to_silver(
        HELPDESK, _raw(_ticket("T-1", body="same time later batch", modified="2026-11-05T00:00:00Z")), "b3"
    ).silver
    docs = union_documents([a, b])
    assert latest_documents(docs)["text"][0].endswith("newer")
    assert latest_documents(union_documents([a, b, c]))["batch"][0] == "b3"


def test_bronze_appends_new_deliveries_only() -> None:
    from datetime import UTC, datetime

    from embedding_assets.ingest.bronze import BRONZE_SCHEMA, bronze_version, latest_delivery, new_delivery

    now = datetime(2026, 11, 1, tzinfo=UTC)
    raw = _raw(_ticket("T-1"), _ticket("T-2"))
    empty = pl.DataFrame(schema=BRONZE_SCHEMA)
    first = new_delivery(
        raw, source="helpdesk", batch="b1", fmt="jsonl", delivery="h1", existing=empty, now=now
    )
    assert first is not None and first["_delivery_seq"].unique().to_list() == [1]
    assert (
        new_delivery(raw, source="helpdesk", batch="b1", fmt="jsonl", delivery="h1", existing=first, now=now)
        is None
    )
    second = new_delivery(
        raw, source="helpdesk", batch="b1", fmt="jsonl", delivery="h2", existing=first, now=now
    )
    assert second is not None and second["_delivery_seq"].unique().to_list() == [2]
    both = pl.concat([first, second])
    assert latest_delivery(both).height == 2
    assert latest_delivery(both)["_delivery"].unique().to_list() == ["h2"]
    assert bronze_version("h2") == bronze_version("h2") != bronze_version("h1")
    gone = new_delivery(
        raw.head(0), source="helpdesk", batch="b1", fmt="jsonl", delivery="e", existing=both, now=now
    )
    assert gone is None


def test_snapshot_tombstones_delete_what_a_full_snapshot_lacks() -> None:
    from embedding_assets.gold.documents import snapshot_tombstones

    def docs(batch: str, rows: dict[str, tuple[int, bool]]) -> pl.DataFrame:
        return pl.DataFrame(
            [
                {
                    "doc_id": d,
                    "source": "s",
                    "source_id": d,
                    "batch": batch,
                    "title": None,
                    "text": "t",
                    "updated_at": datetime(2026, 11, day, tzinfo=UTC),
                    "deleted": gone,
                    "metadata": "{}",
                    "content_hash": "h",
                    "_file": "f",
                    "_line": 1,
                }
                for d, (day, gone) in rows.items()
            ],
            schema=SILVER_SCHEMA,
        )

    earlier = pl.concat(
        [
            docs("b1", {"s:1": (1, False), "s:2": (1, False), "s:3": (1, False)}),
            docs("b2", {"s:3": (2, True)}),
        ]
    )
    current = docs("b3", {"s:1": (3, False)})
    stones = snapshot_tombstones(current, earlier, "b3")
    assert stones["doc_id"].to_list() == ["s:2"]  # s:3 is already deleted; s:1 is in the snapshot
    assert stones["deleted"].to_list() == [True] and stones["batch"].to_list() == ["b3"]
    assert stones["updated_at"].to_list() == [datetime(2026, 11, 1, tzinfo=UTC)]  # wins by batch only
    assert snapshot_tombstones(docs("b3", {}), earlier, "b3").height == 0  # no delivery: no deletions
    later = docs("b9", {"s:2": (1, False)})
    assert snapshot_tombstones(current, pl.concat([earlier, later]), "b3")["doc_id"].to_list() == ["s:2"]


def test_metadata_json_is_pythons_for_hostile_strings() -> None:
    """Metadata strings are encoded column-wise; the text must be exactly what ``json.dumps``
    writes: quotes, backslashes, control characters, non-ASCII and a missing value."""
    products = ['say "hi"\\', "tab\tnl\nnul\x00us\x1fdel\x7f", "café 中文 \u2028 😀", None, ""]
    records = [
        _ticket(f"T{i}", body=f"Body number {i} is its own text.", product=p) for i, p in enumerate(products)
    ]
    silver = bronze_to_silver(HELPDESK, _raw(*records), "b1").silver.sort("doc_id")
    expected = [
        json.dumps({"priority": "low", "product": p, "status": None}, sort_keys=True, ensure_ascii=False)
        for p in products
    ]
    assert silver["metadata"].to_list() == expected
