"""AsyncJobRunner on simulated time against a scripted Bedrock: every unit ends collected or
quarantined, at most ``max_jobs_in_flight`` jobs run, the ledger is written before each call,
a killed run resumes without duplicate jobs, and polling backs off without failing."""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.job_ledger import JobLedger
from tasks.jobs.runner import Collected, InputRefusedError
from tasks.jobs.service import PollSchedule
from tests.unit.jobs.async_fakes import (
    RUN_ID,
    Harness,
    JobPlan,
    RecordingStage,
    ScriptedJobService,
    SimulatedClock,
    SimulatedKill,
    arn_for,
    client_error,
    gaps_between,
    settings_with,
    status_call_count,
    throttled,
    token_for,
    units_named,
)

SERVICE_FAILURE = "Internal failure: the video stream could not be decoded"


def test_every_unit_ends_and_the_counts_say_what_happened(tmp_path: Path) -> None:
    stage = RecordingStage(
        refused={"huge": InputRefusedError("media_too_long", "3 h of video; the limit is 2 h")},
        collected_counts={"gappy": Collected(embedded=30, quarantined=2)},
    )
    harness = Harness(tmp_path, settings_with(), stage=stage)
    harness.jobs.plans = {token_for("flaky", 1): JobPlan(90, "Failed", SERVICE_FAILURE)}
    harness.jobs.refuse_status = lambda n, _: throttled("GetAsyncInvoke") if n % 4 == 0 else None
    units = units_named("talk", "flaky", "huge", "gappy", "lecture")

    outcome = harness.run(units)

    assert outcome.adds_up
    assert (outcome.jobs, outcome.collected, outcome.quarantined) == (5, 4, 1)
    ended = [key for key, *_ in stage.collected] + [key for key, _ in stage.quarantined]
    assert sorted(ended) == sorted(unit.key for unit in units)
    assert outcome.submissions == len(harness.jobs.accepted_tokens()) == 5
    assert outcome.resubmissions == 1
    assert outcome.resumed == 0
    calls = harness.jobs.status_calls
    assert outcome.status_calls == sum(call.answered for call in calls)
    assert outcome.throttled_status_calls == sum(c.answer == "ThrottlingException" for c in calls)
    assert outcome.throttled_status_calls > 0
    assert (outcome.segments_embedded, outcome.segments_quarantined) == (40 * 3 + 30, 2)
    latest = harness.ledger().latest_by_unit()
    collected = dict.fromkeys(["talk", "flaky", "gappy", "lecture"], "collected")
    assert {key: record.status for key, record in latest.items()} == {
        **collected,
        "huge": "quarantined",
    }
    assert latest["huge"].code == "media_too_long"


def test_no_more_than_max_jobs_run_at_once_and_the_next_goes_when_one_ends(
    tmp_path: Path,
) -> None:
    durations = random.Random(3)
    keys = [f"clip{i}" for i in range(10)]
    harness = Harness(tmp_path, settings_with(max_jobs_in_flight=3))
    harness.jobs.plans = {token_for(key, 1): JobPlan(durations.uniform(30, 900)) for key in keys}

    outcome = harness.run(units_named(*keys))

    assert outcome.collected == 10
    assert harness.jobs.max_in_flight == 3
    starts = harness.jobs.start_calls
    assert [call.at for call in starts[:3]] == [harness.clock.start] * 3
    noticed_ends = {call.at for call in harness.jobs.status_calls if call.answer == "Completed"}
    assert all(call.at in noticed_ends for call in starts[3:])


def test_the_ledger_holds_the_token_before_the_job_is_started(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings_with(max_jobs_in_flight=2))
    seen_on_disk: dict[str, str | None] = {}

    def read_ledger_from_disk(token: str) -> None:
        on_disk = JobLedger(harness.store, RUN_ID).records()
        seen_on_disk[token] = next((r.status for r in on_disk if r.token == token), None)

    harness.jobs.on_start = read_ledger_from_disk
    harness.run(units_named("a", "b", "c", "d"))

    assert seen_on_disk == {token_for(key, 1): "submitting" for key in "abcd"}
    assert harness.store.exists(harness.store.jobs_path(RUN_ID))
    assert harness.store.list_files(harness.store.jobs_log_dir(RUN_ID)) == []
    for record in harness.ledger().records():
        calls = harness.jobs.calls_for(record.token)
        job = harness.jobs.jobs[record.token]
        assert record.status == "collected"
        assert record.invocation_arn == arn_for(record.token)
        assert record.submitted_at == job.started_at
        assert record.ended_at == job.ends_at
        assert record.noticed_at == calls[-1].at
        assert record.status_calls == len(calls)


