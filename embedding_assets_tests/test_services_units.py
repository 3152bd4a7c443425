"""The production profile's settings, without the services."""

from __future__ import annotations

from pathlib import Path

from embedding_assets.core.services import (
    libpq_url,
    redacted,
    s3_buckets,
    sqlalchemy_url,
    uses_postgres,
)
from embedding_assets_tests.conftest import REPO


def test_only_an_instance_file_that_names_the_variable_uses_postgres() -> None:
    assert uses_postgres((REPO / "deploy" / "dagster.yaml").read_text())
    assert not uses_postgres((REPO / "embedding_assets" / "instance.yaml").read_text())
    assert not uses_postgres("storage:\n  postgres:\n    postgres_db: {hostname: db}\n")


def test_urls_for_libpq_and_for_sqlalchemy_on_psycopg2() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/embedding_assets"
    assert sqlalchemy_url(url) == "postgresql+psycopg2://postgres@127.0.0.1:5432/embedding_assets"
    assert sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert sqlalchemy_url(sqlalchemy_url(url)) == sqlalchemy_url(url)  # already has its driver
    assert libpq_url(sqlalchemy_url(url)) == url


def test_a_password_never_reaches_a_message() -> None:
    assert redacted("postgresql://me:s3cret@db:5433/x") == "postgresql://me:***@db:5433/x"
    assert redacted("postgresql://me@db/x") == "postgresql://me@db/x"


def test_only_s3_uris_are_checked_once_per_bucket(tmp_path: Path) -> None:
    buckets = s3_buckets(
        EA_LAKE_URI="s3://shared/lake", EA_LANCEDB_URI="s3://shared/lancedb", OTHER=str(tmp_path)
    )
    assert [(b.setting, b.name) for b in buckets] == [("EA_LAKE_URI", "shared")]
    assert [b.name for b in s3_buckets(EA_LAKE_URI="s3://a/lake", EA_LANCEDB_URI="s3://b/db")] == ["a", "b"]
