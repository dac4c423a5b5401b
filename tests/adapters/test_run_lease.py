"""The run lease on every store it lives on: a local directory (a file under an flock) and S3
(moto's server in the stand-in, with conditional writes made atomic, changed through
If-None-Match and If-Match requests). Each behaviour is written once and runs on both: one live
holder per run, named to whoever else tries; renewed, released, taken over once stale or once
its holder on this host has ended (and logged), never won by two racing takers, and never
deleted by a process that no longer holds it. Then what only S3 does. Time is a fake clock;
nothing sleeps."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator import s3_conditional
from emulator.app import Emulator, EmulatorSettings
from tasks.runs.lease import (
    LeaseHeldError,
    LeaseLostError,
    LeaseRecord,
    RunLease,
    held_lease,
    lease_location,
)
from tasks.store import CheckpointStore
from tests.unit.runs.test_lease import RUN_ID, T0, TTL, FakeClock, FakePause, lease

S3_PREFIX = "novaflow"
S3_KEY = f"{S3_PREFIX}/runs/{RUN_ID}/lease.json"


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


class StoredLease(Protocol):
    """The run's lease as its store keeps it, read and written past the code under test."""

    @property
    def location(self) -> str: ...
    def read(self) -> bytes | None: ...
    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class LocalStoredLease:
    """The lease file in a local store."""

    location: str

    def read(self) -> bytes | None:
        path = Path(self.location)
        return path.read_bytes() if path.exists() else None

    def write(self, data: bytes) -> None:
        path = Path(self.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@dataclass(frozen=True)
class S3StoredLease:
    """The lease object in a store on the stand-in's S3."""

    client: BaseClient
    bucket: str

    @property
    def location(self) -> str:
        return lease_location(CheckpointStore(f"s3://{self.bucket}/{S3_PREFIX}"), RUN_ID)

    def read(self) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=S3_KEY)
        except self.client.exceptions.NoSuchKey:
            return None
        body: bytes = answer["Body"].read()
        return body

    def write(self, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=S3_KEY, Body=data)