def test_a_killed_run_resumes_its_jobs_without_starting_them_again(tmp_path: Path) -> None:
    seconds = {"a": 30, "b": 200, "c": 900, "d": 100, "e": 400, "f": 50}
    harness = Harness(tmp_path, settings_with(max_jobs_in_flight=3))
    harness.jobs.plans = {token_for(key, 1): JobPlan(s) for key, s in seconds.items()}
    harness.jobs.refuse_status = lambda n, _: SimulatedKill() if n == 20 else None
    units = units_named(*seconds)

    with pytest.raises(SimulatedKill):
        harness.run(units)
    at_kill = harness.ledger().latest_by_unit()
    running = {key for key, record in at_kill.items() if record.status == "running"}
    collected = {key for key, record in at_kill.items() if record.status == "collected"}
    assert running, "the kill should land with jobs running"
    assert collected, "the kill should land with jobs collected"
    had_arn = {r.token for r in at_kill.values() if r.invocation_arn is not None}
    starts_before = len(harness.jobs.start_calls)

    harness.jobs.refuse_status = None
    resumed_stage = RecordingStage()
    outcome = harness.run(units, resumed_stage)

    new_tokens = {call.token for call in harness.jobs.start_calls[starts_before:]}
    assert new_tokens.isdisjoint(had_arn)
    assert new_tokens == {token_for(key, 1) for key in seconds.keys() - at_kill.keys()}
    assert outcome.resumed == len(running)
    assert {key for key, *_ in resumed_stage.collected}.isdisjoint(collected)
    assert (outcome.jobs, outcome.collected) == (6, 6)
    assert outcome.adds_up
    assert len(harness.jobs.jobs) == 6


def test_a_kill_inside_start_resubmits_the_same_token_and_makes_no_second_job(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, settings_with(max_jobs_in_flight=3))
    harness.jobs.refuse_start = lambda n, _: SimulatedKill() if n == 2 else None
    units = units_named("a", "b", "c", "d")

    with pytest.raises(SimulatedKill):
        harness.run(units)
    at_kill = harness.ledger().latest_by_unit()
    assert {key: r.status for key, r in at_kill.items()} == dict.fromkeys("abc", "submitting")
    assert set(harness.jobs.jobs) == {token_for("a", 1), token_for("b", 1)}

    harness.jobs.refuse_start = None
    outcome = harness.run(units, RecordingStage())

    assert outcome.collected == 4
    assert len(harness.jobs.jobs) == 4
    tokens = [call.token for call in harness.jobs.start_calls]
    assert tokens.count(token_for("b", 1)) == 2
    assert all(t.endswith("-1") for t in tokens)
    final = harness.ledger().latest("b")
    assert final is not None
    assert (final.attempt, final.status) == (1, "collected")
    assert final.invocation_arn == arn_for(token_for("b", 1))


def test_a_kill_inside_quarantine_is_written_again_on_resume(tmp_path: Path) -> None:
    refusal = InputRefusedError("media_too_long", "3 h of video; the limit is 2 h")
    stage = RecordingStage(refused={"huge": refusal}, kill_in_quarantine={"huge"})
    harness = Harness(tmp_path, settings_with(), stage=stage)
    units = units_named("huge", "talk")
    with pytest.raises(SimulatedKill):
        harness.run(units)

    resumed_stage = RecordingStage(refused={"huge": refusal})
    outcome = harness.run(units, resumed_stage)

    assert outcome.quarantined == 1
    assert [key for key, _ in resumed_stage.quarantined] == ["huge"]


def test_failed_jobs_are_resubmitted_with_new_tokens_then_quarantined(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings_with(max_attempts=3))
    harness.jobs.plans = {
        token_for("bad", attempt): JobPlan(120, "Failed", SERVICE_FAILURE) for attempt in (1, 2, 3)
    }

    outcome = harness.run(units_named("bad", "good"))

    assert (outcome.collected, outcome.quarantined, outcome.resubmissions) == (1, 1, 2)
    bad_tokens = [t for t in harness.jobs.accepted_tokens() if "bad" in t]
    assert bad_tokens == [token_for("bad", attempt) for attempt in (1, 2, 3)]
    attempts = [r for r in harness.ledger().records() if r.unit_key == "bad"]
    assert [r.status for r in attempts] == ["failed", "failed", "quarantined"]
    assert [r.code for r in attempts] == ["job_failed"] * 3
    assert attempts[0].message == SERVICE_FAILURE
    assert SERVICE_FAILURE in attempts[2].message
    assert "3 time(s)" in attempts[2].message
    assert [(key, r.code) for key, r in harness.stage.quarantined] == [("bad", "job_failed")]


