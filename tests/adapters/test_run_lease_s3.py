"""The run lease on S3 (moto's server in the stand-in, with conditional writes made atomic):
the same guarantees as in a local directory, through If-None-Match and If-Match requests."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator import s3_conditional
from emulator.app import Emulator, EmulatorSettings
from tasks.runs.lease import (
    LeaseHeldError,
    LeaseLostError,
    RunLease,
    held_lease,
    lease_location,
)
from tasks.store import CheckpointStore
from tests.unit.runs.test_lease import RUN_ID, T0, TTL, FakeClock, FakePause


@pytest.fixture(scope="module")
def stand_in() -> Iterator[Emulator]:
    """A stand-in of its own, its S3 evaluating conditional writes atomically."""
    s3_conditional.enforce_conditional_writes()
    with Emulator(EmulatorSettings()) as running:
        yield running


@pytest.fixture
def s3(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> BaseClient:
    """The AWS variables pointed at the stand-in (as a run has them), and a client of its own."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    return stand_in.client("s3")


@pytest.fixture
def bucket(s3: BaseClient, request: pytest.FixtureRequest) -> str:
    """A fresh bucket named after the test."""
    name = "lease-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def location(bucket: str) -> str:
    return lease_location(CheckpointStore(f"s3://{bucket}/novaflow"), RUN_ID)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def lease(location: str, clock: FakeClock) -> RunLease:
    return RunLease(location, RUN_ID, ttl_seconds=TTL, clock=clock)


def test_the_lease_is_an_object_beside_the_runs_other_files(
    s3: BaseClient, bucket: str, location: str, clock: FakeClock
) -> None:
    record = lease(location, clock).acquire()

    assert location == f"s3://{bucket}/novaflow/runs/{RUN_ID}/lease.json"
    stored = s3.get_object(Bucket=bucket, Key=f"novaflow/runs/{RUN_ID}/lease.json")
    assert json.loads(stored["Body"].read())["holder"] == record.holder


def test_a_second_process_is_refused_and_told_who_runs_the_run(
    location: str, clock: FakeClock
) -> None:
    first = lease(location, clock)
    first.acquire()
    clock.advance(12)

    with pytest.raises(LeaseHeldError) as refused:
        lease(location, clock).acquire()

    assert str(refused.value) == (
        f"run {RUN_ID} is being run by host {socket.gethostname()} pid {os.getpid()} "
        "since 2026-12-06T12:00:00Z (lease renewed 12 s ago, expires in 48 s); "
        "wait for it to end, or stop it"
    )


def test_renewing_keeps_the_run_and_releasing_frees_it(location: str, clock: FakeClock) -> None:
    first = lease(location, clock)
    first.acquire()
    clock.advance(50)
    renewed = first.renew()
    clock.advance(50)

    with pytest.raises(LeaseHeldError):
        lease(location, clock).acquire()
    assert first.current() == renewed
    assert first.release() is True
    assert first.current() is None
    assert lease(location, clock).acquire().started_at == T0 + 100


def test_a_stale_lease_is_taken_over_logged_and_its_holder_told(
    location: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stalled = lease(location, clock)
    stalled.acquire()
    clock.advance(TTL + 15)
    taker = lease(location, clock)

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        taker.acquire()
        with pytest.raises(LeaseLostError) as lost:
            stalled.renew()
        released = stalled.release()

    assert lost.value.by == taker.held
    assert released is False
    assert taker.current() == taker.held
    assert f"took over the lease of host {socket.gethostname()} pid {os.getpid()}" in caplog.text


def test_a_taker_that_saw_the_stale_lease_loses_to_the_one_that_took_it_first(
    location: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease(location, clock).acquire()
    clock.advance(TTL + 1)
    slow, fast = lease(location, clock), lease(location, clock)
    read = slow._slot.read

    def read_then_be_overtaken() -> object:
        stale = read()
        fast.acquire()  # between the slow taker's read and its conditional PutObject
        return stale

    monkeypatch.setattr(slow._slot, "read", read_then_be_overtaken)

    with pytest.raises(LeaseHeldError) as refused:
        slow.acquire()

    assert refused.value.holder == fast.held


@pytest.mark.parametrize("round_", range(5))
def test_of_racing_takers_of_a_stale_lease_exactly_one_wins(
    location: str, clock: FakeClock, round_: int
) -> None:
    lease(location, clock).acquire()
    clock.advance(TTL + 1)
    takers = [lease(location, clock) for _ in range(6)]
    start = threading.Barrier(len(takers))
    outcomes: list[str] = []

    def take(taker: RunLease) -> None:
        start.wait()
        try:
            taker.acquire()
            outcomes.append("won")
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=take, args=(taker,)) for taker in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused"] * 5 + ["won"]
    [winner] = [taker for taker in takers if taker.held is not None]
    assert winner.current() == winner.held


def test_a_held_lease_is_renewed_and_released(location: str, clock: FakeClock) -> None:
    renewed = threading.Event()
    pause = FakePause(clock, rounds=2, then=renewed.set)

    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        assert renewed.wait(timeout=30)
        current = held.lease.current()

    assert current is not None
    assert current.expires_at == T0 + 40 + TTL
    assert held.lost is False
    assert held.lease.current() is None


def test_a_held_lease_taken_over_is_reported_lost(location: str, clock: FakeClock) -> None:
    taker = lease(location, clock)

    def stall_then_be_taken_over() -> None:
        clock.advance(TTL + 1)
        taker.acquire()

    pause = FakePause(clock, rounds=0, then=stall_then_be_taken_over)
    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        pass

    assert held.lost_to == taker.held
    assert taker.current() == taker.held


# -- what the lease relies on: the stand-in's S3 answers conditional writes as S3 does ---------


def error_of(call: Callable[[], object]) -> tuple[int, str]:
    """The HTTP status and error code a refused request got."""
    with pytest.raises(ClientError) as refused:
        call()
    answer = refused.value.response
    return answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"]


def test_conditional_writes_are_refused_with_s3s_codes(s3: BaseClient, bucket: str) -> None:
    created = s3.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    s3.put_object(Bucket=bucket, Key="k", Body=b"2", IfMatch=created["ETag"])

    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"3", IfNoneMatch="*")) == (
        412,
        "PreconditionFailed",
    )
    stale = created["ETag"]
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=stale)) == (
        412,
        "PreconditionFailed",
    )
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"", IfMatch=stale)) == (
        404,
        "NoSuchKey",
    )
    assert error_of(lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch=stale)) == (
        412,
        "PreconditionFailed",
    )


def test_a_conditional_write_during_another_write_to_its_key_gets_409(
    s3: BaseClient, bucket: str
) -> None:
    in_flight = s3_conditional._lock_of(bucket, "k")  # as while another PutObject is written
    with in_flight:
        status = error_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"", IfNoneMatch="*"))

    assert status == (409, "ConditionalRequestConflict")
    s3.put_object(Bucket=bucket, Key="k", Body=b"", IfNoneMatch="*")  # and succeeds after
