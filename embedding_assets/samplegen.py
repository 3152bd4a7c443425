"""Deterministic generator of the sample landing data (a fictional smart-home company).

Everything here is written for this project. ``python -m embedding_assets.samplegen <dir>``
rewrites the sample; benchmarks call :func:`generate` with larger counts.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

PRODUCTS = [
    (
        "thermostat",
        "Halo Thermostat",
        [
            "the schedule resets overnight",
            "the display shows the wrong room temperature",
            "heating keeps running after the target is reached",
            "the eco mode will not switch off",
        ],
    ),
    (
        "kettle",
        "Brew Kettle",
        [
            "the kettle stops before the water boils",
            "limescale warnings never clear",
            "the keep-warm light blinks red",
            "the app shows the kettle as offline",
        ],
    ),
    (
        "doorbell",
        "Porch Doorbell Camera",
        [
            "night video is grainy",
            "motion alerts arrive minutes late",
            "the chime does not ring indoors",
            "two-way audio echoes badly",
        ],
    ),
    (
        "plug",
        "Spark Smart Plug",
        [
            "the plug drops off the network every evening",
            "energy readings look too high",
            "the schedule runs an hour late after the clock change",
            "the relay clicks but the lamp stays off",
        ],
    ),
    (
        "purifier",
        "Breeze Air Purifier",
        [
            "the filter indicator stays orange after replacing the filter",
            "the fan is loud on the lowest setting",
            "the air quality ring is always purple",
            "auto mode never slows down",
        ],
    ),
    (
        "vacuum",
        "Orbit Robot Vacuum",
        [
            "the robot gets stuck under the sofa",
            "the map forgets the kitchen",
            "the brush stops spinning on carpet",
            "it will not return to the dock",
        ],
    ),
    (
        "lock",
        "Keystone Smart Lock",
        [
            "the lock jams halfway",
            "auto-lock triggers while the door is open",
            "the keypad ignores the code",
            "battery drains within two weeks",
        ],
    ),
    (
        "light",
        "Glow Bulb",
        [
            "the bulb flickers when dimmed",
            "colours drift towards green",
            "the bulb resets to white after a power cut",
            "scenes do not sync across rooms",
        ],
    ),
    (
        "sensor",
        "Sentry Leak Sensor",
        [
            "false leak alarms at night",
            "the siren is too quiet",
            "the sensor reports low battery with a new battery",
            "alerts stop after a router restart",
        ],
    ),
    (
        "speaker",
        "Echoes Room Speaker",
        [
            "audio cuts out during group playback",
            "the voice assistant mishears names",
            "bass distorts at high volume",
            "the speaker forgets the Wi-Fi password",
        ],
    ),
]
STEPS = [
    "I restarted the device twice",
    "I removed it from the app and paired it again",
    "I updated the firmware",
    "I moved the router closer",
    "I checked the breaker and the wiring",
    "I reset it to factory settings",
    "I tried the other power socket",
    "I cleaned the contacts with a dry cloth",
]
MOODS = [
    "This is urgent because we are away next week.",
    "Not urgent, but it is annoying.",
    "My neighbour has the same model and it works fine.",
    "It started after the last update.",
    "Please tell me whether this is covered by the warranty.",
    "I would like a replacement if it cannot be fixed.",
]
FIXES = [
    "Hold the main button for ten seconds until the ring turns white, then pair again from the app.",
    "Install firmware 4.2 or later, which fixes the timing fault in the scheduler.",
    "Use a 2.4 GHz network: the device cannot join 5 GHz-only networks.",
    "Descale with a one-to-one mix of water and white vinegar, then run two rinse cycles.",
    "Replace the battery with a fresh CR123A cell and recalibrate from the settings page.",
    "Clear the cached map from the app and let the robot run one full mapping pass.",
]
SECTION_TOPICS = [
    (
        "Unboxing and first setup",
        "Take the device out of its sleeve and keep the quick start card nearby. "
        "Plug it in or insert the supplied batteries, open the Lumen Home app and tap Add device. "
        "The app searches over Bluetooth first and then hands the device your Wi-Fi details.",
    ),
    (
        "Connecting to Wi-Fi",
        "The device joins 2.4 GHz networks only. If your router broadcasts one name for both "
        "bands, the app asks the device to retry up to three times before it reports a timeout. "
        "Keep the device within ten metres of the router during setup.",
    ),
    (
        "Schedules and automations",
        "Schedules run on the device itself, so they keep working when the internet is "
        "down. Each schedule has up to eight steps per day. Automations can react to other devices, for example "
        "turning on a light when the doorbell detects motion after sunset.",
    ),
    (
        "Firmware updates",
        "Updates install automatically between two and four in the morning. You can also start "
        "an update from the device page. Do not unplug the device while the status ring pulses blue: an interrupted "
        "update falls back to the previous version, which takes a few extra minutes.",
    ),
    (
        "Cleaning and maintenance",
        "Wipe the housing with a soft, dry cloth. Never use solvents or submerge the "
        "device. Check vents and filters once a month and replace consumables when the app reminds you.",
    ),
    (
        "Troubleshooting",
        "Most problems clear after a restart. If the status ring turns red, note the error code "
        "shown in the app; codes starting with E1 mean a network fault, E2 a sensor fault and E3 a power fault. "
        "A factory reset erases schedules, so export them first.",
    ),
    (
        "Privacy and data",
        "Recordings and readings stay on the device unless you enable cloud history. Cloud "
        "history is encrypted at rest and kept for thirty days. You can download or delete everything from the "
        "privacy page of the app.",
    ),
    (
        "Energy use",
        "In standby the device draws less than half a watt. The energy page shows a daily breakdown "
        "and estimates the monthly cost using the tariff you enter.",
    ),
    (
        "Warranty and returns",
        "Every device carries a two-year warranty against manufacturing faults. Keep the "
        "proof of purchase. Damage from liquids, drops or unofficial repairs is not covered.",
    ),
    (
        "Accessibility",
        "Voice prompts, large-text mode and haptic confirmation can be switched on in the "
        "accessibility settings. Every physical button also has an equivalent in the app.",
    ),
]
BATCHES = ("2026-11-01", "2026-11-08")


@dataclass(frozen=True)
class SampleSizes:
    tickets: tuple[int, int] = (110, 40)
    products: tuple[int, int] = (70, 30)
    guides: tuple[int, int] = (30, 15)


def _ts(rng: random.Random, batch: str) -> str:
    base = datetime.fromisoformat(batch).replace(tzinfo=UTC) - timedelta(days=6)
    return (base + timedelta(minutes=rng.randrange(0, 6 * 24 * 60))).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ticket(rng: random.Random, number: int, batch: str) -> dict:
    category, product, problems = rng.choice(PRODUCTS)
    problem = rng.choice(problems)
    steps = rng.sample(STEPS, 2)
    body = (
        f"Since last week {problem} on my {product}. {steps[0].capitalize()} and {steps[1]}, "
        f"but nothing changed. {rng.choice(MOODS)}"
    )
    if rng.random() < 0.3:
        body += f" Agent note: {rng.choice(FIXES)}"
    return {
        "ticket_id": f"T-{number:04d}",
        "subject": f"{product}: {problem}",
        "body": body,
        "product": category,
        "priority": rng.choice(["low", "normal", "normal", "high", "urgent"]),
        "status": rng.choice(["open", "pending", "solved"]),
        "modified": _ts(rng, batch),
    }


def _product(rng: random.Random, number: int, batch: str) -> dict:
    category, product, problems = PRODUCTS[number % len(PRODUCTS)]
    generation = 1 + number // len(PRODUCTS)
    features = rng.sample([s[0].lower() for s in SECTION_TOPICS], 3)
    return {
        "sku": _sku(number),
        "name": f"{product} Gen {generation}",
        "category": category,
        "price_eur": f"{rng.randrange(19, 349)}.{rng.choice(['00', '50', '99'])}",
        "description": (
            f"The {product} Gen {generation} is part of the Lumen Home range. It improves {features[0]}, "
            f"{features[1]} and {features[2]} over the previous generation. "
            f"Known issue being worked on: {rng.choice(problems)}."
        ),
        "status": "active",
        "updated": _ts(rng, batch),
    }


def _guide(rng: random.Random, number: int, batch: str, sections: int | None = None) -> str:
    category, product, problems = PRODUCTS[number % len(PRODUCTS)]
    chosen = rng.sample(SECTION_TOPICS, sections or rng.randrange(3, len(SECTION_TOPICS)))
    parts = [
        "---",
        f"id: guide-{number:03d}",
        f"title: {product} guide {number}",
        f"product: {category}",
        f"updated: {_ts(rng, batch)}",
        "---",
        f"# {product} guide {number}",
        "",
        f"This guide covers the {product}. Read it once before installation and keep it for later.",
    ]
    for heading, text in chosen:
        parts += ["", f"## {heading}", "", text]
        if heading == "Troubleshooting":
            parts += ["", f"If {rng.choice(problems)}: {rng.choice(FIXES)}"]
    return "\n".join(parts) + "\n"


def generate(root: Path, sizes: SampleSizes = SampleSizes(), seed: int = 7) -> dict[str, int]:
    """Write landing/<source>/<batch>/ files under ``root``; returns documents per source."""
    rng = random.Random(seed)
    counts = {"helpdesk": 0, "catalog": 0, "guides": 0}
    for index, batch in enumerate(BATCHES):
        # One rng for everything, drawn source by source in this order: the sample must not change.
        edits = index == 1  # the second batch also updates, deletes and breaks a few documents
        counts["helpdesk"] += _write_tickets(root, rng, batch, _numbers(sizes.tickets, index), edits)
        counts["catalog"] += _write_products(root, rng, batch, _numbers(sizes.products, index), edits)
        counts["guides"] += _write_guides(root, rng, batch, _numbers(sizes.guides, index), edits)
    return counts | _write_formats(root, seed) | {"storefront": _write_storefront(root, seed)}


def _numbers(per_batch: tuple[int, ...], index: int) -> range:
    """The document numbers of batch ``index``: they continue from the batches before it."""
    first = 1 + sum(per_batch[:index])
    return range(first, first + per_batch[index])


def _write_tickets(root: Path, rng: random.Random, batch: str, numbers: range, edits: bool) -> int:
    """helpdesk: one JSONL file per batch."""
    lines = [json.dumps(_ticket(rng, 1000 + number, batch)) for number in numbers]
    if edits:
        update = _ticket(random.Random(1007), 1007, batch)
        update["body"] = (
            "Follow-up: the replacement thermostat arrived and the schedule now survives the night. "
            "The fix was to install firmware 4.2 before pairing. Closing this ticket."
        )
        update["subject"] = "Halo Thermostat: replacement fixed the overnight schedule reset"
        update["status"] = "solved"
        lines.append(json.dumps(update))
        lines.append(json.dumps({"ticket_id": "T-1013", "status": "deleted", "modified": _ts(rng, batch)}))
        lines.append('{"ticket_id": "T-9999", "subject": "broken export", "body": ')  # truncated line
        lines.append(
            json.dumps({"subject": "no id", "body": "A ticket without an id.", "modified": _ts(rng, batch)})
        )
    _write(root / "landing" / "helpdesk" / batch / "tickets.jsonl", "\n".join(lines) + "\n")
    return len(numbers)


def _write_products(root: Path, rng: random.Random, batch: str, numbers: range, edits: bool) -> int:
    """catalog: one CSV file per batch."""
    rows = [_product(rng, number, batch) for number in numbers]
    if edits:
        retired = _product(random.Random(42), 42, batch)
        retired["status"] = "retired"
        rows.append(retired)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write(root / "landing" / "catalog" / batch / "products.csv", buffer.getvalue())
    return len(numbers)


def _write_guides(root: Path, rng: random.Random, batch: str, numbers: range, edits: bool) -> int:
    """guides: Markdown, one file per document; some long enough for several chunks."""
    folder = root / "landing" / "guides" / batch
    for number in numbers:
        _write(folder / f"guide-{number:03d}.md", _guide(rng, number, batch))
    if edits:
        _write(folder / "guide-003.md", _guide(random.Random(3), 3, batch, sections=2))
        _write(
            folder / "guide-005.md",
            f"---\nid: guide-005\ndeleted: true\nupdated: {_ts(rng, batch)}\n---\n",
        )
    return len(numbers)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Help-centre pages (kb, HTML) and product manuals (manuals, PDF): drawn from their own random
# generator, after the sources above, so adding them left the earlier sample byte for byte as it was.
# --------------------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} | Lumen Home Help Centre</title>
<meta name="description" content="{summary}"><meta name="author" content="Lumen Home Support">
<meta property="article:modified_time" content="{modified}"></head>
<body><header><nav><a href="/">Home</a> <a href="/shop">Shop</a> <a href="/help">Help centre</a>
<a href="/account">My account</a></nav></header>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept all cookies</button></div>
<main><article><h1>{title}</h1>
{paragraphs}
</article>
<aside><h3>Related articles</h3><ul><li><a href="/help/wifi">Wi-Fi basics</a></li>
<li><a href="/help/warranty">Warranty</a></li></ul></aside></main>
<footer><p>Copyright 2026 Lumen Home. All rights reserved.</p><p><a href="/privacy">Privacy policy</a>
<a href="/terms">Terms of service</a></p></footer></body></html>
"""