def test_unreadable_output_fails_the_attempt_and_resubmits(tmp_path: Path) -> None:
    stage = RecordingStage(unreadable={("clip", 1), ("broken", 1), ("broken", 2)})
    harness = Harness(tmp_path, settings_with(max_attempts=2), stage=stage)

    outcome = harness.run(units_named("clip", "broken"))

    assert (outcome.collected, outcome.quarantined, outcome.resubmissions) == (1, 1, 2)
    records = {(r.unit_key, r.attempt): r for r in harness.ledger().records()}
    assert (records["clip", 1].status, records["clip", 1].code) == ("failed", "output_unreadable")
    assert "segmented-embedding-result.json" in records["clip", 1].message
    assert records["clip", 2].status == "collected"
    broken = records["broken", 2]
    assert (broken.status, broken.code) == ("quarantined", "output_unreadable")


@pytest.mark.parametrize("code", ["ThrottlingException", "ServiceQuotaExceededException"])
def test_a_refused_submission_waits_and_goes_again(tmp_path: Path, code: str) -> None:
    harness = Harness(tmp_path, settings_with())
    refusal = client_error(code, "Too many concurrent async invocations", "StartAsyncInvoke")
    harness.jobs.refuse_start = lambda n, _: refusal if n == 2 else None

    outcome = harness.run(units_named("a", "b", "c"))

    assert (outcome.collected, outcome.quarantined) == (3, 0)
    assert (outcome.submissions, outcome.resubmissions) == (3, 0)
    calls = harness.jobs.start_calls
    a, b, c = (token_for(key, 1) for key in "abc")
    assert [(call.token, call.accepted) for call in calls] == [
        (a, True),
        (b, False),
        (b, True),
        (c, True),
    ]
    assert calls[2].at - calls[1].at >= 1.0 * (1 - harness.settings.poll_jitter)


def test_a_refused_input_is_quarantined_with_the_service_message(tmp_path: Path) -> None:
    message = "The provided video has an unsupported codec"
    harness = Harness(tmp_path, settings_with())
    harness.jobs.refuse_start = lambda _, token: (
        client_error("ValidationException", message, "StartAsyncInvoke") if "odd" in token else None
    )

    outcome = harness.run(units_named("odd", "fine"))

    assert (outcome.collected, outcome.quarantined, outcome.submissions) == (1, 1, 1)
    [(key, record)] = harness.stage.quarantined
    assert (key, record.code, record.message) == ("odd", "ValidationException", message)
    # the failure is written before the ledger records it, so only the ledger's sequence differs
    assert replace(harness.ledger().latest("odd"), sequence=0) == replace(record, sequence=0)


def test_input_refused_by_prepare_is_quarantined_without_a_call(tmp_path: Path) -> None:
    refusal = InputRefusedError("media_too_long", "3 h of video; the limit is 2 h")
    harness = Harness(tmp_path, settings_with(), stage=RecordingStage(refused={"huge": refusal}))

    outcome = harness.run(units_named("huge", "talk"))

    assert (outcome.collected, outcome.quarantined) == (1, 1)
    assert harness.jobs.accepted_tokens() == [token_for("talk", 1)]
    [(key, record)] = harness.stage.quarantined
    assert (key, record.code, record.message) == ("huge", "media_too_long", str(refusal))


def test_status_calls_grow_with_the_log_of_the_duration_until_the_cap(tmp_path: Path) -> None:
    minute, ten_minutes, ninety_minutes = (
        status_call_count(tmp_path / str(seconds), seconds) for seconds in (60, 600, 5400)
    )

    assert minute < ten_minutes <= 20
    assert minute <= 10
    assert ten_minutes - minute <= math.ceil(math.log(10) / math.log(1.5)) + 1
    # Past the cap every interval is 300 s less at most 20 % jitter: linear from then on.
    assert 4800 / 300 - 1 <= ninety_minutes - ten_minutes <= 4800 / 240 + 2


@pytest.mark.parametrize("jitter", [0.0, 0.2])
def test_polls_back_off_to_the_cap_and_an_end_is_noticed_within_one_interval(
    tmp_path: Path, jitter: float
) -> None:
    harness = Harness(tmp_path, settings_with(poll_jitter=jitter))
    harness.jobs.default_plan = JobPlan(1800)

    harness.run(units_named("one"))

    schedule = PollSchedule.of(harness.settings)
    submitted = harness.jobs.start_calls[0].at
    times = [submitted] + [call.at for call in harness.jobs.status_calls]
    gaps = gaps_between(times)
    nominal = [schedule.nominal(polls) for polls in range(len(gaps))]
    assert nominal == sorted(nominal)
    assert nominal[-1] == schedule.maximum
    assert max(gaps) <= schedule.maximum
    for gap, expected in zip(gaps, nominal, strict=True):
        assert expected * (1 - jitter) - 1e-6 <= gap <= expected + 1e-6
    if jitter == 0.0:
        assert gaps == sorted(gaps)
    record = harness.ledger().latest("one")
    assert record is not None
    assert record.noticed_at is not None
    assert record.ended_at is not None
    assert record.ended_at == submitted + 1800
    assert 0 <= record.noticed_at - record.ended_at <= gaps[-1]


