"""The shared request budget and the in-flight bound, kept by Prefect global concurrency limits.

Runs that name the same limits share them, whichever process or Dask worker they run in:

- **Rate**: ``throughput.shared_rate_limit_name`` is a limit with slot decay, a token bucket on the
  Prefect server holding half a second of ``shared_requests_per_second`` (at least 1 slot, see
  ``tasks.shared_quota.bucket_capacity``) and refilling at that rate. Each process takes
  ``shared_batch`` slots per acquisition (a server round trip, as ``rate_limit()`` makes; about
  8 a second per process at best) and hands them out to its requests through
  ``tasks.shared_quota.SharedPacer``, never one round trip per request; what it holds unspent
  when its last shard ends goes back to the limit.
- **In flight**: ``throughput.shared_in_flight_limit_name`` is a plain concurrency limit of
  ``shared_in_flight`` slots; each shard holds ``concurrency`` of them while it embeds (its most
  calls in flight), so all runs together never have more calls in flight than the limit.

``ensure_shared_limits`` creates or updates both (an upsert) at the start of every run, and they
are always taken with ``strict=True``: a limit missing by then is an error, never "unlimited".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http import HTTPStatus

import httpx
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.context import SettingsContext, get_settings_context
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import get_current_settings

from tasks.pacing import Pacer
from tasks.settings import ThroughputSettings
from tasks.shared_quota import (
    GiveBack,
    SharedBudget,
    SharedPacer,
    TakeTokens,
    batch_size,
    bucket_capacity,
)

logger = logging.getLogger(__name__)

UPSERT_ATTEMPTS = 3


def shared_batch(throughput: ThroughputSettings) -> int:
    """Requests a process takes from the shared budget per round trip (0 without a budget)."""
    rate = throughput.shared_requests_per_second
    if rate is None:
        return 0
    if throughput.shared_batch is not None:
        return throughput.shared_batch
    return batch_size(rate)


def ensure_shared_limits(throughput: ThroughputSettings) -> list[str]:
    """Create the global limits ``throughput`` names, or update them to its sizes (two runs
    starting together may race to create one: the loser updates instead). Returns their names."""
    wanted: list[tuple[str, int, float]] = []
    if throughput.shared_rate_limit_name and throughput.shared_requests_per_second:
        rate = throughput.shared_requests_per_second
        wanted.append((throughput.shared_rate_limit_name, bucket_capacity(rate), rate))
    if throughput.shared_in_flight_limit_name and throughput.shared_in_flight:
        # No decay: slots are given back when a shard ends, not as time passes.
        wanted.append((throughput.shared_in_flight_limit_name, throughput.shared_in_flight, 0.0))
    if not wanted:
        return []
    if not get_current_settings().api.url:
        logger.warning(
            "the shared limits live in this process's temporary Prefect server, where no other "
            "run sees them: point PREFECT_API_URL of every run at one Prefect server"
        )
    with get_client(sync_client=True) as client:
        for name, limit, decay in wanted:
            for attempt in range(1, UPSERT_ATTEMPTS + 1):
                try:
                    client.upsert_global_concurrency_limit_by_name(name, limit, decay)
                    break
                except ObjectAlreadyExists:
                    if attempt == UPSERT_ATTEMPTS:
                        raise
    return [name for name, _, _ in wanted]


def prefect_rate_limit_source(name: str, requests_per_second: float) -> tuple[TakeTokens, GiveBack]:
    """Take from and give back to the Prefect rate limit ``name`` (refilling at
    ``requests_per_second``), from any thread.

    Taking is what ``prefect.concurrency.sync.rate_limit(name, occupy=n, strict=True)`` does,
    one request to the server per attempt (less its events), except for the wait after a
    refusal (HTTP 423): the server's Retry-After grows with every refusal of every process (its
    ``denied_slots``); two processes measured waits of up to 2.5 s, whole seconds in which
    neither sent a request while the limit sat full (bench/bench_shared_quota.py: goodput 0.84
    of the budget, against 0.94 with this wait). This waits at most the time ``n`` slots take
    to free up at the full rate. Both call Prefect's API under
    the settings of the thread that made them (a refill runs in a thread of its own, which would
    otherwise see the process's default profile, not, in a Dask worker, the API the flow run
    handed over)."""
    captured = get_settings_context()

    def take(tokens: int) -> None:
        longest_wait = tokens / requests_per_second
        with (
            SettingsContext(profile=captured.profile, settings=captured.settings),
            get_client(sync_client=True) as client,
        ):
            while True:
                try:
                    granted = client.increment_concurrency_slots([name], tokens, "rate_limit")
                except httpx.HTTPStatusError as refused:
                    if refused.response.status_code != HTTPStatus.LOCKED:
                        raise
                    retry_after = float(refused.response.headers.get("Retry-After", longest_wait))
                    time.sleep(min(retry_after, longest_wait))
                    continue
                if not granted.json():  # as rate_limit(strict=True): never "unlimited"
                    raise ConcurrencySlotAcquisitionError(
                        f"Concurrency limits {[name]!r} must be created before acquiring slots"
                    )
                return

    def give_back(tokens: int) -> None:
        with (
            SettingsContext(profile=captured.profile, settings=captured.settings),
            get_client(sync_client=True) as client,
        ):
            # A rate limit's occupancy is not measured; the API wants a positive one.
            client.release_concurrency_slots([name], tokens, occupancy_seconds=0.001)

    return take, give_back


_pacers: dict[tuple[str, float, int, float], SharedPacer] = {}
_pacers_lock = threading.Lock()


def shared_request_pacer(throughput: ThroughputSettings) -> SharedPacer | None:
    """The one ``SharedPacer`` of this process for ``throughput``'s shared budget (None when it
    names none): shards embedded side by side in a process share its allowance and its local
    pace, as they share ``tasks.embed.stage.process_pacer`` without a shared budget."""
    name, rate = throughput.shared_rate_limit_name, throughput.shared_requests_per_second
    if name is None or rate is None:
        return None
    batch = shared_batch(throughput)
    key = (name, rate, batch, throughput.requests_per_second)
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None:
            take, give_back = prefect_rate_limit_source(name, rate)
            budget = SharedBudget(take, batch, give_back=give_back)
            pacer = SharedPacer(Pacer(throughput.requests_per_second), budget)
            _pacers[key] = pacer
        return pacer


@contextmanager
def shard_pacing(throughput: ThroughputSettings) -> Iterator[SharedPacer | None]:
    """Everything one shard holds of the shared limits ``throughput`` names: a slot of
    ``concurrency_limit_name`` (shards at once), ``concurrency`` slots of
    ``shared_in_flight_limit_name`` (calls in flight), one server round trip each, taken in
    that order so that no shard holds the second while waiting for the first; and the process's
    shared pacer, in use (yielded; None without a shared budget), whose unspent allowance goes
    back to the budget when the process's last shard ends."""
    with ExitStack() as held:
        if throughput.concurrency_limit_name:
            held.enter_context(concurrency(throughput.concurrency_limit_name, strict=True))
        if throughput.shared_in_flight_limit_name:
            held.enter_context(
                concurrency(
                    throughput.shared_in_flight_limit_name,
                    occupy=throughput.concurrency,
                    strict=True,
                )
            )
        pacer = shared_request_pacer(throughput)
        if pacer is not None:
            held.enter_context(pacer.in_use())
        yield pacer
