"""A throwaway S3 server: ``moto_server`` (PyPI ``moto[server]``) on a free loopback port.

``s3_server`` (session scope) yields the endpoint URL, with fake credentials for boto3 in the
environment; ``s3_bucket_url`` (per test) yields ``s3://<fresh bucket>/blobs?endpoint=<endpoint>``.
Skips when moto or boto3 is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from .redis import free_port

READY_S = 30.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on port {port} within {READY_S} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    pytest.importorskip("boto3", reason="S3 tests need: pip install boto3 'moto[server]'")
    binary = shutil.which("moto_server")
    if binary is None:
        pytest.skip("no moto_server: pip install 'moto[server]'")
    port = free_port()
    process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        try:
            _wait_ready(process, port)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


@pytest.fixture
def s3_bucket_url(s3_server: str) -> Iterator[str]:
    import boto3

    bucket = f"fanrag-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/blobs?endpoint={s3_server}"
    client.close()
