"""Local AWS endpoints on loopback, served by moto, for the demo and the tests.

boto3 reaches them through the standard ``AWS_ENDPOINT_URL`` variable, so the
product code is the same code that talks to AWS.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from spancost.errors import InfrastructureError

log = logging.getLogger(__name__)

# Dummy credentials for the local endpoint; moto accepts any.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "spancost-local",
    "AWS_SECRET_ACCESS_KEY": "spancost-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class LocalAws:
    home: Path

    @property
    def root(self) -> Path:
        return self.home / "moto"

    @property
    def pid_file(self) -> Path:
        return self.root / "pid"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port_file.read_text().strip()}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def is_running(aws: LocalAws) -> bool:
    return aws.port_file.exists() and _healthy(aws.endpoint())


def start(aws: LocalAws, timeout_s: float = 30.0) -> str:
    """Start moto's server in the background if it is not running; return its endpoint."""
    if is_running(aws):
        return aws.endpoint()
    aws.root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    aws.port_file.write_text(f"{port}\n")
    server = Path(sys.executable).with_name("moto_server")
    command = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
    with open(aws.root / "server.log", "ab") as out:
        proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    aws.pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while not _healthy(aws.endpoint()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise InfrastructureError(
                f"moto server did not start on 127.0.0.1:{port}; see {aws.root / 'server.log'}"
            )
        time.sleep(0.2)
    log.info("local AWS endpoint at %s", aws.endpoint())
    return aws.endpoint()


def stop(aws: LocalAws) -> bool:
    if not aws.pid_file.exists():
        return False
    pid = int(aws.pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    aws.pid_file.unlink()
    return True


def use(endpoint: str) -> None:
    """Point boto3 in this process (and its children) at a local endpoint."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    for name, value in LOCAL_ENV.items():
        os.environ[name] = value