def _help_page(rng: random.Random, number: int, which: int, batch: str) -> tuple[str, str]:
    """(file name, HTML) of a help-centre article on one product's known problem."""
    category, product, problems = PRODUCTS[number % len(PRODUCTS)]
    problem = problems[which % len(problems)]
    title = f"{product}: {problem}"
    paragraphs = [
        f"<p>Some owners of the {product} report that {problem}. This article explains why it "
        "happens and what you can do about it yourself before you contact us.</p>",
        f"<h2>Why it happens</h2><p>{rng.choice(SECTION_TOPICS)[1]}</p>",
        f"<h2>What to do</h2><p>{rng.choice(FIXES)} {rng.choice(FIXES)}</p>",
        "<h2>Still not working?</h2><p>Open a ticket from the app with the error code shown on the "
        "device, and attach a photo of the status ring.</p>",
    ]
    modified = _ts(rng, batch)
    html = PAGE.format(
        title=title,
        summary=f"What to do when {problem}.",
        modified=modified,
        paragraphs="\n".join(paragraphs),
    )
    return f"help-{category}-{which + 1}.html", html


def _manual_pdf(rng: random.Random, number: int, batch: str, revision: int) -> tuple[str, bytes]:
    """(file name, PDF) of one product's manual: a few pages of sections, its own title and time."""
    category, product, problems = PRODUCTS[number % len(PRODUCTS)]
    chosen = rng.sample(SECTION_TOPICS, 6)
    paragraphs = [f"{product} owner's manual, revision {revision}. Keep this manual with the device."]
    for heading, text in chosen:
        paragraphs += [heading.upper(), f"{text} {rng.choice(FIXES)}"]
    paragraphs += ["KNOWN ISSUES", f"If {rng.choice(problems)}: {rng.choice(FIXES)}"]
    modified = _ts(rng, batch).replace("-", "").replace(":", "").replace("T", "")
    return f"manual-{category}.pdf", pdf_document(
        f"{product} owner's manual", "Lumen Home", modified, paragraphs
    )


