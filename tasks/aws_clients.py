"""The one place novaflow builds boto3 clients.

Endpoints, Region and credentials come only from the environment and boto3's default chain
(``AWS_ENDPOINT_URL_<SERVICE>``, ``AWS_DEFAULT_REGION``, profiles, roles…), so the same code
serves AWS and the local stand-in. Every client gets botocore's ``standard`` retry mode rather
than ``adaptive``: adaptive adds a second, per-client rate limiter that would fight the shared
``tasks.pacing.Pacer``, which already slows down on throttling. Timeouts live here because a
Prefect task timeout cannot interrupt a blocking call in a thread pool.

Clients are made once per process and kind and then reused by every shard and stage of a run:
a botocore client is thread-safe, and a new one costs its service model, a connection pool and
new TCP connections. The cache is keyed by the environment that chooses the endpoint and the
credentials too, so a process that points ``AWS_ENDPOINT_URL_*`` elsewhere (the embedded
stand-in starting and stopping) never reuses a client of the old endpoint.
"""

from __future__ import annotations

import os
import threading

import boto3
from botocore.client import BaseClient
from botocore.config import Config

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


_ENVIRONMENT_NAMES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
_clients: dict[tuple[object, ...], BaseClient] = {}
_sessions: dict[tuple[str | None, ...], boto3.session.Session] = {}
_clients_lock = threading.Lock()


def _client(
    service: str, max_connections: int, read_timeout_s: float, max_attempts: int
) -> BaseClient:
    endpoint_name = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    environment = tuple(os.environ.get(name) for name in (*_ENVIRONMENT_NAMES, endpoint_name))
    key = (service, max_connections, read_timeout_s, max_attempts, environment)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            config = _config(max_connections, read_timeout_s, max_attempts)
            client = _session(environment[: len(_ENVIRONMENT_NAMES)]).client(service, config=config)
            _clients[key] = client
        return client


def _session(environment: tuple[str | None, ...]) -> boto3.session.Session:
    """The session this process builds clients from while the environment is ``environment``
    (call with ``_clients_lock`` held: a session is not thread-safe to build clients from).

    One session, not one per client: a session loads botocore's endpoint data (~1 MB of JSON)
    and each service model once, and resolves the credentials once; a client per fresh session
    paid that again, ~0.1 s of CPU each. It is keyed by the environment as the clients are,
    because a session keeps the credentials it resolved first."""
    session = _sessions.get(environment)
    if session is None:
        session = _sessions[environment] = boto3.session.Session()
    return session


def bedrock_runtime_client(
    max_connections: int, read_timeout_s: float = 60, max_attempts: int = MAX_ATTEMPTS
) -> BaseClient:
    """A Bedrock runtime client for ``max_connections`` threads calling at once (InvokeModel,
    async invokes), retrying a call up to ``max_attempts`` times (0: never, so the caller sees
    every throttling answer), with a ``read_timeout_s`` per attempt."""
    return _client("bedrock-runtime", max_connections, read_timeout_s, max_attempts)


def s3vectors_client(max_connections: int = 16) -> BaseClient:
    """An S3 Vectors client for up to ``max_connections`` concurrent calls, 5 retries each."""
    return _client("s3vectors", max_connections, 60, MAX_ATTEMPTS)


def s3_client() -> BaseClient:
    """An S3 client (objects, manifests, async job output), 5 retries per call."""
    return _client("s3", 10, 60, MAX_ATTEMPTS)


def bedrock_client(max_attempts: int = MAX_ATTEMPTS) -> BaseClient:
    """A Bedrock control-plane client (batch inference jobs), retrying a call up to
    ``max_attempts`` times (0: never, so a poller sees every throttling answer)."""
    return _client("bedrock", 4, 60, max_attempts)
