"""A real S3 API on loopback: moto's server in its own process, with IAM authentication on.

    s3  (session)  S3Server: endpoint, a bucket maker, boto3 client, valid keys for the monitor

Moto accepts any credentials unless `INITIAL_NO_AUTH_ACTION_COUNT` is set; with it, the first
requests (creating the IAM user, its policy and keys) run unauthenticated and every later
request must be signed with real keys of that user. So a wrong key is refused as S3 refuses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests._services import free_port, wait_until

__all__ = ["S3Server", "s3"]

_SETUP_REQUESTS = 3  # create_user, put_user_policy, create_access_key


@dataclass
class S3Server:
    endpoint: str
    key: str
    secret: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )

    def bucket(self, name: str) -> Any:
        client = self.client()
        client.create_bucket(Bucket=name)
        return client

    def options(self, **overrides: Any) -> dict[str, Any]:
        """storage_options for the monitor: the endpoint and the valid keys."""
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret, **overrides}


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    import boto3  # moto[server] and s3fs are in the test extra: missing, they fail loudly

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_REQUESTS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, what="moto's S3 server")
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="monitor")
        iam.put_user_policy(
            UserName="monitor",
            PolicyName="all",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", '
            '"Resource": "*"}]}',
        )
        keys = iam.create_access_key(UserName="monitor")["AccessKey"]
        yield S3Server(endpoint, keys["AccessKeyId"], keys["SecretAccessKey"])
    finally:
        process.terminate()
        process.wait(timeout=10)
