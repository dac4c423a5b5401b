"""The Pacer against a fake clock: rate, burst, slowing down, recovering, and many threads; the
budget shared between processes (SharedBudget, SharedPacer) against a fake source and refills
run by hand, and the settings that configure it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from tasks.pacing import Pacer
from tasks.settings import ThroughputSettings
from tasks.shared_quota import (
    SharedBudget,
    SharedBudgetError,
    SharedPacer,
    batch_size,
    bucket_capacity,
)


class FakeTime:
    """A clock that only moves when someone sleeps on it (or a test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def pacer(time: FakeTime, rate: float, burst: float | None = None, **options: float) -> Pacer:
    return Pacer(rate, burst, clock=time.clock, sleep=time.sleep, **options)  # type: ignore[arg-type]


def test_a_full_burst_goes_at_once_then_requests_are_spaced_at_the_rate() -> None:
    time = FakeTime()
    paced = pacer(time, rate=10, burst=3)
    assert [paced.acquire() for _ in range(3)] == [0, 0, 0]
    waits = [paced.acquire() for _ in range(4)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert time.sleeps == pytest.approx(waits)


def test_default_burst_is_one_seconds_worth() -> None:
    time = FakeTime()
    paced = pacer(time, rate=5)
    assert sum(paced.acquire() == 0 for _ in range(6)) == 5


def test_tokens_refill_with_time_but_never_beyond_the_burst() -> None:
    time = FakeTime()
    paced = pacer(time, rate=10, burst=2)
    paced.acquire(2)
    time.advance(0.1)
    assert paced.acquire() == 0
    assert paced.acquire() == pytest.approx(0.1)
    time.advance(60)
    assert [paced.acquire() for _ in range(2)] == [0, 0]
    assert paced.acquire() == pytest.approx(0.1)


def test_acquiring_more_than_the_burst_waits_for_the_debt_instead_of_blocking_forever() -> None:
    time = FakeTime()
    paced = pacer(time, rate=2500, burst=2500)
    assert paced.acquire(500) == 0
    assert paced.acquire(2500) == pytest.approx(500 / 2500)
    assert paced.acquire(500) == pytest.approx(1000 / 2500)


def test_over_a_long_run_the_achieved_rate_is_the_configured_rate() -> None:
    time = FakeTime()
    paced = pacer(time, rate=40, burst=1)
    for _ in range(400):
        time.advance(paced.acquire())
    assert 400 / time.now == pytest.approx(40, rel=0.01)


def test_slow_down_halves_the_rate_forfeits_the_burst_and_stops_at_the_floor() -> None:
    time = FakeTime()
    paced = pacer(time, rate=16, burst=16, min_rate_per_second=3, cooldown_seconds=0)
    assert paced.slow_down()
    assert paced.rate_per_second == 8
    assert paced.acquire() == pytest.approx(1 / 8)  # the saved burst is gone
    paced.slow_down()
    paced.slow_down()
    assert paced.rate_per_second == 3
    assert paced.slow_downs == 3


def test_slow_downs_within_the_cooldown_count_once() -> None:
    time = FakeTime()
    paced = pacer(time, rate=20, cooldown_seconds=1.0)
    assert paced.slow_down()
    assert not paced.slow_down()
    assert paced.rate_per_second == 10
    time.advance(1.0)
    assert paced.slow_down()
    assert paced.rate_per_second == 5


def test_successes_win_back_a_share_of_the_lost_rate_until_it_is_all_back() -> None:
    time = FakeTime()
    paced = pacer(time, rate=20, recovery_successes=10)
    paced.slow_down()
    assert paced.rate_per_second == 10
    paced.record_success()
    assert paced.rate_per_second == pytest.approx(11)  # a tenth of the gap of 10
    paced.record_success()
    assert paced.rate_per_second == pytest.approx(11.9)
    for _ in range(100):
        paced.record_success()
    assert paced.rate_per_second == 20


def test_success_at_the_configured_rate_changes_nothing() -> None:
    paced = pacer(FakeTime(), rate=20)
    paced.record_success()
    assert paced.rate_per_second == 20


def test_many_threads_share_the_rate_exactly_without_real_sleeps() -> None:
    time = FakeTime()
    paced = pacer(time, rate=50, burst=1)
    threads, per_thread = 16, 25
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(per_thread):
            waited = paced.acquire()
            with lock:
                waits.append(waited)

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    # Every caller got its own slot: the waits are 0, 1/50, 2/50, … with none shared or lost.
    slots = sorted(round(w * 50) for w in waits)
    assert slots == list(range(threads * per_thread))


@pytest.mark.parametrize("arguments", [{"rate_per_second": 0}, {"rate_per_second": 5, "burst": 0}])
def test_nonsense_settings_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(**arguments)  # type: ignore[arg-type]


def test_acquiring_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(5).acquire(0)


# -- a budget shared between processes: SharedBudget and SharedPacer --------------------------


class FakeSource:
    """A shared source that grants every batch at once, or raises ``error`` while it is set."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.error: Exception | None = None

    def __call__(self, tokens: int) -> None:
        if self.error is not None:
            raise self.error
        self.batches.append(tokens)


class ManualRefills:
    """Queues the refills a budget starts; the test runs them when it chooses."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []
        self.queued = threading.Semaphore(0)

    def __call__(self, refill: Callable[[], None]) -> None:
        self.pending.append(refill)
        self.queued.release()

    def run_next(self) -> None:
        assert self.queued.acquire(timeout=10), "no refill was started"
        self.pending.pop(0)()


def inline(refill: Callable[[], None]) -> None:
    refill()


def budget(
    source: FakeSource, batch: int, time: FakeTime | None = None, **options: Any
) -> SharedBudget:
    clock = (time or FakeTime()).clock
    options.setdefault("start_refill", inline)
    return SharedBudget(source, batch, clock=clock, **options)


def test_a_budget_takes_batches_and_hands_them_out_one_request_at_a_time() -> None:
    source = FakeSource()
    shared = budget(source, batch=4, low_water=1)
    assert [shared.acquire() for _ in range(3)] == [0, 0, 0]
    # The third request left 1 = low water: the next batch was taken before running out.
    assert source.batches == [4, 4]
    counters = shared.counters
    assert (counters.acquisitions, counters.granted, counters.spent, counters.held) == (2, 8, 3, 5)


def test_callers_that_find_the_allowance_empty_wait_for_one_refill_that_serves_them_all() -> None:
    source, refills = FakeSource(), ManualRefills()
    shared = budget(source, batch=3, start_refill=refills)
    served: list[float] = []
    callers = [threading.Thread(target=lambda: served.append(shared.acquire())) for _ in range(3)]
    for caller in callers:
        caller.start()
    refills.run_next()  # the first caller started it; the others waited for it, not a second
    for caller in callers:
        caller.join(timeout=10)
    assert len(served) == 3
    assert source.batches == [3]
    assert shared.counters.held == 0


def test_a_refill_runs_while_the_last_requests_of_the_allowance_are_spent() -> None:
    source, refills = FakeSource(), ManualRefills()
    shared = budget(source, batch=4, low_water=2, start_refill=refills)
    first = threading.Thread(target=shared.acquire)
    first.start()
    refills.run_next()
    first.join(timeout=10)
    assert shared.acquire() == 0  # 2 left = low water: a refill starts, nobody waits for it
    assert shared.acquire() == 0
    assert len(refills.pending) == 1
    refills.run_next()
    assert shared.counters.held == 1 + 4


def test_grants_expire_after_their_lifetime_and_are_counted_not_spent() -> None:
    time, source = FakeTime(), FakeSource()
    shared = budget(source, batch=4, time=time, low_water=0, token_lifetime_seconds=1.0)
    shared.acquire()
    time.advance(1.0)
    shared.acquire()  # the 3 left of the first batch are stale: a fresh batch is taken
    counters = shared.counters
    assert source.batches == [4, 4]
    assert (counters.spent, counters.expired, counters.held) == (2, 3, 3)


def test_a_failed_refill_fails_its_waiting_callers_and_the_next_acquire_tries_again() -> None:
    source = FakeSource()
    source.error = RuntimeError("no such limit")
    shared = budget(source, batch=2)
    with pytest.raises(SharedBudgetError, match="no such limit"):
        shared.acquire()
    source.error = None
    assert shared.acquire() == 0
    assert shared.counters.failures == 1


def test_acquiring_more_than_a_batch_takes_as_many_batches_as_it_needs() -> None:
    source = FakeSource()
    shared = budget(source, batch=2, low_water=0)
    shared.acquire(5)
    assert source.batches == [2, 2, 2]
    assert shared.counters.held == 1


def test_when_the_last_user_leaves_its_unspent_allowance_goes_back_but_not_stale_grants() -> None:
    time, source, returned = FakeTime(), FakeSource(), []
    shared = budget(source, batch=4, time=time, low_water=0, give_back=returned.append)
    with shared.in_use():
        with shared.in_use():
            shared.acquire()
        assert returned == []  # a shard still runs: the allowance stays
    assert returned == [3]
    with shared.in_use():
        shared.acquire()
        time.advance(1.0)
    assert returned == [3]  # expired by then: they stood for a second that has passed
    assert (shared.counters.given_back, shared.counters.expired) == (3, 3)


def test_a_refill_that_lands_after_the_last_user_left_goes_back_at_once() -> None:
    source, refills, returned = FakeSource(), ManualRefills(), []
    shared = budget(source, batch=4, start_refill=refills, give_back=returned.append)
    with shared.in_use():
        first = threading.Thread(target=shared.acquire)
        first.start()
        refills.run_next()
        first.join(timeout=10)
        assert len(refills.pending) == 1  # 3 in hand, under a batch: the next one is asked for
    refills.run_next()
    assert returned == [3, 4]
    assert shared.counters.held == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"batch": 0}, "batch"), ({"batch": 4, "low_water": 4}, "low_water")],
)
def test_nonsense_budgets_are_refused(arguments: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedBudget(FakeSource(), **arguments)


def test_batch_size_makes_a_few_round_trips_a_second_at_the_whole_budget() -> None:
    assert batch_size(40) == 10
    assert batch_size(40, acquisitions_per_second=1) == 20  # at most the bucket's half second
    assert batch_size(0.5) == 1
    assert (bucket_capacity(40), bucket_capacity(0.5)) == (20, 1)


def test_a_shared_pacer_paces_locally_spends_the_budget_and_slows_down_locally() -> None:
    time, source = FakeTime(), FakeSource()
    local = pacer(time, rate=10, burst=1)
    shared = SharedPacer(local, budget(source, batch=5, time=time))
    assert shared.acquire() == 0
    assert shared.acquire() == pytest.approx(0.1)  # the local pace, as with a bare Pacer
    assert shared.slow_down()
    assert local.rate_per_second == 5
    shared.record_success()
    assert local.rate_per_second > 5
    assert shared.budget.counters.spent == 2


# -- the shared budget's settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shared_rate_limit_name": "bedrock"}, "set together"),
        ({"shared_requests_per_second": 40}, "set together"),
        ({"shared_batch": 4}, "shared_batch"),
        (
            {"shared_rate_limit_name": "b", "shared_requests_per_second": 40, "shared_batch": 21},
            "shared_batch",
        ),
        ({"shared_in_flight_limit_name": "f", "shared_in_flight": 2, "concurrency": 4}, "least"),
        ({"dask_address": "tcp://127.0.0.1:8786"}, "dask"),
    ],
)
def test_shared_budget_settings_that_cannot_work_are_refused(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ThroughputSettings(**settings)
