"""3. The data path at scale: bronze -> silver -> gold on generated rows, no embedding.

Against baselines on the same file: a row-by-row pandas implementation of the same cleaning
(the ``iterrows`` style of many tutorials), raw polars read + write of the same rows as the
floor, and, for reference, that tutorial cleaning written in polars (no bronze copy, contract
migrations, garbage rules, near-duplicate search or pandera). Each runs in its own process, so
each peak memory is its own."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
from deltalake import write_deltalake

from bench.common import in_subprocess, ticket_rows, write_jsonl
from embedding_assets.contracts.load import load_contracts
from embedding_assets.contracts.model import Contract, metadata_fields
from embedding_assets.core.lake import Lake
from embedding_assets.gold.documents import union_documents, with_metadata_columns
from embedding_assets.ingest import bronze as bronze_lib
from embedding_assets.ingest.landing import read_raw_batch
from embedding_assets.refine.silver import bronze_to_silver

REPO = Path(__file__).resolve().parents[1]
BATCH = "2026-11-01"


def bronze_to_gold(contracts: dict[str, Contract], batch_dir: Path, lake: Lake) -> pl.DataFrame:
    """What the bronze, silver and gold assets do for one helpdesk batch, as plain calls."""
    contract = contracts["helpdesk"]
    landed = read_raw_batch(contract, batch_dir)
    rows = bronze_lib.new_delivery(
        landed.records, source="helpdesk", batch=BATCH, fmt=contract.format, delivery=landed.content_hash,
        existing=pl.DataFrame(schema=bronze_lib.BRONZE_SCHEMA), now=datetime.now(UTC),
    )  # fmt: skip
    assert rows is not None
    lake.insert_new("bronze/helpdesk", rows, bronze_lib.BRONZE_KEYS)
    result = bronze_to_silver(contract, bronze_lib.as_raw_records(rows), BATCH)
    assert result.accounted
    lake.overwrite_batch("silver/helpdesk", result.silver, BATCH)
    lake.overwrite_batch("quarantine/helpdesk", result.rejected, BATCH)
    documents = with_metadata_columns(union_documents([result.silver]), metadata_fields(contracts))
    lake.overwrite_batch("gold/documents", documents, BATCH)
    return documents


def ours(landing: str, out: str) -> int:
    """The pipeline's own functions, as the bronze, silver and gold assets call them."""
    contracts = load_contracts(REPO / "data" / "contracts")
    return bronze_to_gold(contracts, Path(landing).parent, Lake(out)).height


def pandas_rows(landing: str, out: str) -> int:
    """The same cleaning, row by row: parse, check required fields and allowed values, parse the
    timestamp, build the text, keep the newest version of each id, write."""
    contract_allowed = {
        "priority": {"low", "normal", "high", "urgent"},
        "status": {"open", "pending", "solved", "deleted"},
    }
    frame = pd.read_json(landing, lines=True, dtype=False)
    good, bad = [], []
    for _, row in frame.iterrows():
        reasons = []
        for name in ("ticket_id", "subject", "body", "modified"):
            if pd.isna(row.get(name)) or not str(row.get(name)).strip():
                reasons.append(f"missing_required: {name}")
        for name, allowed in contract_allowed.items():
            if not pd.isna(row.get(name)) and row.get(name) not in allowed:
                reasons.append(f"not_allowed: {name}")
        try:
            updated = pd.Timestamp(row["modified"]).tz_convert("UTC")
        except (ValueError, TypeError):
            reasons.append("bad_timestamp")
            updated = None
        if reasons:
            bad.append({"raw": json.dumps(row.to_dict(), default=str), "reason": "; ".join(reasons)})
            continue
        good.append(
            {
                "doc_id": f"helpdesk:{row['ticket_id']}",
                "text": f"{str(row['subject']).strip()}\n\n{str(row['body']).strip()}",
                "updated_at": updated,
                "metadata": json.dumps(
                    {"priority": row["priority"], "product": row["product"], "status": row["status"]}
                ),
            }
        )
    silver = pd.DataFrame(good).sort_values("updated_at").drop_duplicates("doc_id", keep="last")
    Path(out).mkdir(parents=True, exist_ok=True)
    silver.to_parquet(Path(out) / "silver.parquet")
    pd.DataFrame(bad, columns=["raw", "reason"]).to_parquet(Path(out) / "quarantine.parquet")
    return len(silver)


