"""The wire as botocore sees it: error codes become the modelled exception classes, and botocore
retries exactly what it retries against AWS. A stub operation answers each error on demand, so
these tests pin the HTTP layer alone."""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.app import BEDROCK_RUNTIME_ROUTES
from emulator.errors import bedrock_error, s3vectors_error
from emulator.http import BackgroundServer, Call, RouteSpec, ServiceApp
from emulator.misbehaviour import FaultInjector, Misbehaviour


class ScriptedOperation:
    """Answers every call with the error named in ``error_code`` (or ``{}`` when None)."""

    def __init__(self, make_error: Any) -> None:
        self.error_code: str | None = None
        self.calls: list[Call] = []
        self._make_error = make_error

    def __call__(self, call: Call) -> Mapping[str, Any]:
        self.calls.append(call)
        if self.error_code is not None:
            raise self._make_error(self.error_code, f"scripted {self.error_code}")
        return {"embeddings": []} if call.operation == "InvokeModel" else {}


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


def _serve(app: ServiceApp) -> Iterator[str]:
    server = BackgroundServer(app, "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def bedrock_stub(clock: list[float]) -> Iterator[tuple[ServiceApp, ScriptedOperation, str]]:
    operation = ScriptedOperation(bedrock_error)
    faults = FaultInjector(
        "ThrottlingException", bedrock_error, sleep=lambda _: None, clock=lambda: clock[0]
    )
    app = ServiceApp("bedrock-runtime", BEDROCK_RUNTIME_ROUTES, operation, faults, bedrock_error)
    for url in _serve(app):
        yield app, operation, url


@pytest.fixture
def s3vectors_stub() -> Iterator[tuple[ServiceApp, ScriptedOperation, str]]:
    operation = ScriptedOperation(s3vectors_error)
    routes = [
        RouteSpec("POST", "/PutVectors", "PutVectors"),
        RouteSpec("POST", "/QueryVectors", "QueryVectors"),
    ]
    faults = FaultInjector("TooManyRequestsException", s3vectors_error)
    app = ServiceApp("s3vectors", routes, operation, faults, s3vectors_error)
    for url in _serve(app):
        yield app, operation, url


def _client(service: str, url: str, attempts: int = 2) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def _invoke(client: Any) -> Any:
    return client.invoke_model(
        modelId="amazon.nova-2-multimodal-embeddings-v1:0",
        body=b'{"taskType": "SINGLE_EMBEDDING"}',
        contentType="application/json",
        accept="application/json",
    )


# (code, HTTP status, retried by botocore's standard mode) per aws-apis.md §1.8
BEDROCK_ERRORS = [
    ("ValidationException", 400, False),
    ("AccessDeniedException", 403, False),
    ("ResourceNotFoundException", 404, False),
    ("ThrottlingException", 429, True),
    ("ModelTimeoutException", 408, False),
    ("ModelNotReadyException", 429, True),
    ("ModelErrorException", 424, False),
    ("ServiceQuotaExceededException", 400, False),
    ("InternalServerException", 500, True),
    ("ServiceUnavailableException", 503, True),
]


@pytest.mark.parametrize(("code", "status", "retried"), BEDROCK_ERRORS)
def test_bedrock_errors_reach_botocore_as_modelled_exceptions(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str], code: str, status: int, retried: bool
) -> None:
    _, operation, url = bedrock_stub
    operation.error_code = code
    client = _client("bedrock-runtime", url)
    with pytest.raises(getattr(client.exceptions, code)) as raised:
        _invoke(client)
    response = raised.value.response
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert response["Error"]["Message"] == f"scripted {code}"
    assert response["ResponseMetadata"]["RequestId"]
    assert len(operation.calls) == (2 if retried else 1)


S3VECTORS_ERRORS = [
    ("ValidationException", 400, False),
    ("AccessDeniedException", 403, False),
    ("NotFoundException", 404, False),
    ("RequestTimeoutException", 408, True),
    ("ConflictException", 409, False),
    ("ServiceQuotaExceededException", 402, False),
    ("TooManyRequestsException", 429, True),
    ("InternalServerException", 500, True),
    ("ServiceUnavailableException", 503, True),
]


@pytest.mark.parametrize(("code", "status", "retried"), S3VECTORS_ERRORS)
def test_s3vectors_errors_reach_botocore_as_modelled_exceptions(
    s3vectors_stub: tuple[ServiceApp, ScriptedOperation, str], code: str, status: int, retried: bool
) -> None:
    _, operation, url = s3vectors_stub
    operation.error_code = code
    client = _client("s3vectors", url)
    with pytest.raises(getattr(client.exceptions, code)) as raised:
        client.put_vectors(
            vectorBucketName="b-1",
            indexName="i-1",
            vectors=[{"key": "k", "data": {"float32": [1.0]}}],
        )
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert len(operation.calls) == (2 if retried else 1)


