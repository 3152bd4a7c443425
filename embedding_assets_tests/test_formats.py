"""HTML and PDF sources: the sample's pages and manuals read to their main text, and a file that
yields no text quarantined with the reason, never an exception."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfWriter

from embedding_assets.contracts.load import load_contracts
from embedding_assets.contracts.model import Contract
from embedding_assets.ingest.landing import read_raw_batch
from embedding_assets.refine.extract import extract_html, extract_pdf
from embedding_assets.refine.silver import bronze_to_silver
from embedding_assets.samplegen import pdf_document
from embedding_assets_tests.conftest import SAMPLE

CONTRACTS = load_contracts(SAMPLE / "contracts")
B1 = "2026-11-01"


def _silver(contract: Contract, folder: Path, batch: str = B1) -> tuple[pl.DataFrame, pl.DataFrame]:
    result = bronze_to_silver(contract, read_raw_batch(contract, folder).records, batch)
    assert result.accounted
    return result.silver, result.quarantine


def test_help_pages_keep_the_article_and_lose_the_boilerplate() -> None:
    silver, quarantine = _silver(CONTRACTS["kb"], SAMPLE / "landing" / "kb" / B1)
    assert silver.height == 10 and quarantine.height == 0
    page = silver.filter(pl.col("doc_id") == "kb:help-kettle-1").row(0, named=True)
    assert page["title"].startswith("Brew Kettle: ") and page["updated_at"] is not None
    assert "This article explains why it happens" in page["text"] and "Still not working?" in page["text"]
    for boilerplate in (
        "Accept all cookies",
        "Privacy policy",
        "My account",
        "Related articles",
        "Copyright",
    ):
        assert boilerplate not in page["text"], boilerplate


def test_manuals_read_to_paragraphs_with_their_title_and_time() -> None:
    silver, quarantine = _silver(CONTRACTS["manuals"], SAMPLE / "landing" / "manuals" / B1)
    assert silver.height == 10 and quarantine.height == 0
    manual = silver.filter(pl.col("doc_id") == "manuals:manual-kettle").row(0, named=True)
    assert manual["title"] == "Brew Kettle owner's manual"
    assert manual["updated_at"].year == 2026 and manual["f_pages"] == 1
    assert "\n\nTROUBLESHOOTING\n\n" in manual["text"] or "\n\nKNOWN ISSUES\n\n" in manual["text"]
    assert "the\naccessibility" not in manual["text"]  # lines wrapped by the page joined again


def _encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.encrypt("secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _blank_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


GOOD_PDF = pdf_document("Kettle", "Lumen", "20261101090000Z", ["The kettle stops before the water boils."])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOOD_PDF[: len(GOOD_PDF) // 2], "invalid_pdf"),
        (b"%PDF-1.4 then nothing a reader can use", "invalid_pdf"),
        (b"GIF89a not a PDF at all", "invalid_pdf"),
        (_encrypted_pdf(), "encrypted_pdf"),
        (_blank_pdf(), "empty_pdf"),
    ],
)
def test_a_pdf_without_text_is_a_reason(data: bytes, reason: str) -> None:
    record, reasons = extract_pdf(data, "broken")
    assert record == {} and len(reasons) == 1 and reasons[0].startswith(f"{reason}: ")


@pytest.mark.parametrize(
    "data",
    [
        b"<html><head><title>Empty</title></head><body></body></html>",
        b"<html><body><script>window.location = '/elsewhere';</script></body></html>",
        b"",
        b"\x00\x01\x02 binary",
    ],
)
def test_html_without_main_text_is_a_reason(data: bytes) -> None:
    record, reasons = extract_html(data, "empty")
    assert record == {} and reasons[0].startswith(("empty_html: ", "invalid_html: "))


def test_html_in_another_encoding_is_read_by_its_charset() -> None:
    page = (
        '<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head><body><article><p>La '
        "bouilloire s'arr\xeate avant que l'eau ne bouille, m\xeame apr\xe8s un d\xe9tartrage complet."
        "</p></article></body></html>"
    ).encode("latin-1")
    record, reasons = extract_html(page, "cafe")
    assert not reasons and "même après un détartrage" in record["body"]


def test_broken_files_are_quarantined_with_the_reason_and_the_rest_go_on(tmp_path: Path) -> None:
    """A batch of good and bad files: rows in = rows out, each bad file named with its reason."""
    manuals, kb = tmp_path / "manuals", tmp_path / "kb"
    manuals.mkdir()
    kb.mkdir()
    (manuals / "good.pdf").write_bytes(GOOD_PDF)
    (manuals / "torn.pdf").write_bytes(GOOD_PDF[:300])
    (manuals / "scanned.pdf").write_bytes(_blank_pdf())
    (kb / "good.html").write_bytes((SAMPLE / "landing" / "kb" / B1 / "help-lock-1.html").read_bytes())
    (kb / "blank.html").write_bytes(
        b"<html><head><title>Nothing</title></head><body><script>go()</script></body></html>"
    )
    (kb / "menu.html").write_bytes(b"<html><body><nav><a href='/'>Home</a></nav></body></html>")  # no title
    for source, folder, bad in (
        ("manuals", manuals, {"torn": "invalid_pdf", "scanned": "empty_pdf"}),
        ("kb", kb, {"blank": "empty_html", "menu": "missing_required"}),
    ):
        silver, quarantine = _silver(CONTRACTS[source], folder)
        assert silver["source_id"].to_list() == ["good"]
        got = {
            f.rsplit(".", 1)[0]: r.split(":")[0] for f, r in quarantine.select("_file", "reason").iter_rows()
        }
        assert got == bad
