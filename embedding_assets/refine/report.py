"""The quality of one (source, batch): every figure silver's checks judge, in one record.

Built from the batch's silver result, the trailing reference batches and the contract's
thresholds; rendered as markdown for the Dagster UI and as JSON for ``embedding-assets quality``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from embedding_assets.contracts.model import Contract, DriftRules, QualityRules
from embedding_assets.core.lake import Lake
from embedding_assets.refine.migrations import UNKNOWN_VERSION
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
    # What the check measured, by name, for the Dagster UI to plot (int or float values only).
    figures: dict[str, float] = field(default_factory=dict)


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

    @property
    def duplicate_rate(self) -> float:
        """Exact duplicates dropped per row read (0.0 when no rows were read)."""
        return round(self.duplicates / self.rows_read, 6) if self.rows_read else 0.0

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> BatchQuality:
        raw: dict[str, Any] = json.loads(text)
        raw["checks"] = [CheckOutcome(**c) for c in raw.get("checks", [])]  # figures: absent before
        return BatchQuality(**raw)

    def markdown(self) -> str:
        out = [f"**{_cell(self.source)} / {_cell(self.batch)}** (contract v{self.contract_version})", ""]
        out += _table(("figure", "value"), self._figure_rows())
        sections: list[tuple[tuple[str, str], Sequence[tuple[str, object]]]] = [
            (("quarantine rule", "rows"), list(self.by_rule.items())),
            (("field", "missing"), [(k, f"{v:.1%}") for k, v in self.missing_rates.items()]),
            (
                (f"drift vs {', '.join(self.reference_batches)}", "value"),
                [(k, f"{v:.4f}") for k, v in sorted(self.drift.items())],
            ),
        ]
        for header, rows in sections:
            if rows:
                out += ["", *_table(header, rows)]
        verdicts = [
            (c.name, f"{'pass' if c.passed else ('BLOCK' if c.blocking else 'warn')}: {c.message}")
            for c in self.checks
        ]
        out += ["", *_table(("check", "result"), verdicts)]
        return "\n".join(out)

    def _figure_rows(self) -> list[tuple[str, object]]:
        return [
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
            ("contract versions", self._versions_text()),
            ("rows migrated", self.migrated),
            ("length outliers", f"{self.outliers} ({self.outlier_rate:.1%})"),
        ]

    def _versions_text(self) -> str:
        """Rows per contract version, those whose version could not be read last."""
        unreadable = self.versions.get(str(UNKNOWN_VERSION))
        parts = [f"v{v}: {n}" for v, n in sorted(self.versions.items()) if v != str(UNKNOWN_VERSION)]
        if unreadable is not None:
            parts.append(f"unreadable: {unreadable}")
        return ", ".join(parts) or "-"


def _counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in its number: "1 row", "2 rows", "0 reference batches"."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


_NEWLINE = re.compile(r"\r\n?|\n")
_PIPE = re.compile(r"(\\*)\|")


def _cell(value: object) -> str:
    """``value`` as text that stays inside one markdown table cell: newlines become spaces and
    pipes are escaped; backslashes right before a pipe are doubled, or they would escape the escape."""
    text = _NEWLINE.sub(" ", str(value))
    return _PIPE.sub(lambda m: m.group(1) * 2 + "\\|", text)


def _table(header: tuple[str, str], rows: Sequence[tuple[str, object]]) -> list[str]:
    """A two-column markdown table, every cell escaped."""
    lines = [f"| {_cell(header[0])} | {_cell(header[1])} |", "|---|---|"]
    return lines + [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]


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
    silver = result.silver
    live = silver.filter(~pl.col("deleted"))
    outliers = _outlier_count(live, contract.quality.outlier_max_z)
    rejected = result.rejected
    q = BatchQuality(
        source=contract.source,
        batch=batch,
        contract_version=contract.version,
        rows_read=result.rows_read,
        silver_rows=silver.height,
        quarantined=result.quarantine.height,
        quarantine_rate=round(result.quarantine.height / result.rows_read, 6) if result.rows_read else 0.0,
        max_quarantine_rate=contract.quality.max_quarantine_rate,
        by_rule={str(r): int(n) for r, n in result.reasons().iter_rows()},
        duplicates=int((rejected["kind"] == DUPLICATE).sum()),
        near_duplicates_dropped=int((rejected["kind"] == NEAR_DUPLICATE).sum()),
        near_duplicates_flagged=result.near_duplicates_flagged,
        superseded=int((rejected["kind"] == SUPERSEDED).sum()),
        versions={str(k): v for k, v in result.versions.items()},
        migrated=result.migrated,
        outliers=outliers,
        outlier_rate=round(outliers / live.height, 6) if live.height else 0.0,
        missing_rates=_missing_rates(contract, live),
        reference_batches=sorted(set(reference["batch"].to_list())) if reference.height else [],
    )
    q.drift = _drift(contract, live, reference)
    _judge(q, contract, result, schema_failures or [])
    return q


def _outlier_count(live: pl.DataFrame, max_z: float) -> int:
    """Live texts whose length is an outlier (robust z-score of the log length over ``max_z``)."""
    if not live.height:
        return 0
    lengths = live["text"].str.len_chars().to_numpy()
    return int(length_outliers([int(n) for n in lengths], max_z=max_z).sum())


def _missing_rates(contract: Contract, live: pl.DataFrame) -> dict[str, float]:
    """Missing-value rate of each optional field silver has, rounded to 4 places."""
    optional = [n for n, s in contract.fields.items() if not s.required]
    present = [n for n in optional if f"{FIELD_PREFIX}{n}" in live.columns]
    fields = live.select([f"{FIELD_PREFIX}{n}" for n in present]).rename(
        {f"{FIELD_PREFIX}{n}": n for n in present}
    )
    return {n: round(v, 4) for n, v in missing_rates(fields, present).items()}


def _drift(contract: Contract, live: pl.DataFrame, reference: pl.DataFrame) -> dict[str, float]:
    """PSI and KS of text length and PSI of each categorical field against the reference's live
    rows; empty when either side has none."""
    ref_live = reference.filter(~pl.col("deleted")) if reference.height else reference
    if not (ref_live.height and live.height):
        return {}
    cats = [c for c in _categorical(contract) if c in live.columns]
    figures = text_drift(
        ref_live.select("text", *[pl.col(c) if c in ref_live.columns else pl.lit(None, pl.String).alias(c) for c in cats]),
        live.select("text", *cats),
        categorical=cats,
    )  # fmt: skip
    # rounded: the figures are sums of floats, equal runs must store equal reports
    drift = {"psi_length": round(figures.psi_length, 6), "ks_length": round(figures.ks_length, 6)}
    drift.update(
        {f"psi_{c.removeprefix(FIELD_PREFIX)}": round(v, 6) for c, v in figures.psi_categorical.items()}
    )
    return drift


def _judge(q: BatchQuality, contract: Contract, result: SilverResult, schema_failures: list[str]) -> None:
    blocks = {name: blocking for name, blocking, _ in silver_checks(contract)}
    q.checks = [
        CheckOutcome(
            "silver_schema",
            not schema_failures,
            blocks["silver_schema"],
            "; ".join(schema_failures[:3]) or "rows conform to the pandera silver schema",
            {"schema_failures": len(schema_failures)},
        ),
        _accounting_check(q, result, blocks["rows_accounted"]),
        CheckOutcome(
            "contract_compatible",
            not result.breaking,
            blocks["contract_compatible"],
            "; ".join(result.breaking) or f"every row is (or migrates to) contract v{contract.version}",
            {"breaking_changes": len(result.breaking)},
        ),
        _quarantine_check(q, contract.quality, blocks["quarantine_rate"]),
        _outlier_check(q, contract.quality, blocks["length_outliers"]),
        _missing_check(q, contract.quality, blocks["missing_values"]),
        _drift_check(q, contract.quality.drift, blocks["drift"]),
    ]


def _accounting_check(q: BatchQuality, result: SilverResult, blocking: bool) -> CheckOutcome:
    # duplicates_dropped is every deduplication loser, so the first four figures add up;
    # duplicate_rate counts exact duplicates only, as the report's "duplicates dropped" row does.
    figures = {
        "rows_read": result.rows_read,
        "silver_rows": result.silver.height,
        "quarantined": result.quarantine.height,
        "duplicates_dropped": result.duplicates_dropped,
        "duplicate_rate": q.duplicate_rate,
    }
    message = (
        f"read {result.rows_read} = silver {result.silver.height} + quarantined {result.quarantine.height}"
        f" + duplicates {result.duplicates_dropped}"
    )
    return CheckOutcome("rows_accounted", result.accounted, blocking, message, figures)


def _quarantine_check(q: BatchQuality, rules: QualityRules, blocking: bool) -> CheckOutcome:
    rule_list = ", ".join(f"{r} ({_counted(n, 'row')})" for r, n in q.by_rule.items()) or "none"
    message = (
        f"{q.quarantined} of {_counted(q.rows_read, 'row')} quarantined ({q.quarantine_rate:.1%}, "
        f"max {rules.max_quarantine_rate:.0%}); rules: {rule_list}"
    )
    figures = {
        "quarantine_rate": q.quarantine_rate,
        "max_quarantine_rate": float(rules.max_quarantine_rate),
        "quarantined": q.quarantined,
    }
    return CheckOutcome(
        "quarantine_rate", q.quarantine_rate <= rules.max_quarantine_rate, blocking, message, figures
    )


def _outlier_check(q: BatchQuality, rules: QualityRules, blocking: bool) -> CheckOutcome:
    message = (
        f"{_counted(q.outliers, 'text')} with |robust z| > {rules.outlier_max_z} ({q.outlier_rate:.1%}, "
        f"max {rules.outlier_max_rate:.0%})"
    )
    figures = {"outlier_rate": q.outlier_rate, "outliers": q.outliers}
    return CheckOutcome(
        "length_outliers", q.outlier_rate <= rules.outlier_max_rate, blocking, message, figures
    )


def _missing_check(q: BatchQuality, rules: QualityRules, blocking: bool) -> CheckOutcome:
    over = {
        n: v for n, v in q.missing_rates.items() if (t := rules.missing_threshold(n)) is not None and v > t
    }
    message = (
        ", ".join(f"{n} {v:.0%} > {rules.missing_threshold(n):.0%}" for n, v in over.items())
        or "missing-value rates within the contract's thresholds"
    )
    figures = {"max_missing_rate": float(max(q.missing_rates.values(), default=0.0))}
    return CheckOutcome("missing_values", not over, blocking, message, figures)


def _drift_check(q: BatchQuality, rules: DriftRules, blocking: bool) -> CheckOutcome:
    psi = max((v for k, v in q.drift.items() if k.startswith("psi_")), default=0.0)
    ks = q.drift.get("ks_length", 0.0)
    problems = ([f"PSI {psi:.3f} > {rules.max_psi}"] if psi > rules.max_psi else []) + (
        [f"KS {ks:.3f} > {rules.max_ks}"] if ks > rules.max_ks else []
    )
    refs = _counted(len(q.reference_batches), "reference batch", "reference batches")
    message = "; ".join(problems) or (f"within thresholds vs {refs}" if q.drift else "no reference yet")
    return CheckOutcome("drift", not problems, blocking, message, dict(q.drift))


def load_reports(lake: Lake, batch: str | None = None, source: str | None = None) -> list[BatchQuality]:
    """The stored quality reports (one per source and batch), oldest batch first."""
    where = pl.lit(True)
    if batch:
        where &= pl.col("batch") == batch
    if source:
        where &= pl.col("source") == source
    rows = lake.read(QUALITY_TABLE, REPORT_SCHEMA, where).sort("batch", "source")
    return [BatchQuality.from_json(r) for r in rows["report"].to_list()]
