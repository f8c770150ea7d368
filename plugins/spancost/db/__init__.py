"""Postgres: which server, and the landing schema."""

from __future__ import annotations

import hashlib
import logging
import os
from importlib import resources
from urllib.parse import unquote, urlsplit

import psycopg

from spancost import settings
from spancost.db import embedded

log = logging.getLogger(__name__)


def database_url() -> str:
    """``SPANCOST_DATABASE_URL`` when set; otherwise the private server, started if needed."""
    url = os.environ.get("SPANCOST_DATABASE_URL")
    if url:
        return url
    return embedded.start(embedded.LocalPostgres(settings.home()))


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        url, application_name="spancost", options="-c timezone=UTC", autocommit=autocommit
    )


def schema_files() -> list[str]:
    """The DDL files in ``spancost/sql``: ``schema.sql`` first, then the others by name."""
    folder = resources.files("spancost.db").joinpath("sql")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [
        folder.joinpath(name).read_text() for name in sorted(names, key=lambda n: n != "schema.sql")
    ]


def _applied_digest(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    row = conn.execute("select to_regclass('ops.schema_version') is not null").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("select digest from ops.schema_version").fetchone()
    return str(found[0]) if found else None


def apply_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the raw and ops schemas and tables (idempotent, serialised across processes).

    The DDL runs only when it changed since it last ran here (its SHA-256 is kept in
    ``ops.schema_version``): ``alter table … if not exists`` still takes an exclusive
    lock, and loads running beside it (mapped tasks, overlapping runs) would
    deadlock against it.
    """
    ddl = schema_files()
    digest = hashlib.sha256("\n".join(ddl).encode()).hexdigest()
    with conn.transaction():
        if _applied_digest(conn) == digest:
            return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('spancost.schema'))")
        if _applied_digest(conn) == digest:
            return  # another process applied it while this one waited
        for statement in ddl:
            conn.execute(statement)
        conn.execute(
            "create table if not exists ops.schema_version ("
            " digest text not null, applied_at timestamptz not null default now())"
        )
        conn.execute("delete from ops.schema_version")
        conn.execute("insert into ops.schema_version (digest) values (%s)", (digest,))


BI_ROLE = "spancost_bi"


def create_bi_role(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the read-only role ``spancost_bi`` (idempotent): it reads ``marts`` only.

    Needs CREATEROLE, so only ``spancost db init`` and the demo run it. Tables dbt
    creates later are readable through default privileges of the role running this,
    and each mart build grants select again (dbt_project.yml, marts post-hook).
    """
    ddl = resources.files("spancost.db").joinpath("roles", "bi_role.sql").read_text()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('spancost.bi_role'))")
        conn.execute(ddl)


def redact(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def dbt_env(url: str) -> dict[str, str]:
    """The environment variables dbt's profile (dbt/profiles.yml) reads, from a database URL."""
    parts = urlsplit(url)
    return {
        "SPANCOST_DB_HOST": parts.hostname or "127.0.0.1",
        "SPANCOST_DB_PORT": str(parts.port or 5432),
        "SPANCOST_DB_USER": unquote(parts.username or "postgres"),
        "SPANCOST_DB_PASSWORD": unquote(parts.password or ""),
        "SPANCOST_DB_NAME": parts.path.lstrip("/") or "postgres",
    }
