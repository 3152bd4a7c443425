"""The local Dagster instance, and runs whose process died."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from importlib.resources import files
from pathlib import Path

import dagster as dg

from embedding_assets.config import Settings
from embedding_assets.core.services import (
    PG_URL_VAR,
    check_postgres,
    check_settings_storage,
    pg_url,
    sqlalchemy_url,
    uses_postgres,
)
from embedding_assets.defs.executors import check_broker, check_executor

log = logging.getLogger(__name__)
HOST_TAG, PID_TAG, PID_START_TAG = "ea/host", "ea/pid", "ea/pid_start"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def embedded_instance_yaml() -> str:
    """The embedded profile's instance settings, shipped in the package (``instance.yaml``)."""
    return (files("embedding_assets") / "instance.yaml").read_text(encoding="utf-8")


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """The Dagster instance under ``$DAGSTER_HOME`` (default ``data/dagster``): SQLite there, or
    the Postgres database of ``DAGSTER_PG_URL`` when its ``dagster.yaml`` says so (``deploy/``).
    The services the settings name are checked first, so a command fails before it writes."""
    check_executor(check_settings_storage(settings))
    if settings.executor == "celery":
        check_broker(settings)
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(embedded_instance_yaml())
    os.environ["DAGSTER_HOME"] = str(home)
    if uses_postgres(config.read_text(encoding="utf-8")):
        check_postgres(pg_url())
        os.environ[PG_URL_VAR] = sqlalchemy_url(pg_url())
    # Two processes creating a fresh SQLite instance at once both stamp its schema version and
    # leave it unusable; an exclusive lock serialises the first-time set-up.
    with (home / ".instance.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            # SQLite creates the cross-run index shard only when its file is missing; a process
            # killed between creating the file and its tables leaves a file without tables, which
            # Dagster never repairs before it checks for them. Opening the shard's connection runs
            # Dagster's own idempotent set-up (create missing tables, stamp the schema version).
            index_connection = getattr(instance.event_log_storage, "index_connection", None)
            if index_connection is not None:
                with index_connection():
                    pass
            return instance
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not mistaken for the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tags() -> dict[str, str]:
    """Tags that let a later sync on this host tell whether the run's process is still alive."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: _process_start(pid)}


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _process_start(pid) == start


def reap_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs started in-process on this host by a process that is gone (killed, crashed): mark them
    failed and free their concurrency slots, so their batches are neither 'busy' forever nor
    holding the embedding pool. A failed run's batch is asked for again."""
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE, tags={HOST_TAG: socket.gethostname()}))
    reaped = []
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if not pid or _alive(pid, run.tags.get(PID_START_TAG, "")):
            continue
        instance.report_run_failed(run, f"the process running it (pid {pid}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning(
            "run %s (batch %s) lost its process; marked failed", run.run_id, run.tags.get("dagster/partition")
        )
        reaped.append(run.run_id)
    return reaped
