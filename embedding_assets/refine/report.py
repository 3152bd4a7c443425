"""The quality of one (source, batch): every figure silver's checks judge, in one record.

Built from the batch's silver result, the trailing reference batches and the contract's
thresholds; rendered as markdown for the Dagster UI and as JSON for ``embedding-assets quality``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from embedding_assets.contracts.model import Contract
from embedding_assets.core.lake import Lake
from embedding_assets.refine.quality import length_outliers, missing_rates, text_drift
from embedding_assets.refine.silver import SilverResult
from embedding_assets.refine.tables import DUPLICATE, FIELD_PREFIX, NEAR_DUPLICATE, SUPERSEDED

QUALITY_TABLE = "quality/reports"


REPORT_SCHEMA = pl.Schema(
    {"source": pl.String(), "batch": pl.String(), "report": pl.String(), "passed": pl.Boolean()}
)


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    message: str


@dataclass
class BatchQuality:
    source: str
    batch: str
    contract_version: int
    rows_read: int
    silver_rows: int
    quarantined: int
    quarantine_rate: float
    max_quarantine_rate: float
    by_rule: dict[str, int]
    duplicates: int
    near_duplicates_dropped: int
    near_duplicates_flagged: int
    superseded: int
    versions: dict[str, int]
    migrated: int
    outliers: int
    outlier_rate: float
    missing_rates: dict[str, float]
    reference_batches: list[str]
    drift: dict[str, float] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def blocked(self) -> list[CheckOutcome]:
        return [c for c in self.checks if c.blocking and not c.passed]

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> BatchQuality:
        raw: dict[str, Any] = json.loads(text)
        raw["checks"] = [CheckOutcome(**c) for c in raw.get("checks", [])]
        return BatchQuality(**raw)

    def markdown(self) -> str:
        rows = [
            ("rows read", self.rows_read),
            ("silver rows", self.silver_rows),
            (
                "quarantined",
                f"{self.quarantined} ({self.quarantine_rate:.1%}, max {self.max_quarantine_rate:.0%})",
            ),
            ("duplicates dropped", self.duplicates),
            (
                "near duplicates dropped / flagged",
                f"{self.near_duplicates_dropped} / {self.near_duplicates_flagged}",
            ),
            ("superseded updates", self.superseded),
            ("contract versions", ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items())) or "-"),
            ("rows migrated", self.migrated),
            ("length outliers", f"{self.outliers} ({self.outlier_rate:.1%})"),
        ]
        out = [
            f"**{self.source} / {self.batch}** (contract v{self.contract_version})",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        out += [f"| {k} | {v} |" for k, v in rows]
        if self.by_rule:
            out += ["", "| quarantine rule | rows |", "|---|---|"]
            out += [f"| {rule} | {n} |" for rule, n in self.by_rule.items()]
        if self.missing_rates:
            out += ["", "| field | missing |", "|---|---|"]
            out += [f"| {k} | {v:.1%} |" for k, v in self.missing_rates.items()]
        if self.drift:
            refs = ", ".join(self.reference_batches)
            out += ["", f"| drift vs {refs} | value |", "|---|---|"]
            out += [f"| {k} | {v:.4f} |" for k, v in sorted(self.drift.items())]
        out += ["", "| check | result |", "|---|---|"]
        out += [
            f"| {c.name} | {'pass' if c.passed else ('BLOCK' if c.blocking else 'warn')}: {c.message} |"
            for c in self.checks
        ]
        return "\n".join(out)


def silver_checks(contract: Contract) -> list[tuple[str, bool, str]]:
    """(name, blocking, description) of silver's checks; the contract decides which ones block."""
    q = contract.quality
    return [
        ("silver_schema", True, "Rows conform to the pandera silver schema."),
        ("rows_accounted", True, "Rows read = silver + quarantined + duplicates dropped."),
        ("contract_compatible", True, "Every row is, or migrates to, the current contract version."),
        ("quarantine_rate", True, f"At most {q.max_quarantine_rate:.0%} of the rows are quarantined."),
        ("length_outliers", q.outlier_block, "Few texts have an outlying length (robust z-score)."),
        ("missing_values", False, "Optional fields are filled at least as often as the contract expects."),
        ("drift", q.drift.block, "The batch looks like the trailing reference batches (PSI, KS)."),
    ]


def _categorical(contract: Contract) -> list[str]:
    """Fields whose values are categories: those with allowed values, and metadata text fields."""
    names = [n for n, s in contract.fields.items() if s.allowed is not None]
    names += [m for m in contract.metadata if contract.field_spec(m).type in ("str", "bool")]
    return [f"{FIELD_PREFIX}{n}" for n in dict.fromkeys(names)]


