"""pandera schemas for the silver and gold contracts (polars backend, lazy validation)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl


class SilverDocuments(pa.DataFrameModel):
    """Typed canonical rows of one source and batch."""

    doc_id: str = pa.Field(nullable=False, unique=True, str_matches=r"^[A-Za-z0-9._-]+:.+$")
    source: str = pa.Field(nullable=False)
    source_id: str = pa.Field(nullable=False, str_length={"min_value": 1})
    batch: str = pa.Field(nullable=False)
    title: str = pa.Field(nullable=True)
    text: str = pa.Field(nullable=False)
    updated_at: pl.Datetime(time_unit="us", time_zone="UTC") = pa.Field(nullable=True)  # type: ignore[valid-type]
    deleted: bool = pa.Field(nullable=False)
    metadata: str = pa.Field(nullable=False)
    content_hash: str = pa.Field(nullable=False, str_length={"min_value": 64, "max_value": 64})

    @pa.dataframe_check
    def live_rows_have_text(cls, data: pa.PolarsData) -> pl.LazyFrame:  # type: ignore[misc]
        return data.lazyframe.select(
            pl.col("deleted") | (pl.col("text").str.strip_chars().str.len_chars() > 0)
        )

    class Config:
        strict = False
        coerce = False


def silver_failures(frame: pl.DataFrame) -> list[str]:
    """Every schema failure as one line; empty when the frame conforms."""
    try:
        SilverDocuments.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return [
            f"{row.get('check')} on {row.get('column')}: {row.get('failure_case')}"
            for row in pl.DataFrame(cases).head(20).iter_rows(named=True)
        ]
    return []
