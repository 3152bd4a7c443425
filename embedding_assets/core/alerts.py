"""Alerts: one JSON document per failed run, failed blocking check or late batch, POSTed to a
webhook (``EA_ALERT_WEBHOOK``) with retries, and always written to the log."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from embedding_assets.core.retry import Backoff, retry

WEBHOOK_BACKOFF = Backoff(attempts=3, base_s=0.5, max_s=4.0)
SCHEMA = "embedding_assets.alert/1"


class AlertError(RuntimeError):
    """The webhook did not take an alert after every retry."""


@dataclass(frozen=True)
class Alert:
    kind: str  # run_failure, check_failure or freshness
    title: str  # one line
    detail: str = ""
    run_id: str | None = None
    job: str | None = None
    partition: str | None = None
    asset: str | None = None
    check: str | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def payload(self) -> dict[str, object]:
        return {"schema": SCHEMA, **{k: v for k, v in asdict(self).items() if v is not None}}

    def line(self) -> str:
        where = " ".join(f"{k}={v}" for k, v in (("run", self.run_id), ("partition", self.partition)) if v)
        return f"ALERT {self.kind}: {self.title}" + (f" ({where})" if where else "")


def post(
    url: str, payload: dict[str, object], timeout_s: float = 5.0, backoff: Backoff = WEBHOOK_BACKOFF
) -> int:
    """POST ``payload`` as JSON; a 5xx answer or a connection error is retried. Returns the status."""
    body = json.dumps(payload, sort_keys=True).encode()

    def once() -> int:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "embedding-assets"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            if error.code < 500:  # the hook refuses this alert: asking again would not help
                raise AlertError(f"EA_ALERT_WEBHOOK={url} answered {error.code} {error.reason}") from None
            raise

    try:
        return retry(once, backoff, retry_on=(urllib.error.URLError, TimeoutError, ConnectionError))[0]
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise AlertError(f"EA_ALERT_WEBHOOK={url} did not take the alert: {reason}") from None


def deliver(alert: Alert, webhook: str, log: Callable[[str], None], warn: Callable[[str], None]) -> bool:
    """Log the alert, and POST it when a webhook is set; whether the webhook took it."""
    log(alert.line() + (f"\n{alert.detail}" if alert.detail else ""))
    if not webhook:
        return False
    try:
        post(webhook, alert.payload())
    except AlertError as error:
        warn(str(error))
        return False
    return True