def _write_formats(root: Path, seed: int) -> dict[str, int]:
    """kb: a help page per product, then two of them rewritten and one new; manuals: one PDF per
    product, then one revised."""
    rng = random.Random(seed * 31 + 1)
    counts = {"kb": 0, "manuals": 0}
    everything = [(n, 0) for n in range(len(PRODUCTS))]
    plan = {
        BATCHES[0]: (everything, range(len(PRODUCTS))),
        BATCHES[1]: ([(0, 0), (4, 0), (7, 1)], range(2, 3)),
    }
    for batch, (pages, manuals) in plan.items():
        for number, which in pages:
            name, html = _help_page(rng, number, which, batch)
            _write(root / "landing" / "kb" / batch / name, html)
            counts["kb"] += 1
        for number in manuals:
            name, pdf = _manual_pdf(rng, number, batch, revision=1 + BATCHES.index(batch))
            path = root / "landing" / "manuals" / batch / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pdf)
            counts["manuals"] += 1
    return counts


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_document(
    title: str, author: str, modified: str, paragraphs: list[str], lines_per_page: int = 46
) -> bytes:
    """A small, valid PDF 1.4 in Helvetica: ``paragraphs`` wrapped to the page, a blank line after
    each, with the document information (title, author, ``modified`` as YYYYMMDDHHMMSSZ)."""
    lines = [line for p in paragraphs for line in [*textwrap.wrap(p, 92), ""]]
    pages = [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)] or [[]]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, page in enumerate(pages):
        stream = "\n".join(
            ["BT", "/F1 11 Tf", "14 TL", "56 786 Td", *(f"({_pdf_escape(x)}) Tj T*" for x in page), "ET"]
        )
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}\nendstream")
    objects.append(
        f"<< /Title ({_pdf_escape(title)}) /Author ({_pdf_escape(author)}) /ModDate (D:{modified}) >>"
    )
    return _pdf_file(objects)


