"""9. Scale on the production profile: the same batches synced with 2 Celery workers against 1
(Postgres instance, S3 on moto, RabbitMQ), each from an empty database and bucket."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from embedding_assets.prod import create_database, start_moto, start_workers

REPO = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432"


def _landing(root: Path, batches: int) -> None:
    """``batches`` deliveries of the three sample sources, alternating the sample's two batches."""
    shutil.copytree(REPO / "data" / "contracts", root / "contracts")
    samples = sorted((REPO / "data" / "landing" / "helpdesk").iterdir())
    for b in range(batches):
        name = f"2026-12-{b + 1:02d}"
        for source in ("catalog", "guides", "helpdesk"):
            shutil.copytree(REPO / "data" / "landing" / source / samples[b % len(samples)].name,
                            root / "landing" / source / name)  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sync(workers: int, batches: int, tmp: Path, moto: str) -> tuple[float, int]:
    import boto3

    root, bucket = tmp / f"w{workers}", f"ea-bench-{uuid.uuid4().hex[:8]}"
    _landing(root, batches)
    db = f"{PG}/ea_bench_{uuid.uuid4().hex[:8]}"
    create_database(db)
    boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)  # fmt: skip
    (root / "dagster").mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EA_", "AWS_", "DAGSTER_"))}
    env.update(
        EA_DATA_DIR=str(root), EA_EMBEDDER="hashing", EA_LANDING_SETTLE_S="0", DAGSTER_HOME=str(root / "dagster"),
        DAGSTER_PG_URL=db, EA_LAKE_URI=f"s3://{bucket}/lake", EA_LANCEDB_URI=f"s3://{bucket}/lancedb",
        AWS_ENDPOINT_URL=moto, AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1", EA_EXECUTOR="celery", EA_CELERY_QUEUE=f"ea-bench-{uuid.uuid4().hex[:8]}",
        LANCEDB_LOG="error",
    )  # fmt: skip
    pids = start_workers(workers, root / "workers", env, name=f"bench-{workers}")
    try:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "embedding_assets.cli", "sync", "--jobs", "4"],
                             env=env, capture_output=True, text=True, timeout=3600)  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    if out.returncode != 0:
        raise RuntimeError(
            f"sync with {workers} worker(s) failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        )
    logs = "".join(p.read_text(errors="replace") for p in (root / "workers").glob("*.log"))
    return seconds, logs.count("succeeded")


def run(smoke: bool) -> dict[str, Any]:
    batches = 2 if smoke else 20
    with tempfile.TemporaryDirectory() as tmp:
        moto = f"http://127.0.0.1:{_free_port()}"
        pid = start_moto(moto, Path(tmp), dict(os.environ))
        try:
            one, steps = _sync(1, batches, Path(tmp), moto)
            two, _ = _sync(2, batches, Path(tmp), moto)
        finally:
            if pid is not None:
                os.killpg(pid, signal.SIGTERM)
    return {
        "batches": batches,
        "steps": steps,
        "seconds": {"1": round(one, 1), "2": round(two, 1)},
        "speedup": round(one / two, 2),
        "note": "each worker takes one step at a time (worker_concurrency 1); sync --jobs 4",
    }
