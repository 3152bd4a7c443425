"""``python -m embedding_assets.prod up|down``: bring up the production profile's local services
(what ``make prod-up`` and ``make prod-down`` run). ``up`` creates the Dagster database when it is
missing, starts moto's S3 server on 127.0.0.1:5555 when ``AWS_ENDPOINT_URL`` points there, creates
the buckets that ``EA_LAKE_URI`` and ``EA_LANCEDB_URI`` name, puts ``deploy/dagster.yaml`` in
``$DAGSTER_HOME`` and starts ``EA_CELERY_WORKERS`` (2) Celery workers over ``EA_BROKER_URL``. The ids of the processes it starts go under ``data/prod/``; ``down`` stops
those, and nothing else. Against real S3, leave ``AWS_ENDPOINT_URL`` unset: no server is started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

from embedding_assets.core.services import (
    ServiceError,
    aws_region,
    libpq_url,
    pg_url,
    redacted,
    s3_buckets,
    sqlalchemy_url,
)

REPO = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    return Path(os.environ.get("EA_PROD_STATE", "data/prod")).resolve()


def create_database(url: str, reset: bool = False) -> bool:
    """Create the URL's database on its server when it is missing (or drop it first, ``reset``);
    True when it was created."""
    import psycopg2

    plain = urlsplit(libpq_url(url))
    name = plain.path.lstrip("/") or "postgres"
    try:
        conn = psycopg2.connect(plain._replace(path="/postgres").geturl(), connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceError(f"DAGSTER_PG_URL={redacted(url)}: {' '.join(str(exc).split())}") from None
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with conn.cursor() as cur:
            if reset:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        conn.close()


def _answering(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def start_moto(endpoint: str, logs: Path, env: dict[str, str] | None = None) -> int | None:
    """moto's S3 server at a loopback endpoint (its pid), unless something already answers there."""
    parts = urlsplit(endpoint)
    if parts.hostname not in ("127.0.0.1", "localhost") or _answering(endpoint):
        return None
    moto = Path(sys.executable).with_name("moto_server")
    with (logs / "moto.log").open("ab") as out:
        proc = subprocess.Popen(
            [str(moto), "-H", parts.hostname, "-p", str(parts.port or 80)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not _answering(endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"moto's S3 server did not start at {endpoint}; see {logs / 'moto.log'}")
        time.sleep(0.2)
    return proc.pid


def create_buckets(uris: dict[str, str]) -> list[str]:
    import boto3

    s3 = boto3.client("s3", region_name=aws_region())
    names = [b.name for b in s3_buckets(**uris)]
    have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for name in [n for n in names if n not in have]:
        s3.create_bucket(Bucket=name)
    return names


def write_worker_config(path: Path, broker_url: str, queue: str) -> Path:
    """The Celery settings the workers share with every run's orchestrator."""
    import yaml

    from embedding_assets.defs.executors import celery_config

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"execution": {"config": celery_config(broker_url, queue)}}))
    return path


def start_workers(n: int, state: Path, env: dict[str, str] | None = None, name: str = "worker") -> list[int]:
    """``n`` Celery workers (``dagster-celery worker start``), each in its own process group and
    with its own log under ``state``; they read the pipeline's settings from ``env``."""
    bin_dir = Path(sys.executable).parent
    base = dict(env if env is not None else os.environ)
    base["PATH"] = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"  # it runs `celery` from PATH
    base["DAGSTER_PG_URL"] = sqlalchemy_url(base.get("DAGSTER_PG_URL") or pg_url())  # on psycopg2
    from embedding_assets.config import Settings

    defaults = Settings.for_root(state)
    broker = base.get("EA_BROKER_URL", "").strip() or defaults.broker_url
    queue = base.get("EA_CELERY_QUEUE", "").strip() or defaults.celery_queue
    config = write_worker_config(state / "celery.yaml", broker, queue)
    pids = []
    for i in range(1, n + 1):
        with (state / f"{name}-{i}.log").open("ab") as out:
            proc = subprocess.Popen(
                [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                 "-y", str(config), "-q", queue, "--name", f"{name}-{i}"],
                stdout=out, stderr=subprocess.STDOUT, env=base, start_new_session=True,
            )  # fmt: skip
        pids.append(proc.pid)
    deadline = time.monotonic() + 90
    for i in range(1, n + 1):
        while "ready." not in (state / f"{name}-{i}.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                for pid in pids:  # none is left behind to take a later profile's steps
                    with suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                raise ServiceError(f"Celery worker {i} did not start; see {state / f'{name}-{i}.log'}")
            time.sleep(0.3)
    return pids


def up() -> list[str]:
    """What ``make prod-up`` reports, one line each."""
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    said = []
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    pid = start_moto(endpoint, state) if endpoint else None
    if pid is not None:
        (state / "moto.pid").write_text(str(pid))
        said.append(f"moto S3 server started at {endpoint} (pid {pid}); it keeps objects in memory")
    # A fresh moto server holds an empty lake: a Dagster database that remembers an older one
    # would call every table damaged, so it starts afresh with it.
    created = create_database(pg_url(), reset=pid is not None)
    said.append(f"database {'created' if created else 'exists'}: {redacted(pg_url())}")
    uris = {k: os.environ.get(k, "") for k in ("EA_LAKE_URI", "EA_LANCEDB_URI")}
    said.append(f"buckets: {', '.join(create_buckets(uris)) or 'none (the lake is local)'}")
    home = Path(os.environ.get("DAGSTER_HOME", str(state / "dagster")))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    said.append(f"Dagster instance: {home / 'dagster.yaml'} (Postgres)")
    from embedding_assets.config import Settings
    from embedding_assets.defs.executors import check_broker

    check_broker(Settings.from_env())
    n = int(os.environ.get("EA_CELERY_WORKERS", "2"))
    for i, worker in enumerate(start_workers(n, state), start=1):
        (state / f"worker-{i}.pid").write_text(str(worker))
    said.append(f"{n} Celery workers started over {Settings.from_env().broker_url} (logs in {state})")
    return said


def down() -> list[str]:
    said = []
    for pidfile in sorted(state_dir().glob("*.pid")):
        pid = int(pidfile.read_text().strip() or 0)
        try:
            os.killpg(pid, signal.SIGTERM)
            said.append(f"stopped {pidfile.stem} (pid {pid})")
        except ProcessLookupError:
            said.append(f"{pidfile.stem} (pid {pid}) was not running")
        pidfile.unlink()
    return said or ["nothing to stop"]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args not in (["up"], ["down"]):
        print("usage: python -m embedding_assets.prod up|down", file=sys.stderr)
        return 2
    try:
        for line in up() if args == ["up"] else down():
            print(line)
    except ServiceError as exc:
        print(f"prod-{args[0]}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
