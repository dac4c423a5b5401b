"""Pacing shared between runs through Prefect global limits: two runs started together stay
under the account's quota together, not each on its own; the limits are created idempotently,
a missing one is an error, and a shard holds its slots and gives back what it did not spend."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.client.schemas.objects import State
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed_flow
from tasks.global_limits import (
    ensure_shared_limits,
    prefect_rate_limit_source,
    shard_pacing,
)
from tasks.report.summary import RunSummary
from tasks.settings import (
    EmbeddingSettings,
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.shared_quota import bucket_capacity
from tests.flows.conftest import QUOTA
from tests.flows.text_corpora import text_corpus

UNITS_PER_RUN = 60  # 6 s of the quota: long beside a flow run's start-up, so the runs overlap


def _limit_name() -> str:
    return f"novaflow-test-{uuid.uuid4().hex[:8]}"


def _settings(tmp_path: Path, tag: str, throughput: ThroughputSettings) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / tag / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="quota-tests", index=f"i-{uuid.uuid4().hex[:12]}"),
        embedding=EmbeddingSettings(dimension=256),
        throughput=throughput,
        evaluation=EvaluationSettings(enabled=False),
    )


def _two_runs_together(
    tmp_path: Path, throughputs: dict[str, ThroughputSettings]
) -> list[tuple[RunSummary, tuple[float, float]]]:
    """Run one flow per entry in threads of this process, released together; returns each
    run's summary and the span of its shards (first shard's start to last one's end, epoch s)."""
    runs = []
    for tag, throughput in throughputs.items():
        manifest = text_corpus(tmp_path / tag / "corpus", tag, UNITS_PER_RUN)
        settings = _settings(tmp_path, tag, throughput)
        runs.append(
            ReembedParameters(manifest=str(manifest), root=str(manifest.parent), settings=settings)
        )
    start = threading.Barrier(len(runs))
    states: list[State[RunSummary]] = []
    errors: list[BaseException] = []

    def run(params: ReembedParameters) -> None:
        start.wait()
        try:
            states.append(reembed_flow(params.settings)(params, return_state=True))
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(params,)) for params in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return [(state.result(), _shard_span(state)) for state in states]


def _shard_span(state: State[RunSummary]) -> tuple[float, float]:
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="embed-shard")),
        )
    starts = [run.start_time.timestamp() for run in task_runs if run.start_time]
    ends = [run.end_time.timestamp() for run in task_runs if run.end_time]
    return min(starts), max(ends)


def _overlap(spans: list[tuple[float, float]]) -> float:
    """Seconds during which every span was going."""
    return min(end for _, end in spans) - max(start for start, _ in spans)


def _invoke_counts(stand_in: Emulator) -> tuple[int, int]:
    """(InvokeModel calls, of which throttled) as the stand-in counted them."""
    stats = stand_in.stats()["bedrock-runtime"]
    throttled = stats["errors"].get("InvokeModel", {}).get("ThrottlingException", 0)
    return stats["calls"].get("InvokeModel", 0), throttled


@pytest.mark.slow
def test_two_runs_started_together_stay_under_the_quota_together(
    quota: Emulator, tmp_path: Path
) -> None:
    name = _limit_name()
    shared = {"shared_rate_limit_name": name, "shared_requests_per_second": QUOTA}
    # Each run alone may use the whole quota (its own pace is Q). Both run in this process, so
    # each gets a budget of its own (they differ in batch), as runs in two processes would:
    # only the Prefect limit is shared.
    base = ThroughputSettings(shard_size=10, concurrency=4, requests_per_second=QUOTA)
    summaries = _two_runs_together(
        tmp_path,
        {
            "nightly": base.model_copy(update={**shared, "shared_batch": 5}),
            "backfill": base.model_copy(update={**shared, "shared_batch": 4}),
        },
    )

    calls, throttled = _invoke_counts(quota)
    assert _overlap([span for _, span in summaries]) > 3.0  # they did go side by side
    assert throttled == 0
    assert calls == 2 * UNITS_PER_RUN
    assert all(s.adds_up and s.units_embedded == UNITS_PER_RUN for s, _ in summaries)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    assert (limit.limit, limit.slot_decay_per_second) == (bucket_capacity(QUOTA), QUOTA)


