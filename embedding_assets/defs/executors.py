"""How a run executes its steps (``EA_EXECUTOR``): in the run's own process (the embedded
profile), or fanned out to Celery workers over RabbitMQ (the production profile)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.core.services import ServiceError

EXECUTORS = ("in_process", "celery")


def celery_config(broker_url: str, queue: str) -> dict[str, Any]:
    """The Celery app's settings, shared by the run's orchestrator and the workers. A step's
    message is acknowledged only once the step ends, and a worker that dies hands it back, so a
    step whose worker was killed runs again on another worker."""
    return {
        "broker": broker_url,
        "backend": "rpc://",
        "config_source": {
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "worker_concurrency": 1,  # a worker takes one step at a time: scale out by adding workers
            "broker_connection_timeout": 5,
            "task_default_queue": queue,
        },
    }


def check_executor(settings: Settings) -> None:
    if settings.executor not in EXECUTORS:
        raise ServiceError(
            f"EA_EXECUTOR={settings.executor!r} is not an executor: use one of {', '.join(EXECUTORS)}"
        )


def check_broker(settings: Settings, timeout_s: float = 5.0) -> None:
    """One connection to the broker; a refusal names ``EA_BROKER_URL``."""
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors
        reason = " ".join(str(exc).split())[:200]
        raise ServiceError(
            f"the Celery broker at EA_BROKER_URL={settings.broker_url} cannot be reached: {reason} "
            "(start RabbitMQ, e.g. on 127.0.0.1:5672, or set EA_BROKER_URL; EA_EXECUTOR=in_process needs none)"
        ) from None


def executor_def(settings: Settings) -> dg.ExecutorDefinition:
    check_executor(settings)
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_config(settings.broker_url, settings.celery_queue))  # type: ignore[no-any-return]
    return dg.in_process_executor
