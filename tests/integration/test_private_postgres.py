"""The private Postgres is durable by default; SPANCOST_PG_FSYNC=off trades that for speed."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from spancost.db import embedded
from spancost.errors import InfrastructureError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("setting", "expected"), [(None, "on"), ("off", "off")])
def test_the_private_server_fsyncs_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: str
) -> None:
    if setting is None:
        monkeypatch.delenv("SPANCOST_PG_FSYNC", raising=False)  # the suite sets it off
    else:
        monkeypatch.setenv("SPANCOST_PG_FSYNC", setting)
    tmp_path.chmod(0o755)  # the server runs as an unprivileged user when we are root
    pg = embedded.LocalPostgres(tmp_path / "home")
    try:
        url = embedded.start(pg)
        with psycopg.connect(url) as conn:
            settings = dict(
                conn.execute(
                    "select name, setting from pg_settings"
                    " where name in ('fsync', 'synchronous_commit')"
                ).fetchall()
            )
        assert settings == {"fsync": expected, "synchronous_commit": expected}
    finally:
        embedded.stop(pg)


def test_a_bad_setting_is_refused_by_name() -> None:
    with pytest.raises(InfrastructureError, match="SPANCOST_PG_FSYNC must be on or off"):
        embedded.durability_options({"SPANCOST_PG_FSYNC": "sometimes"})
