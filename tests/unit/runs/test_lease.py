"""The run lease in a local directory, where only a local store behaves so: the lease file's
path, a torn lease file, and looking at a run without leaving a trace. What the lease does on
every store (local and S3) is tested once for both in ``tests/adapters/test_run_lease.py``,
with the fake clock and pause below. Time is a fake clock; nothing sleeps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tasks.runs.lease import (
    LeaseHeldError,
    LeaseRecord,
    RunLease,
    held_lease,
    index_lease_location,
    lease_location,
)
from tasks.store import CheckpointStore

RUN_ID = "2026-12-06T12-00-00-abc123"
T0 = 1_796_558_400.0  # 2026-12-06T12:00:00Z
TTL = 60.0


@dataclass
class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakePause:
    """The renewing thread's wait: each call lets ``seconds`` pass on the clock and returns at
    once, ``rounds`` times; then it runs ``then`` (if any) once more, or parks the thread until
    the lease is released (with a deadline, so a failing test cannot hang)."""

    clock: FakeClock
    rounds: int
    then: Callable[[], object] | None = None
    waits: list[float] = field(default_factory=list)

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if len(self.waits) <= self.rounds:
            self.clock.advance(seconds)
            return False
        if self.then is not None:
            then, self.then = self.then, None
            then()
            return False
        return stop.wait(timeout=30)


def lease(location: str, clock: FakeClock) -> RunLease:
    """A process's claim on the test run's lease, with the test's ttl and clock."""
    return RunLease(location, RUN_ID, ttl_seconds=TTL, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_the_lease_file_lives_beside_the_runs_other_files(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    assert lease_location(store, RUN_ID) == f"{tmp_path.resolve()}/runs/{RUN_ID}/lease.json"


def test_an_index_lease_lives_apart_from_the_state_it_guards(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))

    location = index_lease_location(store, "docs", "main")

    assert location == f"{tmp_path.resolve()}/indexes/docs/main/lease.json"
    assert not location.startswith(store.state_dir("docs", "main"))


def test_a_second_run_on_an_index_is_refused_and_told_which_run_writes_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    location = index_lease_location(CheckpointStore(str(tmp_path)), "docs", "main")
    RunLease(location, RUN_ID, ttl_seconds=TTL, clock=clock, subject="index docs/main").acquire()
    clock.advance(5)

    other = RunLease(
        location, "another-run", ttl_seconds=TTL, clock=clock, subject="index docs/main"
    )
    with pytest.raises(LeaseHeldError) as refused:
        other.acquire()

    message = str(refused.value)
    assert message.startswith(f"index docs/main is being written by run {RUN_ID}, host ")
    assert message.endswith(
        "(lease renewed 5 s ago, expires in 55 s); wait for it to end, or stop it"
    )


@dataclass
class WaitingPause:
    """A waiter's pause: lets the asked seconds pass on the clock at once; at the wait numbered
    ``release_at`` (if any), the holder first releases its lease. Later calls (the renewing
    thread's, once the waiter holds the lease) park until the lease is released."""

    clock: FakeClock
    holder: RunLease
    release_at: int | None = None
    waits: list[float] = field(default_factory=list)

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        if self.release_at is not None and len(self.waits) >= self.release_at:
            return stop.wait(timeout=30)
        self.waits.append(seconds)
        if len(self.waits) == self.release_at:
            self.holder.release()
        self.clock.advance(seconds)
        return False


def _index_holder(tmp_path: Path, clock: FakeClock) -> tuple[str, RunLease]:
    location = index_lease_location(CheckpointStore(str(tmp_path)), "docs", "main")
    holder = RunLease(location, RUN_ID, ttl_seconds=TTL, clock=clock, subject="index docs/main")
    holder.acquire()
    return location, holder


def test_a_second_run_waits_for_the_run_writing_the_index_and_then_holds_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    location, holder = _index_holder(tmp_path, clock)
    pause = WaitingPause(clock, holder, release_at=3)

    with held_lease(
        location, "another-run", ttl_seconds=TTL, clock=clock, pause=pause, wait_seconds=3600
    ) as held:
        assert held.lease.held is not None
        assert held.lease.held.run_id == "another-run"

    assert pause.waits == [TTL / 3] * 3  # tried again every third of the ttl until released


def test_a_second_run_is_refused_once_it_has_waited_as_long_as_it_may(
    tmp_path: Path, clock: FakeClock
) -> None:
    location, holder = _index_holder(tmp_path, clock)
    pause = WaitingPause(clock, holder)

    with (
        pytest.raises(LeaseHeldError, match=f"being written by run {RUN_ID}"),
        held_lease(
            location,
            "another-run",
            ttl_seconds=TTL,
            clock=clock,
            pause=pause,
            subject="index docs/main",
            wait_seconds=30,
        ),  # fmt: skip
    ):
        pass

    assert pause.waits == [TTL / 3, 30 - TTL / 3]  # no longer than asked, in all
    assert holder.current() == holder.held  # the holder's lease is untouched


def test_an_unreadable_lease_file_is_taken_over(tmp_path: Path, clock: FakeClock) -> None:
    location = lease_location(CheckpointStore(str(tmp_path)), RUN_ID)
    Path(location).parent.mkdir(parents=True)
    Path(location).write_bytes(b'{"run_id": "torn')  # a crash while it was created

    record = lease(location, clock).acquire()

    assert LeaseRecord.from_json(Path(location).read_bytes()) == record


def test_looking_at_a_run_without_a_lease_creates_no_run_folder(
    tmp_path: Path, clock: FakeClock
) -> None:
    location = lease_location(CheckpointStore(str(tmp_path)), RUN_ID)

    assert lease(location, clock).current() is None
    assert list(tmp_path.iterdir()) == []
