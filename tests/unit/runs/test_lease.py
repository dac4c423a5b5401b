"""The run lease in a local directory: one live holder per run, named to whoever else tries;
renewed, released, taken over once stale (and logged), never won by two racing takers, and
never deleted by a process that no longer holds it. Time is a fake clock; nothing sleeps."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tasks.runs.lease import (
    LeaseHeldError,
    LeaseLostError,
    LeaseRecord,
    RunLease,
    held_lease,
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
    then: object = None
    waits: list[float] = field(default_factory=list)

    def __call__(self, stop: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if len(self.waits) <= self.rounds:
            self.clock.advance(seconds)
            return False
        if callable(self.then):
            then, self.then = self.then, None
            then()
            return False
        return stop.wait(timeout=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def location(tmp_path: Path) -> str:
    """The run's lease path in a fresh local store."""
    return lease_location(CheckpointStore(str(tmp_path / "store")), RUN_ID)


def lease(location: str, clock: FakeClock) -> RunLease:
    return RunLease(location, RUN_ID, ttl_seconds=TTL, clock=clock)


def test_the_lease_lives_beside_the_runs_other_files(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    assert lease_location(store, RUN_ID) == f"{tmp_path.resolve()}/runs/{RUN_ID}/lease.json"


def test_acquiring_writes_who_holds_the_run_and_until_when(location: str, clock: FakeClock) -> None:
    record = lease(location, clock).acquire()

    document = json.loads(Path(location).read_text())
    assert document == {
        "run_id": RUN_ID,
        "holder": record.holder,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": "2026-12-06T12:00:00.000Z",
        "renewed_at": "2026-12-06T12:00:00.000Z",
        "expires_at": "2026-12-06T12:01:00.000Z",
    }
    assert LeaseRecord.from_json(Path(location).read_bytes()) == record


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


def test_a_released_lease_is_gone_and_the_run_free_again(location: str, clock: FakeClock) -> None:
    first = lease(location, clock)
    first.acquire()

    assert first.release() is True
    assert not Path(location).exists()
    assert first.held is None
    assert lease(location, clock).acquire().run_id == RUN_ID


def test_a_stale_lease_is_taken_over_and_the_takeover_logged(
    location: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stale = lease(location, clock)
    stale.acquire()
    clock.advance(TTL + 15)

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        taken = lease(location, clock).acquire()

    assert taken.holder != stale.held.holder  # type: ignore[union-attr]
    assert taken.started_at == clock.now
    [warning] = [r.getMessage() for r in caplog.records if r.name == "tasks.runs.lease"]
    assert warning == (
        f"run {RUN_ID}: took over the lease of host {socket.gethostname()} pid {os.getpid()} "
        "since 2026-12-06T12:00:00Z (lease renewed 75 s ago, expired 15 s ago)"
    )


def test_the_stalled_holder_learns_it_lost_the_lease_and_to_whom(
    location: str, clock: FakeClock
) -> None:
    stalled = lease(location, clock)
    stalled.acquire()
    clock.advance(TTL + 1)
    taker = lease(location, clock)
    taker.acquire()

    with pytest.raises(LeaseLostError) as lost:
        stalled.renew()

    assert lost.value.by == taker.held
    assert "this process lost its lease, taken over by host" in str(lost.value)
    assert stalled.held is None


def test_releasing_never_deletes_someone_elses_lease(
    location: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stalled = lease(location, clock)
    stalled.acquire()
    clock.advance(TTL + 1)
    taker = lease(location, clock)
    taker.acquire()

    with caplog.at_level(logging.WARNING, logger="tasks.runs.lease"):
        assert stalled.release() is False

    assert taker.current() == taker.held
    assert "the lease is no longer ours" in caplog.text


def test_an_unreadable_lease_file_is_taken_over(location: str, clock: FakeClock) -> None:
    Path(location).parent.mkdir(parents=True)
    Path(location).write_bytes(b'{"run_id": "torn')  # a crash while it was created

    record = lease(location, clock).acquire()

    assert LeaseRecord.from_json(Path(location).read_bytes()) == record


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
    location: str, clock: FakeClock
) -> None:
    pause = FakePause(clock, rounds=3)

    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        pass

    assert pause.waits[:3] == [20.0, 20.0, 20.0]
    assert held.lost is False
    assert not Path(location).exists()


def test_renewals_push_the_expiry_while_the_block_runs(location: str, clock: FakeClock) -> None:
    renewed = threading.Event()
    pause = FakePause(clock, rounds=2, then=renewed.set)

    with held_lease(location, RUN_ID, ttl_seconds=TTL, clock=clock, pause=pause) as held:
        assert renewed.wait(timeout=30)
        current = held.lease.current()

    assert current is not None
    assert current.renewed_at == T0 + 40
    assert current.expires_at == T0 + 40 + TTL


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


def test_looking_at_a_run_without_a_lease_leaves_no_trace(tmp_path: Path, clock: FakeClock) -> None:
    location = lease_location(CheckpointStore(str(tmp_path)), RUN_ID)

    assert lease(location, clock).current() is None
    assert list(tmp_path.iterdir()) == []
