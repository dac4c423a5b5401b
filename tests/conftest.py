"""Shared fixtures: one in-process stand-in per test worker, and clients pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# No test reaches the network or a real account: clear anything that would point boto3 elsewhere.
for _name in list(os.environ):
    if _name.startswith("AWS_") or _name.startswith("PREFECT_API"):
        del os.environ[_name]
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from botocore.client import BaseClient  # noqa: E402

from emulator.app import Emulator, EmulatorSettings  # noqa: E402
from emulator.misbehaviour import AsyncJobBehaviour  # noqa: E402

FAST_JOBS = AsyncJobBehaviour(job_seconds=0.3)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A running stand-in with state in a temporary directory and fast async jobs."""
    settings = EmulatorSettings(
        state_dir=tmp_path_factory.mktemp("emulator-state"), async_jobs=FAST_JOBS
    )
    with Emulator(settings) as running:
        yield running


@pytest.fixture
def stand_in(emulator: Emulator) -> Iterator[Emulator]:
    """The session's stand-in, well-behaved and with fresh call counts; restored afterwards."""
    emulator.configure(bedrock_faults=(), s3vectors_faults=(), async_jobs=FAST_JOBS)
    emulator.reset_stats()
    yield emulator
    emulator.configure(bedrock_faults=(), s3vectors_faults=(), async_jobs=FAST_JOBS)


@pytest.fixture
def bedrock(stand_in: Emulator) -> BaseClient:
    """A bedrock-runtime client with botocore's standard retry mode."""
    return stand_in.client("bedrock-runtime", retries={"mode": "standard"})


@pytest.fixture
def s3vectors(stand_in: Emulator) -> BaseClient:
    """An s3vectors client with botocore's standard retry mode."""
    return stand_in.client("s3vectors", retries={"mode": "standard"})


@pytest.fixture
def s3(stand_in: Emulator) -> BaseClient:
    """An S3 client for moto's server."""
    return stand_in.client("s3")
