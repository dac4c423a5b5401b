"""The one place novaflow builds boto3 clients.

Endpoints, Region and credentials come only from the environment and boto3's default chain
(``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_DEFAULT_REGION``, profiles, roles…), so the same code
serves AWS and the local stand-in. Every client gets botocore's ``standard`` retry mode rather
than ``adaptive``: adaptive adds a second, per-client rate limiter that would fight the shared
``tasks.pacing.Pacer``, which already slows down on throttling. Timeouts live here because a
Prefect task timeout cannot interrupt a blocking call in a thread pool.
"""

from __future__ import annotations

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

# botocore's "max_attempts" counts retries after the first attempt: 5 means up to 6 attempts.
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_SECONDS = 10.0
USER_AGENT_EXTRA = "novaflow"


def _config(
    max_connections: int, read_timeout_s: float, max_attempts: int = MAX_ATTEMPTS
) -> Config:
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout_s,
        max_pool_connections=max_connections,
        tcp_keepalive=True,
        user_agent_extra=USER_AGENT_EXTRA,
    )


def _client(service: str, config: Config) -> BaseClient:
    # boto3's default session is not thread-safe to build clients from; a fresh one is.
    return boto3.session.Session().client(service, config=config)


def bedrock_runtime_client(
    max_connections: int, read_timeout_s: float = 60, max_attempts: int = MAX_ATTEMPTS
) -> BaseClient:
    """A Bedrock runtime client for ``max_connections`` threads calling at once (InvokeModel,
    async invokes), retrying a call up to ``max_attempts`` times (0: never, so the caller sees
    every throttling answer), with a ``read_timeout_s`` per attempt."""
    return _client("bedrock-runtime", _config(max_connections, read_timeout_s, max_attempts))


def s3vectors_client(max_connections: int = 16) -> BaseClient:
    """An S3 Vectors client for up to ``max_connections`` concurrent calls, 5 retries each."""
    return _client("s3vectors", _config(max_connections, read_timeout_s=60))


def s3_client() -> BaseClient:
    """An S3 client (objects, manifests, async job output), 5 retries per call."""
    return _client("s3", _config(max_connections=10, read_timeout_s=60))


def error_code(error: ClientError) -> str:
    """The service's error code of ``error`` (``ThrottlingException``, ``NoSuchKey``…), or ""."""
    return str(error.response.get("Error", {}).get("Code", ""))