def test_invoke_model_path_and_body_arrive_as_sent(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, operation, url = bedrock_stub
    _invoke(_client("bedrock-runtime", url))
    (call,) = operation.calls
    assert call.path_params["modelId"] == "amazon.nova-2-multimodal-embeddings-v1:0"
    assert call.raw_body == b'{"taskType": "SINGLE_EMBEDDING"}'
    assert call.headers["content-type"] == "application/json"


def test_get_async_invoke_receives_the_whole_arn(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, operation, url = bedrock_stub
    arn = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abcdef123456"
    _client("bedrock-runtime", url, attempts=1).get_async_invoke(invocationArn=arn)
    assert operation.calls[0].path_params["invocationArn"] == arn


def test_quota_throttles_beyond_its_rate_and_refills_with_time(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str], clock: list[float]
) -> None:
    app, operation, url = bedrock_stub
    app.faults.configure(
        (Misbehaviour(operations=frozenset({"InvokeModel"}), requests_per_second=3),)
    )
    client = _client("bedrock-runtime", url, attempts=1)
    for _ in range(3):
        _invoke(client)
    with pytest.raises(client.exceptions.ThrottlingException):
        _invoke(client)
    clock[0] += 1.0
    _invoke(client)
    assert len(operation.calls) == 4  # a throttled call never reaches the operation
    assert app.stats.snapshot()["errors"]["InvokeModel"] == {"ThrottlingException": 1}


def test_server_errors_are_reproducible_for_a_seed(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    app, _, url = bedrock_stub
    client = _client("bedrock-runtime", url, attempts=1)

    def outcomes() -> list[str]:
        app.faults.configure((Misbehaviour(seed=7, server_error_rate=0.5),))
        seen = []
        for _ in range(20):
            try:
                _invoke(client)
                seen.append("ok")
            except ClientError as err:
                seen.append(err.response["Error"]["Code"])
        return seen

    first = outcomes()
    assert first == outcomes()
    assert 3 <= first.count("ok") <= 17
    assert set(first) <= {"ok", "InternalServerException", "ServiceUnavailableException"}


def test_latency_is_added_before_answering(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    app, _, url = bedrock_stub
    slept: list[float] = []
    app.faults.sleep = slept.append
    app.faults.configure((Misbehaviour(latency_seconds=0.2, latency_jitter_seconds=0.1),))
    _invoke(_client("bedrock-runtime", url))
    assert len(slept) == 1
    assert 0.2 <= slept[0] <= 0.3


def test_unknown_operation_is_refused(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, _, url = bedrock_stub
    client = _client("bedrock-runtime", url, attempts=1)
    with pytest.raises(ClientError) as raised:
        client.converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


INVOKE_PATH = "/model/amazon.nova-2-multimodal-embeddings-v1:0/invoke"


def _connection(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def test_connections_are_kept_alive_across_calls(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, operation, url = bedrock_stub
    connection = _connection(url)
    sockets = []
    for n in range(3):
        connection.request("POST", INVOKE_PATH, body=f'{{"n": {n}}}'.encode())
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'{"embeddings": []}')
        assert response.getheader("Connection") is None
        sockets.append(connection.sock)
    connection.close()
    assert sockets[0] is not None
    assert sockets[0] is sockets[1] is sockets[2]
    assert [call.raw_body for call in operation.calls] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


def test_a_body_the_stand_in_never_reads_does_not_spill_into_the_next_request(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, operation, url = bedrock_stub
    connection = _connection(url)
    connection.request("POST", "/no/such/operation", body=b"x" * 100_000)
    refused = connection.getresponse()
    assert refused.status == 404
    refused.read()
    connection.request("POST", INVOKE_PATH, body=b'{"after": true}')
    answered = connection.getresponse()
    assert (answered.status, answered.read()) == (200, b'{"embeddings": []}')
    connection.close()
    assert [call.raw_body for call in operation.calls] == [b'{"after": true}']


def test_a_chunked_request_is_answered_and_its_connection_closed(
    bedrock_stub: tuple[ServiceApp, ScriptedOperation, str],
) -> None:
    _, operation, url = bedrock_stub
    connection = _connection(url)
    connection.request("POST", INVOKE_PATH, body=iter([b'{"chunked": ', b"true}"]))
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b'{"embeddings": []}')
    assert response.getheader("Connection") == "close"
    connection.close()
    assert [call.raw_body for call in operation.calls] == [b'{"chunked": true}']