def test_throttled_status_calls_slow_the_poller_down_without_failing(tmp_path: Path) -> None:
    keys = [f"clip{i}" for i in range(12)]
    settings = settings_with(max_jobs_in_flight=12, status_calls_per_second=1.0, poll_jitter=0.0)
    harness = Harness(tmp_path, settings)
    harness.jobs.refuse_status = lambda n, _: (
        throttled("GetAsyncInvoke") if n > 12 and n % 3 == 0 else None
    )

    outcome = harness.run(units_named(*keys))

    assert (outcome.collected, outcome.quarantined) == (12, 0)
    calls = harness.jobs.status_calls
    throttled_calls = sum(call.answer == "ThrottlingException" for call in calls)
    assert outcome.throttled_status_calls == throttled_calls > 0
    records = harness.ledger().records()
    assert sum(record.throttled_calls for record in records) == throttled_calls
    assert sum(record.status_calls for record in records) == outcome.status_calls
    times = [call.at for call in calls]
    gaps = gaps_between(times)
    # The first round: twelve polls due together, paced at 1/s. From the first throttled call
    # (the 15th) on, the rate is half that at most.
    assert min(gaps[:11]) == pytest.approx(1.0)
    assert min(gaps[14:]) >= 1.8


def test_a_job_still_running_at_its_deadline_is_quarantined(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings_with(job_deadline_seconds=3600.0))
    harness.jobs.default_plan = JobPlan(math.inf)

    outcome = harness.run(units_named("stuck"))

    assert (outcome.collected, outcome.quarantined, outcome.submissions) == (0, 1, 1)
    [(key, record)] = harness.stage.quarantined
    assert (key, record.code) == ("stuck", "job_deadline")
    assert record.invocation_arn is not None
    assert record.invocation_arn in record.message
    assert record.submitted_at is not None
    last_call = harness.jobs.status_calls[-1].at
    assert 3600.0 <= last_call - record.submitted_at < 3601.0
    assert harness.clock.now() - record.submitted_at < 3601.0


def test_an_unknown_arn_counts_as_a_failed_attempt_and_is_resubmitted(tmp_path: Path) -> None:
    harness = Harness(tmp_path, settings_with())
    harness.jobs.plans = {token_for("ghost", 1): JobPlan(lost=True)}

    outcome = harness.run(units_named("ghost"))

    assert (outcome.collected, outcome.resubmissions) == (1, 1)
    first, second = harness.ledger().records()
    assert (first.attempt, first.status, first.code) == (1, "failed", "job_lost")
    assert "not found" in first.message
    assert (second.attempt, second.status, second.token) == (2, "collected", token_for("ghost", 2))


def test_the_fake_service_gives_one_job_per_token() -> None:
    """The fake's idempotency, which the resume tests rely on."""
    service = ScriptedJobService(SimulatedClock())
    first = service.start({"clientRequestToken": "tok-x-1"})
    assert first == service.start({"clientRequestToken": "tok-x-1"})
    assert first != service.start({"clientRequestToken": "tok-x-2"})
    assert re.fullmatch(r"arn:aws:bedrock:us-east-1:123456789012:async-invoke/[a-z0-9]{12}", first)
    assert len(service.jobs) == 2


def test_a_job_whose_status_is_always_refused_is_still_given_up_at_its_deadline(
    tmp_path: Path,
) -> None:
    clock = SimulatedClock(limit_seconds=10 * 3600.0)
    harness = Harness(tmp_path, settings_with(job_deadline_seconds=3600.0), clock=clock)
    harness.jobs.default_plan = JobPlan(math.inf)
    harness.jobs.refuse_status = lambda _, __: throttled("GetAsyncInvoke")

    outcome = harness.run(units_named("stuck"))

    assert outcome.quarantined == 1
    assert clock.now() - clock.start <= 3600.0 + harness.settings.poll_max_seconds


def test_a_refused_resubmission_does_not_claim_the_previous_attempts_job(
    tmp_path: Path,
) -> None:
    refusal = InputRefusedError("input_missing", "the staged input is gone")
    stage = RecordingStage(refused_attempts={("flaky", 2): refusal})
    harness = Harness(tmp_path, settings_with(), stage=stage)
    harness.jobs.plans = {token_for("flaky", 1): JobPlan(90, "Failed", SERVICE_FAILURE)}

    outcome = harness.run(units_named("flaky"))

    assert (outcome.quarantined, outcome.submissions) == (1, 1)
    first, second = harness.ledger().records()
    assert (second.attempt, second.status, second.code) == (2, "quarantined", "input_missing")
    assert sum(r.status_calls for r in (first, second)) == outcome.status_calls
    assert second.invocation_arn is None
    assert second.token != first.token