def _pdf_file(objects: list[str]) -> bytes:
    """The objects numbered from 1, the cross-reference table and the trailer (the last object
    is the document information)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>"
    out.write(f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


# --------------------------------------------------------------------------------------------------
# The web shop's product feed (storefront, JSON Lines), fused with the catalogue into product
# entities: it names products its own way (lower-case SKUs, marketing titles), prices them, and
# disagrees with the catalogue on purpose. Its own random generator, as above.
# --------------------------------------------------------------------------------------------------

BLURBS = [
    "Our best seller, now with free shipping.",
    "Rated five stars by owners for its quiet operation.",
    "Works with every Lumen Home hub and the app.",
    "Back in stock: order before noon for next-day delivery.",
]


def _shop_row(rng: random.Random, number: int, batch: str) -> dict:
    category, product, _ = PRODUCTS[number % len(PRODUCTS)]
    generation = 1 + number // len(PRODUCTS)
    return {
        "sku": _sku(number).lower(),
        "title": f"{product} (generation {generation}) | Lumen Home shop",
        "blurb": f"The {product} gen {generation}. {rng.choice(BLURBS)}",
        "price": float(f"{rng.randrange(19, 349)}.{rng.choice(['00', '49', '99'])}"),
        "status": "listed",
        "updated_at": _ts(rng, batch),
    }


def _sku(number: int) -> str:
    return f"LH-{PRODUCTS[number % len(PRODUCTS)][0][:3].upper()}-{number:03d}"


def _write_storefront(root: Path, seed: int) -> int:
    """Batch one: forty catalogue products, product 42 (which the catalogue retires later) and five
    only the shop sells. Batch two: product 3 renamed and repriced, product 7 delisted."""
    rng = random.Random(seed * 31 + 2)
    first = [_shop_row(rng, n, BATCHES[0]) for n in [*range(1, 41), 42, *range(201, 206)]]
    renamed = _shop_row(rng, 3, BATCHES[1]) | {"title": "Smart plug, renamed by the shop", "price": 49.0}
    delisted = {"sku": _sku(7).lower(), "status": "delisted", "updated_at": _ts(rng, BATCHES[1])}
    for batch, rows in ((BATCHES[0], first), (BATCHES[1], [renamed, delisted])):
        _write(
            root / "landing" / "storefront" / batch / "feed.jsonl",
            "".join(json.dumps(r) + "\n" for r in rows),
        )
    return len(first) + 2


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    print(generate(target))