@pytest.fixture(params=["local", "s3"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> StoredLease:
    """The run's lease in a fresh local store, or in a fresh bucket of the stand-in's S3 (with
    the AWS variables pointed at it, so that the lease builds its own client there)."""
    if request.param == "local":
        return LocalStoredLease(lease_location(CheckpointStore(str(tmp_path / "store")), RUN_ID))
    return S3StoredLease(request.getfixturevalue("s3"), request.getfixturevalue("bucket"))


@pytest.fixture
def location(stored: StoredLease) -> str:
    return stored.location


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ended_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def running_pid() -> Iterator[int]:
    """The pid of a process of this host that runs until the test ends (it reads its stdin,
    which is closed, ending it, when the test is done)."""
    script = "import sys; sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE) as child:
        yield child.pid


def lease_of_this_host(pid: int) -> LeaseRecord:
    """A lease another process of this host wrote at T0: not expired before T0 + TTL."""
    return LeaseRecord(RUN_ID, "an-earlier-process", socket.gethostname(), pid, T0, T0, T0 + TTL)


def lease_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "tasks.runs.lease"]


def taken_over(location: str, clock: FakeClock) -> tuple[RunLease, RunLease]:
    """A holder that stalled past its ttl, and the process that took its lease over."""
    stalled = lease(location, clock)
    stalled.acquire()
    clock.advance(TTL + 1)
    taker = lease(location, clock)
    taker.acquire()
    return stalled, taker


def test_acquiring_writes_who_holds_the_run_and_until_when(
    stored: StoredLease, clock: FakeClock
) -> None:
    record = lease(stored.location, clock).acquire()

    data = stored.read()
    assert data is not None
    assert json.loads(data) == {
        "run_id": RUN_ID,
        "holder": record.holder,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": "2026-12-06T12:00:00.000Z",
        "renewed_at": "2026-12-06T12:00:00.000Z",
        "expires_at": "2026-12-06T12:01:00.000Z",
    }
    assert LeaseRecord.from_json(data) == record


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
    assert refused.value.holder == first.held


def test_renewing_keeps_the_run_from_being_taken_over(location: str, clock: FakeClock) -> None:
    first = lease(location, clock)
    first.acquire()
    clock.advance(50)
    renewed = first.renew()
    clock.advance(50)  # past the first expiry, within the renewed one

    with pytest.raises(LeaseHeldError):
        lease(location, clock).acquire()
    assert renewed.started_at == T0
    assert renewed.expires_at == T0 + 50 + TTL
    assert first.current() == renewed


def test_a_released_lease_is_gone_and_the_run_free_again(
    stored: StoredLease, clock: FakeClock
) -> None:
    first = lease(stored.location, clock)
    first.acquire()

    assert first.release() is True
    assert stored.read() is None
    assert first.held is None
    assert first.current() is None
    assert lease(stored.location, clock).acquire().run_id == RUN_ID


def test_a_renewed_lease_is_released_from_its_renewed_version(
    location: str, clock: FakeClock
) -> None:
    first = lease(location, clock)
    first.acquire()
    clock.advance(50)
    first.renew()
    clock.advance(50)

    assert first.release() is True
    assert first.current() is None
    assert lease(location, clock).acquire().started_at == T0 + 100


def test_a_stale_lease_is_taken_over_and_the_takeover_logged(
    location: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stale = lease(location, clock)
    stale.acquire()
    clock.advance(TTL + 15)

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        taken = lease(location, clock).acquire()

    assert stale.held is not None
    assert taken.holder != stale.held.holder
    assert taken.started_at == clock.now
    assert lease_warnings(caplog) == [
        f"run {RUN_ID}: took over the lease of host {socket.gethostname()} pid {os.getpid()} "
        "since 2026-12-06T12:00:00Z (lease renewed 75 s ago, expired 15 s ago)"
    ]


def test_a_lease_whose_holder_on_this_host_has_ended_is_taken_over_at_once_and_logged(
    stored: StoredLease, clock: FakeClock, ended_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    stored.write(lease_of_this_host(ended_pid).to_json())
    clock.advance(10)  # 50 s before it expires

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        taken = lease(stored.location, clock).acquire()

    assert (taken.pid, taken.started_at) == (os.getpid(), T0 + 10)
    data = stored.read()
    assert data is not None
    assert LeaseRecord.from_json(data) == taken
    assert lease_warnings(caplog) == [
        f"run {RUN_ID}: took over the lease of host {socket.gethostname()} pid {ended_pid} "
        "since 2026-12-06T12:00:00Z (lease renewed 10 s ago, expires in 50 s)"
    ]


def test_a_lease_whose_holder_on_this_host_still_runs_is_refused_before_it_expires(
    stored: StoredLease, clock: FakeClock, running_pid: int
) -> None:
    holder = lease_of_this_host(running_pid)
    stored.write(holder.to_json())
    clock.advance(10)

    with pytest.raises(LeaseHeldError) as refused:
        lease(stored.location, clock).acquire()

    assert refused.value.holder == holder
    assert stored.read() == holder.to_json()


def test_the_stalled_holder_learns_it_lost_the_lease_and_to_whom(
    location: str, clock: FakeClock
) -> None:
    stalled, taker = taken_over(location, clock)

    with pytest.raises(LeaseLostError) as lost:
        stalled.renew()

    assert lost.value.by == taker.held
    assert "this process lost its lease, taken over by host" in str(lost.value)
    assert stalled.held is None


def test_releasing_never_deletes_someone_elses_lease(
    location: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stalled, taker = taken_over(location, clock)

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        assert stalled.release() is False

    assert taker.current() == taker.held
    assert "the lease is no longer ours" in caplog.text


@pytest.mark.parametrize("round_", range(10))
def test_of_racing_takers_of_a_stale_lease_exactly_one_wins(
    location: str, clock: FakeClock, round_: int
) -> None:
    lease(location, clock).acquire()
    clock.advance(TTL + 1)
    takers = [lease(location, clock) for _ in range(8)]
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

    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    [winner] = [taker for taker in takers if taker.held is not None]
    assert winner.current() == winner.held


def test_a_taker_that_saw_the_stale_lease_loses_to_the_one_that_took_it_first(
    location: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease(location, clock).acquire()
    clock.advance(TTL + 1)
    slow, fast = lease(location, clock), lease(location, clock)
    read = slow._slot.read

    def read_then_be_overtaken() -> object:
        stale = read()
        fast.acquire()  # between the slow taker's read and its compare-and-swap
        return stale

    monkeypatch.setattr(slow._slot, "read", read_then_be_overtaken)

    with pytest.raises(LeaseHeldError) as refused:
        slow.acquire()

    assert refused.value.holder == fast.held
    assert fast.current() == fast.held


def test_a_held_lease_is_renewed_every_third_of_its_ttl_and_released_at_the_end(
    stored: StoredLease, clock: FakeClock
) -> None:
    pause = FakePause(clock, rounds=3)

    with held_lease(stored.location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        pass

    assert pause.waits[:3] == [20.0, 20.0, 20.0]
    assert held.lost is False
    assert stored.read() is None


def test_renewals_push_the_expiry_while_the_block_runs(location: str, clock: FakeClock) -> None:
    renewed = threading.Event()
    pause = FakePause(clock, rounds=2, then=renewed.set)

    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        assert renewed.wait(timeout=30)
        current = held.lease.current()

    assert current is not None
    assert current.renewed_at == T0 + 40
    assert current.expires_at == T0 + 40 + TTL
    assert held.lost is False
    assert held.lease.current() is None


def test_a_held_lease_that_was_taken_over_is_reported_lost_and_left_to_its_taker(
    location: str, clock: FakeClock
) -> None:
    taker = lease(location, clock)

    def stall_then_be_taken_over() -> None:
        clock.advance(TTL + 1)
        taker.acquire()

    pause = FakePause(clock, rounds=0, then=stall_then_be_taken_over)
    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        pass  # leaving joins the renewing thread, which has made its one renewal

    assert held.lost is True
    assert held.lost_to == taker.held
    with pytest.raises(LeaseLostError):
        held.raise_if_lost()
    assert taker.current() == taker.held


def test_held_lease_refuses_a_run_that_is_running(location: str, clock: FakeClock) -> None:
    lease(location, clock).acquire()

    with (
        pytest.raises(LeaseHeldError, match="wait for it to end, or stop it"),
        held_lease(location, RUN_ID, clock=clock, pause=FakePause(clock, rounds=0)),
    ):
        pytest.fail("entered a run another process holds")


# -- S3 only: where the lease object is, and the conditional writes the lease relies on, which
# -- the stand-in's S3 answers as S3 does ------------------------------------------------------


def test_the_lease_is_an_object_beside_the_runs_other_files(
    s3: BaseClient, bucket: str, clock: FakeClock
) -> None:
    location = S3StoredLease(s3, bucket).location
    record = lease(location, clock).acquire()

    assert location == f"s3://{bucket}/novaflow/runs/{RUN_ID}/lease.json"
    stored = s3.get_object(Bucket=bucket, Key=f"novaflow/runs/{RUN_ID}/lease.json")
    assert json.loads(stored["Body"].read())["holder"] == record.holder


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
