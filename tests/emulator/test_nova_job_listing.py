"""Async invocations on the Nova stand-in: idempotent submission, invocation ARNs, and listing
with filters, order and pages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova.service import NovaRuntime
from tests.emulator.nova_job_helpers import (
    FakeClock,
    RuntimeFactory,
    audio_input,
    rejection,
    submit,
)


def test_same_token_and_body_returns_the_same_job(runtime: NovaRuntime) -> None:
    first = submit(runtime, audio_input(), token="same")
    assert submit(runtime, audio_input(), token="same") == first
    assert len(runtime.list_async_invokes({})["asyncInvokeSummaries"]) == 1


def test_same_token_with_another_body_conflicts(runtime: NovaRuntime) -> None:
    submit(runtime, audio_input(), token="same")
    message = rejection(
        lambda: submit(runtime, audio_input(seconds=6), token="same"), "ConflictException"
    )
    assert "clientRequestToken same was already used" in message


def test_concurrent_submissions_with_one_token_make_one_job(runtime: NovaRuntime) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        arns = set(pool.map(lambda _: submit(runtime, audio_input(), token="race"), range(8)))
    assert len(arns) == 1
    assert len(runtime.list_async_invokes({})["asyncInvokeSummaries"]) == 1


def test_missing_token_gets_a_fresh_one(runtime: NovaRuntime) -> None:
    first = submit(runtime, audio_input(), token=None)
    second = submit(runtime, audio_input(), token=None)
    assert first != second
    tokens = {runtime.get_async_invoke(arn)["clientRequestToken"] for arn in (first, second)}
    assert len(tokens) == 2
    assert all(len(token) == 36 for token in tokens)


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "abcdef123456",
        "arn:aws:bedrock:us-east-1:123456789012:async-invoke/ABCDEF123456",
        "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abc",
        "arn:aws:bedrock:us-east-1:1234:async-invoke/abcdef123456",
        "arn:aws:s3:us-east-1:123456789012:async-invoke/abcdef123456",
    ],
)
def test_malformed_invocation_arn_is_refused(runtime: NovaRuntime, arn: str) -> None:
    message = rejection(lambda: runtime.get_async_invoke(arn))
    assert "at 'invocationArn' failed to satisfy constraint" in message


def test_unknown_invocation_arn_is_a_validation_error(runtime: NovaRuntime) -> None:
    arn = submit(runtime, audio_input())
    job_id = arn.rsplit("/", 1)[1]
    for unknown in (
        "arn:aws:bedrock:us-east-1:123456789012:async-invoke/zzzzzzzzzzzz",
        f"arn:aws:bedrock:eu-west-1:123456789012:async-invoke/{job_id}",
        f"arn:aws:bedrock:us-east-1:999999999999:async-invoke/{job_id}",
    ):
        message = rejection(lambda u=unknown: runtime.get_async_invoke(u))
        assert message == f"The async invocation {unknown} does not exist."


@pytest.fixture
def five_jobs(
    make_runtime: RuntimeFactory, clock: FakeClock
) -> tuple[NovaRuntime, list[dict[str, Any]]]:
    """Five jobs submitted a second apart, the first two finished: descriptions oldest first."""
    runtime = make_runtime(AsyncJobBehaviour(job_seconds=3.5))
    arns = []
    for index in range(5):
        arns.append(submit(runtime, audio_input(), token=f"job-{index}"))
        clock.advance(1.0)
    runtime.run_due_jobs()
    return runtime, [runtime.get_async_invoke(arn) for arn in arns]


def listed(runtime: NovaRuntime, **query: str) -> list[str]:
    response = runtime.list_async_invokes({name: [value] for name, value in query.items()})
    return [summary["clientRequestToken"] for summary in response["asyncInvokeSummaries"]]


def test_listing_orders_and_filters(five_jobs: tuple[NovaRuntime, list[dict[str, Any]]]) -> None:
    runtime, jobs = five_jobs
    assert [job["status"] for job in jobs] == ["Completed"] * 2 + ["InProgress"] * 3
    everything = runtime.list_async_invokes({})
    assert everything["asyncInvokeSummaries"] == jobs[::-1]
    assert "nextToken" not in everything
    assert listed(runtime, sortOrder="Ascending") == [f"job-{i}" for i in range(5)]
    assert listed(runtime, sortBy="SubmissionTime", sortOrder="Descending")[0] == "job-4"
    assert listed(runtime, statusEquals="Completed") == ["job-1", "job-0"]
    assert listed(runtime, statusEquals="Failed") == []
    after, before = jobs[1]["submitTime"], jobs[3]["submitTime"]
    assert listed(runtime, submitTimeAfter=after) == ["job-4", "job-3", "job-2"]
    assert listed(runtime, submitTimeBefore=before) == ["job-2", "job-1", "job-0"]
    assert listed(runtime, submitTimeAfter=after, submitTimeBefore=before) == ["job-2"]
    # botocore sends microseconds; a timestamp without a zone is UTC.
    assert listed(runtime, submitTimeAfter="2026-11-18T11:06:42.500000Z") == ["job-4", "job-3"]
    assert listed(runtime, submitTimeBefore="2026-11-18T11:06:41.5") == ["job-1", "job-0"]


@pytest.mark.parametrize("order", ["Ascending", "Descending"])
def test_listing_pages_through_every_job(
    five_jobs: tuple[NovaRuntime, list[dict[str, Any]]], order: str
) -> None:
    runtime, _ = five_jobs
    query = {"maxResults": ["2"], "sortOrder": [order]}
    pages, token = [], None
    while True:
        response = runtime.list_async_invokes(
            {**query, **({"nextToken": [token]} if token else {})}
        )
        pages.append([s["clientRequestToken"] for s in response["asyncInvokeSummaries"]])
        token = response.get("nextToken")
        if token is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    flat = [name for page in pages for name in page]
    assert flat == listed(runtime, sortOrder=order)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"maxResults": ["0"]}, "greater than or equal to 1"),
        ({"maxResults": ["1001"]}, "less than or equal to 1000"),
        ({"maxResults": ["ten"]}, "Member must be an integer"),
        ({"sortBy": ["Name"]}, "enum value set: [SubmissionTime]"),
        ({"sortOrder": ["Up"]}, "enum value set: [Ascending, Descending]"),
        ({"statusEquals": ["Done"]}, "enum value set: [InProgress, Completed, Failed]"),
        ({"submitTimeAfter": ["yesterday"]}, "ISO-8601"),
        ({"submitTimeBefore": ["1795000000"]}, "ISO-8601"),
        ({"nextToken": ["not a token"]}, "regular expression pattern"),
        ({"nextToken": ["bm9wZQ"]}, "nextToken is invalid"),
        ({"nextToken": [""]}, "greater than or equal to 1"),
    ],
)
def test_listing_refuses_invalid_values(
    runtime: NovaRuntime, query: dict[str, list[str]], fragment: str
) -> None:
    assert fragment in rejection(lambda: runtime.list_async_invokes(query))
