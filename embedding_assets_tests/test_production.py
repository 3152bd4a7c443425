"""The production profile on real services: the Dagster instance in this machine's PostgreSQL
(127.0.0.1:5432), the lake and the LanceDB index on S3 (moto's server, started here). The same
sample gives the same lake, the same index and the same data versions as the embedded profile;
a misconfigured service is one line that names its setting, and nothing is written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from embedding_assets.core.services import sqlalchemy_url
from embedding_assets.defs.sync import sync
from embedding_assets.embed.embedder import model_slug
from embedding_assets.prod import create_database, start_moto, start_workers
from embedding_assets_tests.conftest import (
    CORE_SOURCES,
    HASHING,
    REPO,
    VOLATILE,
    copy_sample,
    index_snapshot,
    lake_snapshot,
    make_pipeline,
    materializations,
)

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.xdist_group("services")]
PG = "postgresql://postgres@127.0.0.1:5432"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
B1, B2 = "2026-11-01", "2026-11-08"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _moto(logs: Path, **env: str) -> Iterator[str]:
    """moto's S3 server on a free loopback port (its endpoint), stopped on exit."""
    url = f"http://127.0.0.1:{_free_port()}"
    pid = start_moto(url, logs, {**os.environ, **env})
    assert pid is not None, f"something already answers at {url}"
    try:
        yield url
    finally:
        os.killpg(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _moto(tmp_path_factory.mktemp("moto")) as url:
        yield url


def _aws(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
    }  # fmt: skip


def _s3(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = f"ea-{uuid.uuid4().hex[:12]}"
    _s3(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    import psycopg2

    url = f"{PG}/ea_test_{uuid.uuid4().hex[:10]}"
    assert create_database(url)
    yield url
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


@dataclass(frozen=True)
class Embedded:
    """The sample synced once on the embedded profile: what the production profile must equal."""

    root: Path
    lake: dict[str, pl.DataFrame]
    index: pl.DataFrame
    data_versions: dict[str, str]
    runs: int


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Embedded:
    root = tmp_path_factory.mktemp("embedded") / "data"
    copy_sample(root, CORE_SOURCES)
    (root.parent / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(root.parent / "dagster")) as instance:
        summary = sync(instance, make_pipeline(root), echo=lambda _: None)
        assert summary.ok, summary.render()
        return Embedded(
            root, lake_snapshot(root), index_snapshot(root), _data_versions(instance), summary.runs
        )


def _production(
    tmp_path: Path, endpoint: str, bucket: str, pg_url: str, executor: str = "celery"
) -> tuple[Path, dict[str, str]]:
    """A copy of the sample with the production profile's instance file, and its environment."""
    data = tmp_path / "prod"
    copy_sample(data, CORE_SOURCES)
    (data / "dagster").mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", data / "dagster" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EA_", "AWS_", "DAGSTER_"))}
    env.update(
        _aws(endpoint), EA_DATA_DIR=str(data), EA_EMBEDDER="hashing", EA_LANDING_SETTLE_S="0",
        DAGSTER_HOME=str(data / "dagster"), DAGSTER_PG_URL=pg_url, EA_LAKE_URI=f"s3://{bucket}/lake",
        EA_LANCEDB_URI=f"s3://{bucket}/lancedb", LANCEDB_LOG="error", EA_EXECUTOR=executor,
        EA_BROKER_URL=BROKER, HF_HUB_OFFLINE="1", EA_CELERY_QUEUE=f"ea-test-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    return data, env


@contextmanager
def _workers(state: Path, envs: list[dict[str, str]]) -> Iterator[list[int]]:
    """One Celery worker per environment (their pids), killed with their children on exit."""
    state.mkdir(parents=True, exist_ok=True)
    tag, pids = uuid.uuid4().hex[:6], []
    try:
        for i, env in enumerate(envs):
            pids += start_workers(1, state / f"w{i}", env, name=f"test-{tag}-{i}")
        yield pids
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", *args],
        env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip


def _s3_lake(endpoint: str, bucket: str) -> dict[str, pl.DataFrame]:
    """Every Delta table under ``s3://bucket/lake``, as :func:`lake_snapshot` reads a local lake."""
    keys = _s3(endpoint).list_objects_v2(Bucket=bucket, Prefix="lake/", MaxKeys=10_000)["Contents"]
    tables = sorted({k["Key"].split("/_delta_log/")[0] for k in keys if "/_delta_log/" in k["Key"]})
    out = {}
    for table in tables:
        frame = pl.read_delta(f"s3://{bucket}/{table}", storage_options=_aws(endpoint))
        frame = frame.drop([c for c in frame.columns if c in VOLATILE])
        sortable = [c for c, t in frame.schema.items() if t not in (pl.List(pl.Float32), pl.Binary)]
        out[table.removeprefix("lake/")] = frame.sort(sortable)
    return out


def _s3_index(endpoint: str, bucket: str) -> pl.DataFrame:
    import lancedb

    db = lancedb.connect(f"s3://{bucket}/lancedb", storage_options=_aws(endpoint))
    rows = db.open_table(f"chunks__{model_slug(HASHING)}").to_arrow()
    return pl.from_arrow(rows).sort("chunk_id")  # type: ignore[return-value]


def _data_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    return {
        b: str(materializations(instance, "gold_documents", b)[-1].tags["dagster/data_version"])
        for b in (B1, B2)
    }


def test_the_sample_on_postgres_and_s3_equals_the_embedded_profile(
    embedded: Embedded, tmp_path: Path, s3_endpoint: str, bucket: str, database: str
) -> None:
    data, env = _production(tmp_path, s3_endpoint, bucket, database)
    with _workers(tmp_path / "workers", [env, env]):
        first = _cli(env, "sync")
        assert first.returncode == 0, first.stdout + first.stderr
        again = _cli(env, "sync")
        assert again.returncode == 0 and "runs launched: 0" in again.stdout, again.stdout
    logs = [p.read_text() for p in sorted((tmp_path / "workers").rglob("*.log"))]
    assert all("succeeded" in log for log in logs), "a worker ran no step"  # the steps fanned out

    remote, local = _s3_lake(s3_endpoint, bucket), embedded.lake
    assert remote.keys() == local.keys()
    for table, frame in local.items():
        assert remote[table].equals(frame), table
    index, local = _s3_index(s3_endpoint, bucket), embedded.index
    assert index.drop(list(VOLATILE), strict=False).equals(local.drop(list(VOLATILE), strict=False))
    assert not (data / "lake").exists() and not (data / "lancedb").exists()

    os.environ["DAGSTER_PG_URL"] = sqlalchemy_url(database)
    try:
        with dg.DagsterInstance.from_config(str(data / "dagster")) as pg:
            assert type(pg.run_storage).__name__ == "PostgresRunStorage"
            assert len(pg.get_run_records()) == embedded.runs >= 5
            assert _data_versions(pg) == embedded.data_versions  # the gold content hash
    finally:
        del os.environ["DAGSTER_PG_URL"]


def test_a_worker_killed_mid_step_hands_the_step_to_the_other_and_nothing_is_lost(
    embedded: Embedded, tmp_path: Path, s3_endpoint: str, bucket: str, database: str
) -> None:
    """The first worker is SIGKILLed (with its pool) inside an embeddings step; the step's message
    was not acknowledged, so the broker hands it to the second worker, which runs it again."""
    data, env = _production(tmp_path, s3_endpoint, bucket, database)
    marker = tmp_path / "in-embedding-step"
    doomed = {**env, "EA_FAULTS": f"embed.encode=touch:{marker}+sleep:3600"}
    with _workers(tmp_path / "first", [doomed]) as [first]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedding_assets.cli", "sync"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.5)
        with _workers(tmp_path / "second", [env]):
            os.killpg(first, signal.SIGKILL)
            out, _ = proc.communicate(timeout=280)
    assert proc.returncode == 0, out
    remote = _s3_lake(s3_endpoint, bucket)
    assert remote.keys() == embedded.lake.keys()
    for table, frame in embedded.lake.items():
        assert remote[table].equals(frame), table
    index = _s3_index(s3_endpoint, bucket)
    assert index["chunk_id"].is_duplicated().sum() == 0
    assert index.drop(list(VOLATILE), strict=False).equals(embedded.index.drop(list(VOLATILE), strict=False))


def test_an_unknown_executor_or_an_unreachable_broker_is_one_line_naming_its_setting(
    tmp_path: Path, s3_endpoint: str, bucket: str, database: str
) -> None:
    _, env = _production(tmp_path, s3_endpoint, bucket, database, executor="threads")
    out = _cli(env, "sync")
    assert out.returncode == 2 and "EA_EXECUTOR='threads' is not an executor" in out.stderr, out.stderr
    env.update(EA_EXECUTOR="celery", EA_BROKER_URL="amqp://guest:guest@127.0.0.1:1//")
    out = _cli(env, "sync")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "EA_BROKER_URL=amqp://guest:guest@127.0.0.1:1//" in out.stderr and "Traceback" not in out.stderr
    assert "Contents" not in _s3(s3_endpoint).list_objects_v2(Bucket=bucket)


def test_postgres_refusing_connections_is_one_line_naming_its_setting(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    _, env = _production(tmp_path, s3_endpoint, bucket, "postgresql://postgres@127.0.0.1:1/nothing")
    out = _cli(env, "sync")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "DAGSTER_PG_URL=postgresql://postgres@127.0.0.1:1/nothing" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Contents" not in _s3(s3_endpoint).list_objects_v2(Bucket=bucket)  # nothing written


@pytest.mark.parametrize("setting", ["EA_LAKE_URI", "EA_LANCEDB_URI"])
def test_a_missing_bucket_is_one_line_naming_its_setting(
    tmp_path: Path, s3_endpoint: str, bucket: str, database: str, setting: str
) -> None:
    _, env = _production(tmp_path, s3_endpoint, bucket, database)
    env[setting] = "s3://no-such-bucket-here/x"
    for command in (["sync"], ["search", "thermostat"]):
        out = _cli(env, *command)
        assert out.returncode == 2, out.stdout + out.stderr
        assert (
            f"{setting}=s3://no-such-bucket-here/x: bucket 'no-such-bucket-here' does not exist" in out.stderr
        )
        assert "Traceback" not in out.stderr
    assert "Contents" not in _s3(s3_endpoint).list_objects_v2(Bucket=bucket)


def test_refused_s3_credentials_are_one_line_naming_them(tmp_path: Path, database: str) -> None:
    """A moto server that checks signatures (as AWS does) refuses keys it never issued."""
    with _moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        _, env = _production(tmp_path, endpoint, "some-bucket", database)
        out = _cli(env, "sync")
    assert out.returncode == 2, out.stdout + out.stderr
    assert (
        "EA_LAKE_URI=s3://some-bucket/lake: S3 at" in out.stderr and "refused the credentials" in out.stderr
    )
    assert "AWS_ACCESS_KEY_ID" in out.stderr and "Traceback" not in out.stderr


def _append(uri: str, options: dict[str, str], writer: int, n: int) -> int:
    from embedding_assets.core.lake import Lake

    os.environ.update(options)
    lake = Lake(uri)
    for i in range(n):
        frame = pl.DataFrame({"batch": [f"w{writer}-{i}"], "writer": [writer], "n": [i]})
        lake.overwrite_batch("t", frame, f"w{writer}-{i}")
    return n


def test_concurrent_delta_writers_on_s3_lose_no_commit(s3_endpoint: str, bucket: str) -> None:
    """deltalake 1.x commits on S3 with a conditional put (If-None-Match: *): moto refuses the
    second writer of a log entry, so the loser retries on the next version instead of
    overwriting the winner's commit."""
    import botocore.exceptions

    s3 = _s3(s3_endpoint)
    s3.put_object(Bucket=bucket, Key="probe", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError, match="PreconditionFailed"):
        s3.put_object(Bucket=bucket, Key="probe", Body=b"2", IfNoneMatch="*")

    uri, writers, each = f"s3://{bucket}/lake", 4, 4
    with ProcessPoolExecutor(writers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(_append, [uri] * writers, [_aws(s3_endpoint)] * writers, range(writers),
                             [each] * writers))  # fmt: skip
    assert done == [each] * writers
    rows = pl.read_delta(f"{uri}/t", storage_options=_aws(s3_endpoint))
    assert rows.height == writers * each and rows["batch"].n_unique() == writers * each


WRITES = ("PUT", "POST", "DELETE")


class FlakyS3:
    """A small HTTP proxy in front of moto that answers every ``every``-th write (PUT, POST or
    DELETE) with a 503 or a 500 (alternately) instead of forwarding it, as S3 does under load.
    It records every request and what it answered."""

    def __init__(self, upstream: str, every: int = 4) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        proxy, target, lock = self, urlsplit(upstream), threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    n = sum(m in WRITES for m, _, _ in proxy.requests) + 1 if self.command in WRITES else 1
                    failed = 500 if n % (2 * every) == 0 else 503 if n % every == 0 else 0
                    proxy.requests.append((self.command, self.path, failed or 200))
                if failed:
                    error = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(failed)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error if self.command != "HEAD" else b"")
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def failed(self, part: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.requests if r[2] >= 500 and part in r[1]]


def _read_every_table(endpoint: str, bucket: str) -> list[str]:
    """Read each Delta table's newest version in full, straight from moto; what went wrong."""
    from deltalake import DeltaTable

    keys = _s3(endpoint).list_objects_v2(Bucket=bucket, Prefix="lake/", MaxKeys=10_000).get("Contents", [])
    tables = sorted({k["Key"].split("/_delta_log/")[0] for k in keys if "/_delta_log/" in k["Key"]})
    problems = []
    for table in tables:
        try:
            DeltaTable(f"s3://{bucket}/{table}", storage_options=_aws(endpoint)).to_pyarrow_table()
        except Exception as error:  # noqa: BLE001 - any failure to read a committed version counts
            problems.append(f"{table}: {error}")
    return problems


def test_s3_errors_are_retried_with_backoff_and_readers_never_see_a_partial_commit(
    embedded: Embedded, tmp_path: Path, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write in four answers 503 (one in eight 500) while the sample syncs onto S3; a reader
    meanwhile reads every table's newest version from S3 directly. deltalake and lance retry
    each refused request with backoff; a commit is one conditional put of a log entry (or a
    manifest) after its data files, so a reader sees a version whole or not at all."""
    import threading

    flaky = FlakyS3(s3_endpoint, every=4)
    for name, value in _aws(flaky.url).items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "data"
    copy_sample(root, CORE_SOURCES)
    pipeline = make_pipeline(root, lake_uri=f"s3://{bucket}/lake", lancedb_uri=f"s3://{bucket}/lancedb")
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.extend(_read_every_table(s3_endpoint, bucket))
            time.sleep(0.2)

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        (tmp_path / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            summary = sync(instance, pipeline, echo=lambda _: None)
    finally:
        done.set()
        watcher.join()
    assert summary.ok, summary.render()
    assert flaky.failed("/_delta_log/") and flaky.failed("/lancedb/"), "faults reached the commits"
    assert not seen, seen[:3]
    remote = _s3_lake(s3_endpoint, bucket)
    assert remote.keys() == embedded.lake.keys()
    for table, frame in embedded.lake.items():
        assert remote[table].equals(frame), table
    index = _s3_index(s3_endpoint, bucket)
    assert index.drop(list(VOLATILE), strict=False).equals(embedded.index.drop(list(VOLATILE), strict=False))
