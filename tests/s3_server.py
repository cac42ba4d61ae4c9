"""A real S3 API on loopback for the object-storage tests: moto's server in its own process on
127.0.0.1, reached over HTTP by s3fs/botocore exactly as a cluster reaches S3. Nothing of ours is
mocked; only the endpoint differs, and it comes from the standard environment (`AWS_ENDPOINT_URL`)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server():
    """Start moto's S3 server on a free loopback port; yields its endpoint URL, stops it after."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {url} did not start (exit {proc.poll()})")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def s3_environment(endpoint: str) -> dict[str, str]:
    """The variables a user sets for an S3-compatible store (dummy credentials for moto)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def new_bucket(endpoint: str) -> str:
    """Create a fresh bucket on the server; returns its name."""
    import boto3

    name = f"gf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=name)
    return name


def apply_environment(monkeypatch, endpoint: str) -> None:
    """Point this process (and the subprocesses and Ray workers it starts) at the server, and drop
    fsspec's cached filesystems so no client made for another endpoint is reused."""
    for key, value in s3_environment(endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
