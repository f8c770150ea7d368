"""Local AWS endpoints on loopback, served by moto, for the demo and the tests.

boto3 reaches them through the standard ``AWS_ENDPOINT_URL`` variable, so the
product code is the same code that talks to AWS.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spancost.db.embedded import free_port, port_open
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

    @property
    def pricing_root(self) -> Path:
        return self.home / "pricing"

    def pricing_endpoint(self) -> str:
        return f"http://127.0.0.1:{(self.pricing_root / 'port').read_text().strip()}"


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
    port = free_port()
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


def start_pricing(
    aws: LocalAws, catalogue: list[dict[str, Any]] | None = None, timeout_s: float = 30.0
) -> str:
    """Start the local Price List endpoint (moto has none) in the background.

    ``catalogue`` is a list of GetProducts items; without one the server's demo
    catalogue is served. A server already running keeps the catalogue it has.
    """
    port_file = aws.pricing_root / "port"
    if port_file.exists() and port_open(int(port_file.read_text().strip())):
        return aws.pricing_endpoint()
    aws.pricing_root.mkdir(parents=True, exist_ok=True)
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "spancost.local.pricing_server", "--port-file", str(port_file)]
    if catalogue is not None:
        catalogue_file = aws.pricing_root / "catalogue.json"
        catalogue_file.write_text(json.dumps(catalogue))
        command += ["--catalogue", str(catalogue_file)]
    with open(aws.pricing_root / "server.log", "ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (aws.pricing_root / "pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while not (port_file.exists() and port_open(int(port_file.read_text().strip() or 0))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise InfrastructureError(
                "the local Price List endpoint did not start; "
                f"see {aws.pricing_root / 'server.log'}"
            )
        time.sleep(0.2)
    return aws.pricing_endpoint()


def _kill(pid_file: Path) -> bool:
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    except ProcessLookupError:
        pass
    pid_file.unlink()
    return True


def stop(aws: LocalAws) -> bool:
    """Stop moto and the Price List endpoint; True when either was running."""
    stopped_moto = _kill(aws.pid_file)
    stopped_pricing = _kill(aws.pricing_root / "pid")
    return stopped_moto or stopped_pricing


def use(endpoint: str, pricing_endpoint: str | None = None) -> None:
    """Point boto3 in this process (and its children) at local endpoints."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    if pricing_endpoint:
        os.environ["AWS_ENDPOINT_URL_PRICING"] = pricing_endpoint
    for name, value in LOCAL_ENV.items():
        os.environ[name] = value
