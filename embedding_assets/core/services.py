"""The production profile's services, checked before anything is written: the Postgres that holds
the Dagster instance, and the S3 buckets that hold the lake and the index. Each problem is one
line that names the setting to fix; nothing here imports Dagster."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PG_URL_VAR = "DAGSTER_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/embedding_assets"


class ServiceError(RuntimeError):
    """A service the configuration names is missing or refuses us: one line, exit code 2."""


def uses_postgres(instance_yaml: str) -> bool:
    """Whether a ``dagster.yaml`` keeps the instance in Postgres through ``DAGSTER_PG_URL``."""
    return re.search(rf"\benv:\s*{PG_URL_VAR}\b", instance_yaml) is not None


def pg_url() -> str:
    """``DAGSTER_PG_URL``, or the default database on the local server."""
    return os.environ.get(PG_URL_VAR, "").strip() or DEFAULT_PG_URL


def libpq_url(url: str) -> str:
    """The URL as libpq (psycopg2) reads it: without SQLAlchemy's ``+driver``."""
    return re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)


def sqlalchemy_url(url: str) -> str:
    """The URL for Dagster's SQLAlchemy engine, on psycopg2 (what dagster-postgres installs);
    SQLAlchemy 2.1 would otherwise pick psycopg 3 for a bare ``postgresql://``."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_postgres(url: str, timeout_s: int = 5) -> None:
    """Connect once; a refusal names ``DAGSTER_PG_URL`` and what to run."""
    import psycopg2

    try:
        psycopg2.connect(libpq_url(url), connect_timeout=timeout_s).close()
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise ServiceError(
            f"the Dagster instance's Postgres at {PG_URL_VAR}={redacted(url)} refused us: {reason[:300]} "
            f"(start PostgreSQL and create the database, e.g. `make prod-up`, or set {PG_URL_VAR})"
        ) from None


@dataclass(frozen=True)
class Bucket:
    setting: str  # the variable that named it: EA_LAKE_URI or EA_LANCEDB_URI
    uri: str

    @property
    def name(self) -> str:
        return urlsplit(self.uri).netloc


def s3_buckets(**uris: str) -> list[Bucket]:
    """The ``s3://`` URIs among the settings (setting name -> URI), one per bucket."""
    seen: dict[str, Bucket] = {}
    for setting, uri in uris.items():
        if uri.startswith(("s3://", "s3a://")):
            bucket = Bucket(setting, uri)
            seen.setdefault(bucket.name, bucket)
    return list(seen.values())


def aws_region() -> str:
    """The region boto3 is given: ``AWS_REGION`` (what deltalake and lance read), else
    ``AWS_DEFAULT_REGION``, else us-east-1."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def check_bucket(bucket: Bucket) -> None:
    """One HEAD of the bucket with the standard ``AWS_*`` configuration: a missing bucket, bad
    credentials or an endpoint that doesn't answer each get their own line."""
    try:
        import boto3
        import botocore.exceptions as bx
    except ImportError:
        raise ServiceError(
            f"{bucket.setting}={bucket.uri} is on S3, which needs the production extra: "
            "pip install 'embedding-assets[prod]'"
        ) from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    config = botocore_config()
    try:
        boto3.client("s3", config=config, region_name=aws_region()).head_bucket(Bucket=bucket.name)
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ServiceError(
                f"{bucket.setting}={bucket.uri}: bucket {bucket.name!r} does not exist at {endpoint} "
                "(create it, e.g. `make prod-up`, or fix the URI)"
            ) from None
        if code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden"):
            raise ServiceError(
                f"{bucket.setting}={bucket.uri}: S3 at {endpoint} refused the credentials "
                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE): {code}"
            ) from None
        raise ServiceError(f"{bucket.setting}={bucket.uri}: S3 at {endpoint} answered {code}") from None
    except bx.NoCredentialsError:
        raise ServiceError(
            f"{bucket.setting}={bucket.uri} is on S3 but no credentials are set "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError) as exc:
        raise ServiceError(
            f"{bucket.setting}={bucket.uri}: cannot reach S3 at {endpoint} (AWS_ENDPOINT_URL): {exc}"
        ) from None


def botocore_config() -> Any:
    """Short timeouts and few retries: a check should fail in seconds, not minutes."""
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})


def check_storage(**uris: str) -> None:
    """Every bucket that the lake and index URIs name exists and lets us in."""
    for bucket in s3_buckets(**uris):
        check_bucket(bucket)


def check_settings_storage(settings: Any) -> Any:
    """``settings`` (a :class:`Settings`) once its lake and index storage answered."""
    check_storage(EA_LAKE_URI=settings.lake_uri, EA_LANCEDB_URI=settings.lancedb_uri)
    return settings