def assess(
    contract: Contract,
    result: SilverResult,
    batch: str,
    reference: pl.DataFrame,
    *,
    schema_failures: list[str] | None = None,
) -> BatchQuality:
    """Every quality figure and check outcome of one batch. ``reference`` holds the silver rows of
    the trailing reference batches (the contract's ``drift.reference_batches`` before this one)."""
    rules = contract.quality
    silver = result.silver
    live = silver.filter(~pl.col("deleted"))
    lengths = live["text"].str.len_chars().to_numpy() if live.height else np.zeros(0)
    outlier_mask = (
        length_outliers([int(n) for n in lengths], max_z=rules.outlier_max_z)
        if live.height
        else np.zeros(0, bool)
    )
    outliers = int(outlier_mask.sum())
    optional = [n for n, s in contract.fields.items() if not s.required]
    present = [n for n in optional if f"{FIELD_PREFIX}{n}" in live.columns]
    missing = {
        n: round(v, 4)
        for n, v in missing_rates(live.select([f"{FIELD_PREFIX}{n}" for n in present]).rename(
            {f"{FIELD_PREFIX}{n}": n for n in present}
        ), present).items()
    }  # fmt: skip
    by_rule = {str(r): int(n) for r, n in result.reasons().iter_rows()}
    rejected = result.rejected
    q = BatchQuality(
        source=contract.source,
        batch=batch,
        contract_version=contract.version,
        rows_read=result.rows_read,
        silver_rows=silver.height,
        quarantined=result.quarantine.height,
        quarantine_rate=round(result.quarantine.height / result.rows_read, 6) if result.rows_read else 0.0,
        max_quarantine_rate=rules.max_quarantine_rate,
        by_rule=by_rule,
        duplicates=int((rejected["kind"] == DUPLICATE).sum()),
        near_duplicates_dropped=int((rejected["kind"] == NEAR_DUPLICATE).sum()),
        near_duplicates_flagged=result.near_duplicates_flagged,
        superseded=int((rejected["kind"] == SUPERSEDED).sum()),
        versions={str(k): v for k, v in result.versions.items()},
        migrated=result.migrated,
        outliers=outliers,
        outlier_rate=round(outliers / live.height, 6) if live.height else 0.0,
        missing_rates=missing,
        reference_batches=sorted(set(reference["batch"].to_list())) if reference.height else [],
    )
    ref_live = reference.filter(~pl.col("deleted")) if reference.height else reference
    if ref_live.height and live.height:
        cats = [c for c in _categorical(contract) if c in live.columns]
        figures = text_drift(
            ref_live.select("text", *[pl.col(c) if c in ref_live.columns else pl.lit(None, pl.String).alias(c) for c in cats]),
            live.select("text", *cats),
            categorical=cats,
        )  # fmt: skip
        # rounded: the figures are sums of floats, equal runs must store equal reports
        q.drift = {"psi_length": round(figures.psi_length, 6), "ks_length": round(figures.ks_length, 6)}
        q.drift.update(
            {f"psi_{c.removeprefix(FIELD_PREFIX)}": round(v, 6) for c, v in figures.psi_categorical.items()}
        )
    _judge(q, contract, result, schema_failures or [])
    return q


def _judge(q: BatchQuality, contract: Contract, result: SilverResult, schema_failures: list[str]) -> None:
    rules = contract.quality
    blocks = {name: blocking for name, blocking, _ in silver_checks(contract)}
    accounting = (
        f"read {result.rows_read} = silver {result.silver.height} + quarantined {result.quarantine.height}"
        f" + duplicates {result.duplicates_dropped}"
    )
    rate_ok = q.quarantine_rate <= rules.max_quarantine_rate
    rule_list = ", ".join(f"{r} ({n} rows)" for r, n in q.by_rule.items()) or "none"
    missing_over = {
        n: v for n, v in q.missing_rates.items() if (t := rules.missing_threshold(n)) is not None and v > t
    }
    psi = max((v for k, v in q.drift.items() if k.startswith("psi_")), default=0.0)
    ks = q.drift.get("ks_length", 0.0)
    drift_problems = ([f"PSI {psi:.3f} > {rules.drift.max_psi}"] if psi > rules.drift.max_psi else []) + (
        [f"KS {ks:.3f} > {rules.drift.max_ks}"] if ks > rules.drift.max_ks else []
    )
    q.checks = [
        CheckOutcome(
            "silver_schema",
            not schema_failures,
            blocks["silver_schema"],
            "; ".join(schema_failures[:3]) or "rows conform to the pandera silver schema",
        ),
        CheckOutcome("rows_accounted", result.accounted, blocks["rows_accounted"], accounting),
        CheckOutcome(
            "contract_compatible",
            not result.breaking,
            blocks["contract_compatible"],
            "; ".join(result.breaking) or f"every row is (or migrates to) contract v{contract.version}",
        ),
        CheckOutcome(
            "quarantine_rate",
            rate_ok,
            blocks["quarantine_rate"],
            f"{q.quarantined} of {q.rows_read} rows quarantined ({q.quarantine_rate:.1%}, "
            f"max {rules.max_quarantine_rate:.0%}); rules: {rule_list}",
        ),
        CheckOutcome(
            "length_outliers",
            q.outlier_rate <= rules.outlier_max_rate,
            blocks["length_outliers"],
            f"{q.outliers} texts with |robust z| > {rules.outlier_max_z} ({q.outlier_rate:.1%}, "
            f"max {rules.outlier_max_rate:.0%})",
        ),
        CheckOutcome(
            "missing_values",
            not missing_over,
            blocks["missing_values"],
            ", ".join(f"{n} {v:.0%} > {rules.missing_threshold(n):.0%}" for n, v in missing_over.items())
            or "missing-value rates within the contract's thresholds",
        ),
        CheckOutcome(
            "drift",
            not drift_problems,
            blocks["drift"],
            "; ".join(drift_problems)
            or (
                f"within thresholds vs {len(q.reference_batches)} reference batches"
                if q.drift
                else "no reference yet"
            ),
        ),
    ]


def load_reports(lake: Lake, batch: str | None = None, source: str | None = None) -> list[BatchQuality]:
    """The stored quality reports (one per source and batch), oldest batch first."""
    where = pl.lit(True)
    if batch:
        where &= pl.col("batch") == batch
    if source:
        where &= pl.col("source") == source
    rows = lake.read(QUALITY_TABLE, REPORT_SCHEMA, where).sort("batch", "source")
    return [BatchQuality.from_json(r) for r in rows["report"].to_list()]
