"""The stand-in as a whole: moto's S3 server plus novaflow's Bedrock runtime, Bedrock control plane
(batch inference) and S3 Vectors servers.

Start it in-process (``with Emulator(settings) as emulator: ...``) or with ``python -m emulator``.
Ordinary boto3 clients reach it through the standard ``AWS_ENDPOINT_URL_<SERVICE>`` variables in
``Emulator.environment()``; nothing in a client needs to know it is talking to a stand-in.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from moto.server import ThreadedMotoServer

from emulator.bedrock.control_api import bedrock_control_error
from emulator.bedrock.limits import BatchLimits
from emulator.bedrock.service import BatchInferenceService
from emulator.bedrock.storage import S3BatchStorage
from emulator.errors import bedrock_error, s3vectors_error
from emulator.http import BackgroundServer, Call, RouteSpec, ServiceApp
from emulator.misbehaviour import AsyncJobBehaviour, BatchJobBehaviour, FaultInjector, Misbehaviour
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import S3ObjectStore
from emulator.s3_conditional import enforce_conditional_writes
from emulator.s3vectors.service import ROUTES as S3VECTORS_ROUTES
from emulator.s3vectors.service import S3VectorsService, SearchSettings

DUMMY_ACCESS_KEY_ID = "novaflow-local"
DUMMY_SECRET_ACCESS_KEY = "novaflow-local"  # a placeholder: the stand-in checks no signatures

# S3 Vectors' request payload limit (aws-apis.md §2.5); Bedrock's 25 MB body limit is the model's.
S3VECTORS_MAX_REQUEST_BYTES = 20 * 1024 * 1024

BEDROCK_RUNTIME_ROUTES = (
    RouteSpec("POST", "/model/{modelId+}/invoke", "InvokeModel", json_body=False),
    RouteSpec("POST", "/async-invoke", "StartAsyncInvoke"),
    RouteSpec("GET", "/async-invoke/{invocationArn+}", "GetAsyncInvoke"),
    RouteSpec("GET", "/async-invoke", "ListAsyncInvokes"),
)

# The ``bedrock`` model's paths; botocore escapes a job ARN's slashes, which arrive decoded.
BEDROCK_CONTROL_ROUTES = (
    RouteSpec("POST", "/model-invocation-job", "CreateModelInvocationJob"),
    RouteSpec("GET", "/model-invocation-job/{jobIdentifier+}", "GetModelInvocationJob"),
    RouteSpec("POST", "/model-invocation-job/{jobIdentifier+}/stop", "StopModelInvocationJob"),
    RouteSpec("GET", "/model-invocation-jobs", "ListModelInvocationJobs"),
)


@dataclass(frozen=True)
class EmulatorSettings:
    """Where the stand-in listens, where it keeps state and how it should misbehave.

    Ports of 0 take any free port. ``state_dir`` keeps S3 Vectors indexes, async job records and
    batch job records across restarts (S3 objects live in moto's memory and do not survive a
    restart); ``None`` keeps everything in memory. ``batch_limits`` are the batch inference
    quotas; ``batch_clock`` is the time batch jobs move on (tests pass a clock they move).
    """

    host: str = "127.0.0.1"
    s3_port: int = 0
    bedrock_port: int = 0
    s3vectors_port: int = 0
    bedrock_control_port: int = 0
    state_dir: Path | None = None
    region: str = "us-east-1"
    account_id: str = "123456789012"
    search: SearchSettings = field(default_factory=SearchSettings)
    enforce_write_limits: bool = True
    bedrock_faults: tuple[Misbehaviour, ...] = ()
    s3vectors_faults: tuple[Misbehaviour, ...] = ()
    async_jobs: AsyncJobBehaviour = field(default_factory=AsyncJobBehaviour)
    bedrock_control_faults: tuple[Misbehaviour, ...] = ()
    batch_jobs: BatchJobBehaviour = field(default_factory=BatchJobBehaviour)
    batch_limits: BatchLimits = field(default_factory=BatchLimits)
    batch_clock: Callable[[], float] = time.time
    # The time source of S3 Vectors' write-rate limits; tests freeze it to make them exact.
    vectors_clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(self.host)).is_loopback
        except (OSError, ValueError):
            loopback = False
        if not loopback:
            raise ValueError(f"the stand-in listens on loopback addresses only, not {self.host!r}")


@dataclass(frozen=True)
class Endpoints:
    """The URLs of the four services."""

    s3: str
    bedrock_runtime: str
    s3vectors: str
    bedrock: str


class Emulator:
    """A running stand-in. Use as a context manager, or call ``start()`` and ``stop()``."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self._async_jobs = self.settings.async_jobs
        self._batch_jobs = self.settings.batch_jobs
        self._batch_limits = self.settings.batch_limits
        self._moto: ThreadedMotoServer | None = None
        self._servers: list[BackgroundServer] = []
        self._nova: NovaRuntime | None = None
        self._vectors: S3VectorsService | None = None
        self._bedrock_app: ServiceApp | None = None
        self._s3vectors_app: ServiceApp | None = None
        self._batch: BatchInferenceService | None = None
        self._batch_app: ServiceApp | None = None
        self._endpoints: Endpoints | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start all four servers; returns once each is listening."""
        settings = self.settings
        for name in ("werkzeug", "moto"):
            logging.getLogger(name).setLevel(logging.WARNING)
        enforce_conditional_writes()
        self._moto = ThreadedMotoServer(
            ip_address=settings.host, port=settings.s3_port, verbose=False
        )
        self._moto.start()
        s3_url = _url(settings.host, self._moto.get_host_and_port()[1])
        state = settings.state_dir
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
        nova = NovaRuntime(
            S3ObjectStore(s3_url, settings.region),
            state_dir=None if state is None else state / "bedrock",
            region=settings.region,
            account_id=settings.account_id,
            job_behaviour=lambda: self._async_jobs,
        )
        self._nova = nova
        self._vectors = S3VectorsService(
            None if state is None else state / "s3vectors",
            region=settings.region,
            account_id=settings.account_id,
            search=settings.search,
            enforce_write_limits=settings.enforce_write_limits,
            clock=settings.vectors_clock,
        )
        self._bedrock_app = ServiceApp(
            "bedrock-runtime",
            BEDROCK_RUNTIME_ROUTES,
            self._dispatch_bedrock,
            FaultInjector("ThrottlingException", bedrock_error),
            bedrock_error,
            on_control=self._bedrock_control,
        )
        self._bedrock_app.faults.configure(settings.bedrock_faults)
        self._s3vectors_app = ServiceApp(
            "s3vectors",
            [
                RouteSpec(r.method, r.path.replace("{resourceArn}", "{resourceArn+}"), r.operation)
                for r in S3VECTORS_ROUTES
            ],
            self._dispatch_s3vectors,
            FaultInjector("TooManyRequestsException", s3vectors_error),
            s3vectors_error,
            on_control=self._s3vectors_control,
            max_body_bytes=S3VECTORS_MAX_REQUEST_BYTES,
        )
        self._s3vectors_app.faults.configure(settings.s3vectors_faults)
        self._batch = BatchInferenceService(
            S3BatchStorage(s3_url, settings.region),
            lambda body: nova.invoke_model(NOVA_MODEL_ID, body, None, None),
            state_dir=None if state is None else state / "bedrock",
            region=settings.region,
            account_id=settings.account_id,
            behaviour=lambda: self._batch_jobs,
            limits=lambda: self._batch_limits,
            clock=settings.batch_clock,
        )
        self._batch_app = ServiceApp(
            "bedrock",
            BEDROCK_CONTROL_ROUTES,
            self._dispatch_batch,
            FaultInjector("ThrottlingException", bedrock_control_error),
            bedrock_control_error,
            on_control=self._batch_control,
        )
        self._batch_app.faults.configure(settings.bedrock_control_faults)
        bedrock_server = BackgroundServer(self._bedrock_app, settings.host, settings.bedrock_port)
        vectors_server = BackgroundServer(
            self._s3vectors_app, settings.host, settings.s3vectors_port
        )
        control_server = BackgroundServer(
            self._batch_app, settings.host, settings.bedrock_control_port
        )
        self._servers = [bedrock_server, vectors_server, control_server]
        for server in self._servers:
            server.start()
        self._endpoints = Endpoints(
            s3=s3_url,
            bedrock_runtime=_url(settings.host, bedrock_server.port),
            s3vectors=_url(settings.host, vectors_server.port),
            bedrock=_url(settings.host, control_server.port),
        )
        return self

    def stop(self) -> None:
        """Stop the servers and the job runners; state on disk is kept."""
        for server in self._servers:
            server.stop()
        self._servers = []
        if self._batch is not None:
            self._batch.close()
        if self._nova is not None:
            self._nova.close()
        if self._vectors is not None:
            self._vectors.close()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._endpoints = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        """The running services' URLs."""
        if self._endpoints is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return self._endpoints

    def environment(self) -> dict[str, str]:
        """The variables that point ordinary boto3 clients (and the AWS CLI) at the stand-in."""
        endpoints = self.endpoints
        return {
            "AWS_ENDPOINT_URL_S3": endpoints.s3,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": endpoints.bedrock_runtime,
            "AWS_ENDPOINT_URL_S3VECTORS": endpoints.s3vectors,
            "AWS_ENDPOINT_URL_BEDROCK": endpoints.bedrock,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.settings.region,
        }

    def client(self, service: str, **config: Any) -> BaseClient:
        """A boto3 client for ``s3``, ``bedrock-runtime``, ``bedrock`` or ``s3vectors`` aimed at
        the stand-in."""
        urls = {
            "s3": self.endpoints.s3,
            "bedrock-runtime": self.endpoints.bedrock_runtime,
            "bedrock": self.endpoints.bedrock,
            "s3vectors": self.endpoints.s3vectors,
        }
        return boto3.client(
            service,
            endpoint_url=urls[service],
            region_name=self.settings.region,
            aws_access_key_id=DUMMY_ACCESS_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
            config=Config(**config) if config else None,
        )

    # -- misbehaviour and statistics -------------------------------------------------------

    def configure(
        self,
        *,
        bedrock_faults: tuple[Misbehaviour, ...] | None = None,
        s3vectors_faults: tuple[Misbehaviour, ...] | None = None,
        async_jobs: AsyncJobBehaviour | None = None,
        bedrock_control_faults: tuple[Misbehaviour, ...] | None = None,
        batch_jobs: BatchJobBehaviour | None = None,
        batch_limits: BatchLimits | None = None,
    ) -> None:
        """Change misbehaviour (and batch quotas) while running; what is not given stays as it
        is. Batch jobs keep the behaviour and quotas in force when they were created."""
        if bedrock_faults is not None:
            self._apps()[0].faults.configure(bedrock_faults)
        if s3vectors_faults is not None:
            self._apps()[1].faults.configure(s3vectors_faults)
        if async_jobs is not None:
            self._async_jobs = async_jobs
            self.settings = replace(self.settings, async_jobs=async_jobs)
        if bedrock_control_faults is not None:
            self._control_app().faults.configure(bedrock_control_faults)
        if batch_jobs is not None:
            self._batch_jobs = batch_jobs
            self.settings = replace(self.settings, batch_jobs=batch_jobs)
        if batch_limits is not None:
            self._batch_limits = batch_limits
            self.settings = replace(self.settings, batch_limits=batch_limits)

    def stats(self) -> dict[str, Any]:
        """Calls and errors per operation, per service, since start or the last reset."""
        bedrock, vectors = self._apps()
        return {
            "bedrock-runtime": bedrock.stats.snapshot(),
            "s3vectors": vectors.stats.snapshot(),
            "bedrock": self._control_app().stats.snapshot(),
        }

    def reset_stats(self) -> None:
        """Start counting calls afresh."""
        for app in (*self._apps(), self._control_app()):
            app.stats.reset()

    def _apps(self) -> tuple[ServiceApp, ServiceApp]:
        if self._bedrock_app is None or self._s3vectors_app is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return self._bedrock_app, self._s3vectors_app

    def _control_app(self) -> ServiceApp:
        if self._batch_app is None:
            raise RuntimeError("the stand-in is not running; call start() first")
        return self._batch_app

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch_bedrock(self, call: Call) -> Mapping[str, Any]:
        assert self._nova is not None
        if call.operation == "InvokeModel":
            return self._nova.invoke_model(
                call.path_params["modelId"],
                call.raw_body,
                call.headers.get("content-type"),
                call.headers.get("accept"),
            )
        if call.operation == "StartAsyncInvoke":
            return self._nova.start_async_invoke(call.body)
        if call.operation == "GetAsyncInvoke":
            return self._nova.get_async_invoke(call.path_params["invocationArn"])
        return self._nova.list_async_invokes(call.query)

    def _dispatch_s3vectors(self, call: Call) -> Mapping[str, Any]:
        assert self._vectors is not None
        return self._vectors.handle(call.operation, call.body, call.path_params, call.query)

    def _dispatch_batch(self, call: Call) -> Mapping[str, Any]:
        assert self._batch is not None
        if call.operation == "CreateModelInvocationJob":
            return self._batch.create_job(call.body)
        if call.operation == "GetModelInvocationJob":
            return self._batch.get_job(call.path_params["jobIdentifier"])
        if call.operation == "StopModelInvocationJob":
            return self._batch.stop_job(call.path_params["jobIdentifier"])
        return self._batch.list_jobs(call.query)

    def _batch_control(self, action: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        if action != "faults":
            raise ValueError(f"unknown control action {action!r}")
        rules = tuple(Misbehaviour.from_json(rule) for rule in document.get("rules", []))
        jobs, limits = document.get("batch_jobs"), document.get("batch_limits")
        self.configure(
            bedrock_control_faults=rules,
            batch_jobs=None if jobs is None else BatchJobBehaviour.from_json(jobs),
            batch_limits=None if limits is None else BatchLimits.from_json(limits),
        )
        return {
            "rules": [rule.to_json() for rule in rules],
            "batch_jobs": self._batch_jobs.to_json(),
            "batch_limits": self._batch_limits.to_json(),
        }

    def _bedrock_control(self, action: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        if action != "faults":
            raise ValueError(f"unknown control action {action!r}")
        rules = tuple(Misbehaviour.from_json(rule) for rule in document.get("rules", []))
        jobs = document.get("async_jobs")
        self.configure(
            bedrock_faults=rules,
            async_jobs=None if jobs is None else AsyncJobBehaviour.from_json(jobs),
        )
        return {
            "rules": [rule.to_json() for rule in rules],
            "async_jobs": self._async_jobs.to_json(),
        }

    def _s3vectors_control(self, action: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
        if action != "faults":
            raise ValueError(f"unknown control action {action!r}")
        rules = tuple(Misbehaviour.from_json(rule) for rule in document.get("rules", []))
        self.configure(s3vectors_faults=rules)
        return {"rules": [rule.to_json() for rule in rules]}


def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}"