def polars_cleaning(landing: str, out: str) -> int:
    """The pandas baseline's cleaning in polars: required fields, allowed values, the timestamp, the
    text, the newest version of each id; silver and quarantine written to Delta."""
    allowed = {
        "priority": ["low", "normal", "high", "urgent"],
        "status": ["open", "pending", "solved", "deleted"],
    }
    frame = pl.read_ndjson(landing, infer_schema_length=None).with_columns(
        pl.col("modified").str.to_datetime(time_zone="UTC", strict=False).alias("updated_at")
    )
    problems = [
        pl.when(pl.col(n).str.strip_chars().fill_null("") == "").then(pl.lit(f"missing_required: {n}"))
        for n in ("ticket_id", "subject", "body", "modified")
    ]
    problems += [
        pl.when(~pl.col(n).is_in(values) & pl.col(n).is_not_null()).then(pl.lit(f"not_allowed: {n}"))
        for n, values in allowed.items()
    ]
    problems.append(pl.when(pl.col("updated_at").is_null()).then(pl.lit("bad_timestamp")))
    frame = frame.with_columns(pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("reason"))
    silver = (
        frame.filter(pl.col("reason") == "")
        .select(
            pl.format("helpdesk:{}", "ticket_id").alias("doc_id"),
            pl.concat_str(
                [pl.col("subject").str.strip_chars(), pl.col("body").str.strip_chars()], separator="\n\n"
            ).alias("text"),
            "updated_at",
            pl.struct("priority", "product", "status").struct.json_encode().alias("metadata"),
        )
        .sort("updated_at")
        .unique("doc_id", keep="last", maintain_order=True)
    )
    write_deltalake(str(Path(out) / "silver"), silver.to_arrow(), mode="overwrite")
    quarantine = frame.filter(pl.col("reason") != "").select(
        pl.struct(pl.all().exclude("reason", "updated_at")).struct.json_encode().alias("raw"), "reason"
    )
    write_deltalake(str(Path(out) / "quarantine"), quarantine.to_arrow(), mode="overwrite")
    return silver.height


def polars_floor(landing: str, out: str) -> int:
    frame = pl.read_ndjson(landing)
    write_deltalake(str(Path(out) / "floor"), frame.to_arrow(), mode="overwrite")
    return frame.height


def run(rows: int, smoke: bool = False) -> dict[str, Any]:
    n = 2_000 if smoke else rows
    with tempfile.TemporaryDirectory() as tmp:
        landing = str(
            write_jsonl(Path(tmp) / "landing" / "helpdesk" / BATCH / "tickets.jsonl", ticket_rows(n))
        )
        figures = {}
        baselines = (
            ("pandas_iterrows", pandas_rows),
            ("polars_floor", polars_floor),
            ("polars_cleaning", polars_cleaning),
        )
        for name, fn in (("ours", ours), *baselines):
            seconds, peak_mib, out_rows = in_subprocess(fn, landing, str(Path(tmp) / name))
            figures[name] = {
                "seconds": round(seconds, 2),
                "rows_per_s": round(n / seconds),
                "peak_rss_mib": round(peak_mib),
                "rows_out": out_rows,
            }
    ours_rps = figures["ours"]["rows_per_s"]
    return {
        "rows": n,
        **figures,
        "speedup_vs_pandas": round(ours_rps / figures["pandas_iterrows"]["rows_per_s"], 2),
        "fraction_of_polars_floor": round(ours_rps / figures["polars_floor"]["rows_per_s"], 4),
        "fraction_of_polars_cleaning": round(ours_rps / figures["polars_cleaning"]["rows_per_s"], 4),
        "target": "speedup_vs_pandas >= 25, fraction_of_polars_floor >= 0.5, peak RSS <= 2x the floor's",
    }
