"""Text out of rich formats, one record per file: HTML with its boilerplate stripped (trafilatura
keeps the main content and drops navigation, cookie banners and footers), and PDF's text layer
(pypdf). A file that yields no text is a reason, never an exception: silver quarantines it."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from typing import Any

Extracted = tuple[dict[str, Any], list[str]]  # (record, reasons it cannot be read)

_HYPHENATED = re.compile(r"(\w)-\n(\w)")


def extract_html(raw: bytes, stem: str) -> Extracted:
    """``path``, ``title``, ``body`` (the main text), ``author``, ``description`` and ``date``."""
    import trafilatura  # imported here: 0.25 s that only HTML sources pay

    try:
        page = trafilatura.bare_extraction(
            raw, with_metadata=True, include_comments=False, favor_precision=True
        )
    except (ValueError, TypeError) as exc:  # trafilatura raises these for bytes it cannot parse
        return {}, [f"invalid_html: {exc}"]
    found: dict[str, Any] = dict(page or {}) if page is None or isinstance(page, dict) else page.as_dict()
    body = (found.get("text") or "").strip()
    if not body:
        return {}, ["empty_html: the page has no main text (only navigation, scripts or nothing)"]
    return {
        "path": stem,
        "body": body,
        **{k: found.get(k) for k in ("title", "author", "description", "date")},
    }, []


def extract_pdf(raw: bytes, stem: str) -> Extracted:
    """``path``, ``title`` (the document's, else its first line), ``body``, ``author``,
    ``updated`` (modification, else creation time) and ``pages``."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings would repeat each reason
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            return {}, ["encrypted_pdf: the file is encrypted; deliver it without a password"]
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        info = reader.metadata
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        return {}, [f"invalid_pdf: {type(exc).__name__}: {str(exc)[:200]}"]
    body = _paragraphs(text)
    if not body:
        return {}, ["empty_pdf: no text layer (a scanned document needs OCR before it is delivered)"]
    title = (info.title if info else None) or body.split("\n", 1)[0][:200]
    when = _pdf_time(info)
    return {
        "path": stem,
        "title": title,
        "body": body,
        "author": info.author if info else None,
        "updated": when.isoformat() if when else None,
        "pages": len(reader.pages),
    }, []


def _paragraphs(text: str) -> str:
    """The page's lines joined back into paragraphs (text layers keep lines, not paragraphs): a
    blank line, a line well short of the page's width, or a heading in capitals ends one; a word
    hyphenated across a line break is joined."""
    lines = [line.strip() for line in _HYPHENATED.sub(r"\1\2", text.replace("\r\n", "\n")).split("\n")]
    width = max((len(line) for line in lines), default=0)
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        heading = line.isupper() and len(line) < 80
        if heading and paragraphs[-1]:
            paragraphs.append([])
        if line:
            paragraphs[-1].append(line)
        if not line or heading or len(line) < 0.7 * width:
            paragraphs.append([])
    return "\n\n".join(" ".join(p) for p in paragraphs if p)


def _pdf_time(info: Any) -> datetime | None:
    for name in ("modification_date", "creation_date"):
        try:
            value = getattr(info, name, None) if info else None
        except (ValueError, TypeError):  # a malformed date string in the document information
            value = None
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None