@pytest.mark.slow
def test_without_a_shared_budget_the_same_two_runs_go_over_the_quota(
    quota: Emulator, tmp_path: Path
) -> None:
    # Each paces itself near Q. Their rates differ so that, in this one process, each gets a
    # pacer of its own (``process_pacer`` is one per rate), as runs in two processes would.
    base = ThroughputSettings(shard_size=10, concurrency=4)
    summaries = _two_runs_together(
        tmp_path,
        {
            "nightly": base.model_copy(update={"requests_per_second": QUOTA - 0.5}),
            "backfill": base.model_copy(update={"requests_per_second": QUOTA - 1.0}),
        },
    )

    _, throttled = _invoke_counts(quota)
    assert _overlap([span for _, span in summaries]) > 1.0
    assert throttled > 0  # what the shared budget prevents, measured the same way
    assert all(s.adds_up for s, _ in summaries)


def test_shared_limits_are_created_once_and_updated_to_the_settings(
    prefect_harness: None,
) -> None:
    rate_name, in_flight_name = _limit_name(), _limit_name()
    throughput = ThroughputSettings(
        concurrency=4,
        shared_rate_limit_name=rate_name,
        shared_requests_per_second=40,
        shared_in_flight_limit_name=in_flight_name,
        shared_in_flight=16,
    )
    start = threading.Barrier(4)
    created: list[list[str]] = []

    def create() -> None:
        start.wait()  # runs starting together race to create the same limits
        created.append(ensure_shared_limits(throughput))

    racers = [threading.Thread(target=create) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert created == [[rate_name, in_flight_name]] * 4

    smaller = throughput.model_copy(update={"shared_requests_per_second": 10.0})
    ensure_shared_limits(smaller)
    with get_client(sync_client=True) as client:
        rate = client.read_global_concurrency_limit_by_name(rate_name)
        in_flight = client.read_global_concurrency_limit_by_name(in_flight_name)
        same_names = [
            limit
            for limit in client.read_global_concurrency_limits(limit=200)
            if limit.name in (rate_name, in_flight_name)
        ]
    assert (rate.limit, rate.slot_decay_per_second) == (bucket_capacity(10.0), 10.0)
    assert (in_flight.limit, in_flight.slot_decay_per_second) == (16, 0.0)
    assert len(same_names) == 2


def test_a_missing_limit_is_an_error_not_unlimited(prefect_harness: None) -> None:
    take, _ = prefect_rate_limit_source(_limit_name(), 10.0)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"):
        take(1)
    missing = ThroughputSettings(
        concurrency=4, shared_in_flight_limit_name=_limit_name(), shared_in_flight=8
    )
    with pytest.raises(ConcurrencySlotAcquisitionError), shard_pacing(missing):
        pass


def test_a_shard_holds_its_slots_and_gives_back_what_it_did_not_spend(
    prefect_harness: None,
) -> None:
    throughput = ThroughputSettings(
        concurrency=4,
        concurrency_limit_name=_limit_name(),
        shared_in_flight_limit_name=_limit_name(),
        shared_in_flight=8,
        shared_rate_limit_name=_limit_name(),
        shared_requests_per_second=40,
        shared_batch=10,
    )
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(throughput.concurrency_limit_name or "", 2)
    ensure_shared_limits(throughput)

    def active(name: str | None) -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(name or "").active_slots

    with shard_pacing(throughput) as pacer:
        assert pacer is not None
        pacer.acquire()
        assert active(throughput.concurrency_limit_name) == 1
        assert active(throughput.shared_in_flight_limit_name) == throughput.concurrency
    assert active(throughput.concurrency_limit_name) == 0
    assert active(throughput.shared_in_flight_limit_name) == 0
    counters = pacer.budget.counters
    assert counters.spent == 1
    assert counters.given_back + counters.expired == counters.granted - 1
    assert counters.held == 0
