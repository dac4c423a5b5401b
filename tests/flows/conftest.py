"""Flow tests run under one Prefect test harness for the whole session, against the stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness

from emulator.app import Emulator
from emulator.misbehaviour import Misbehaviour

DEFAULT_ASYNC_BUCKET = "novaflow-async"  # of the default staging_uri and output_uri
QUOTA = 10.0  # the request quota of the `quota` fixture's stand-in, InvokeModel calls a second


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for every flow test in this session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def aws_environment(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The standard AWS variables pointed at the stand-in, as a user's shell would have them,
    and the bucket async jobs stage their inputs in by default, as a user's account has it."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    s3 = stand_in.client("s3")
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    if DEFAULT_ASYNC_BUCKET not in existing:
        s3.create_bucket(Bucket=DEFAULT_ASYNC_BUCKET)
    return stand_in


@pytest.fixture
def quota(aws_environment: Emulator) -> Emulator:
    """The stand-in with a request quota of ``QUOTA`` on InvokeModel (throttling beyond it)."""
    aws_environment.configure(
        bedrock_faults=(
            Misbehaviour(
                operations=frozenset({"InvokeModel"}),
                requests_per_second=QUOTA,
                latency_seconds=0.02,
            ),
        )
    )
    aws_environment.reset_stats()
    return aws_environment
