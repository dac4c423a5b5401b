"""The Pacer against a fake clock: rate, burst, slowing down, recovering, and many threads."""

from __future__ import annotations

import threading

import pytest

from tasks.pacing import Pacer


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
