"""Async invocations on the Nova stand-in that go wrong: partial and failed jobs, the limits and
content checks applied at submission, and jobs that outlive a restart."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path
from typing import Any

import pytest

from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova.service import NovaRuntime
from emulator.objects import MemoryObjectStore, ObjectNotFoundError
from tests.emulator.nova_job_helpers import (
    CLIP_URI,
    TONE_URI,
    FakeClock,
    RuntimeFactory,
    SizedObjectStore,
    audio_input,
    files_in,
    finish,
    folder_of,
    jsonl,
    rejection,
    s3,
    submit,
    text_input,
    video_input,
)

PARTIAL = AsyncJobBehaviour(seed=3, job_seconds=1.0, partial_rate=1.0, segment_failure_rate=0.5)


def failed_segments(store: MemoryObjectStore, folder: str, name: str) -> list[int]:
    lines = jsonl(files_in(store, folder)[name])
    return [
        line["segmentMetadata"]["segmentIndex"] for line in lines if line["status"] == "FAILURE"
    ]


def test_partial_job_fails_some_segments_reproducibly(
    make_runtime: RuntimeFactory, store: MemoryObjectStore, clock: FakeClock, long_tone: bytes
) -> None:
    runtime = make_runtime(PARTIAL)
    arn = submit(runtime, audio_input(), token="partial-token")
    finish(runtime, clock)
    assert runtime.get_async_invoke(arn)["status"] == "Completed"
    folder = folder_of(runtime, arn)
    files = files_in(store, folder)
    lines = jsonl(files["embedding-audio.jsonl"])
    failed = failed_segments(store, folder, "embedding-audio.jsonl")
    assert 0 < len(failed) < len(lines) == 10
    for line in lines:
        if line["status"] == "FAILURE":
            assert set(line) == {"segmentMetadata", "status", "failureReason", "message"}
            assert line["failureReason"] == "INTERNAL_SERVER_EXCEPTION"
        else:
            assert len(line["embedding"]) == 256
    [result] = json.loads(files["segmented-embedding-result.json"])["embeddingResults"]
    assert result["status"] == "PARTIAL_SUCCESS"
    assert result["failureReason"] == "INTERNAL_SERVER_EXCEPTION"
    assert result["message"].startswith(f"{len(failed)} of 10 segments failed")
    counts = json.loads(files["manifest.json"])["outputFiles"][0]
    assert (counts["successCount"], counts["failureCount"]) == (10 - len(failed), len(failed))

    # Another stand-in, same seed and token: the same segments fail.
    other_store = MemoryObjectStore({TONE_URI: long_tone})
    again = make_runtime(PARTIAL, objects=other_store)
    other_arn = submit(again, audio_input(), token="partial-token")
    finish(again, clock)
    assert (
        failed_segments(other_store, folder_of(again, other_arn), "embedding-audio.jsonl") == failed
    )


def test_every_segment_failing_gives_failure_status(
    make_runtime: RuntimeFactory, store: MemoryObjectStore, clock: FakeClock
) -> None:
    behaviour = AsyncJobBehaviour(job_seconds=1.0, partial_rate=1.0, segment_failure_rate=1.0)
    runtime = make_runtime(behaviour)
    arn = submit(runtime, video_input("AUDIO_VIDEO_SEPARATE", seconds=30))
    finish(runtime, clock)
    assert runtime.get_async_invoke(arn)["status"] == "Completed"
    result = json.loads(files_in(store, folder_of(runtime, arn))["segmented-embedding-result.json"])
    assert [r["status"] for r in result["embeddingResults"]] == ["FAILURE", "FAILURE"]


def test_failed_job_writes_nothing(
    make_runtime: RuntimeFactory, store: MemoryObjectStore, clock: FakeClock
) -> None:
    runtime = make_runtime(AsyncJobBehaviour(job_seconds=1.0, failure_rate=1.0))
    before = store.uris()
    arn = submit(runtime, video_input())
    finish(runtime, clock)
    ended = runtime.get_async_invoke(arn)
    assert ended["status"] == "Failed"
    assert ended["failureMessage"]
    assert ended["endTime"] == ended["lastModifiedTime"]
    assert store.uris() == before


def test_source_spoilt_after_submission_fails_the_job(
    runtime: NovaRuntime, store: SizedObjectStore, clock: FakeClock
) -> None:
    store.write("s3://media/brief.txt", b"here today", "text/plain")
    arn = submit(runtime, text_input("s3://media/brief.txt"))
    store.write("s3://media/brief.txt", b"\xff\xfe", "text/plain")
    finish(runtime, clock)
    ended = runtime.get_async_invoke(arn)
    assert ended["status"] == "Failed"
    assert "s3://media/brief.txt is not valid UTF-8" in ended["failureMessage"]


class ReadOnlyStore(MemoryObjectStore):
    """A store whose output bucket does not exist."""

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        if uri.startswith("s3://results/"):
            raise ObjectNotFoundError(uri)
        super().write(uri, data, content_type)


def test_output_that_cannot_be_written_fails_the_job(
    make_runtime: RuntimeFactory, clock: FakeClock, long_tone: bytes
) -> None:
    runtime = make_runtime(objects=ReadOnlyStore({TONE_URI: long_tone}))
    arn = submit(runtime, audio_input())
    finish(runtime, clock)
    ended = runtime.get_async_invoke(arn)
    assert ended["status"] == "Failed"
    assert ended["failureMessage"].startswith("Unable to write the output to s3://results/runs/")


def silent_wav(seconds: int, sample_rate: int = 1_000) -> bytes:
    """A long but small WAV: 8-bit mono silence at a low sample rate."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as recording:
        recording.setnchannels(1)
        recording.setsampwidth(1)
        recording.setframerate(sample_rate)
        recording.writeframes(bytes([128]) * (seconds * sample_rate))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("seconds", "segment_seconds", "fragment"),
    [
        (7_201, 30, "7201.0 seconds long; StartAsyncInvoke accepts at most 7200 seconds"),
        (7_200, 30, None),
        (1_435, 1, "1435 segments of 1 s; at most 1434 are allowed"),
        (1_434, 1, None),
    ],
)
def test_long_media_limits_at_submission(
    runtime: NovaRuntime,
    store: MemoryObjectStore,
    seconds: int,
    segment_seconds: int,
    fragment: str | None,
) -> None:
    store.write("s3://media/silence.wav", silent_wav(seconds), "audio/wav")
    content = audio_input("s3://media/silence.wav", "wav", segment_seconds)
    if fragment is None:
        assert submit(runtime, content)
    else:
        assert fragment in rejection(lambda: submit(runtime, content))
        assert runtime.list_async_invokes({})["asyncInvokeSummaries"] == []


def test_text_segment_cap_at_submission(runtime: NovaRuntime, store: MemoryObjectStore) -> None:
    store.write("s3://media/book.txt", ("abcdefg " * 100 * 1_901).encode(), "text/plain")
    message = rejection(lambda: submit(runtime, text_input("s3://media/book.txt", 800)))
    assert "segments of at most 800 characters; at most 1900 are allowed" in message


@pytest.mark.parametrize(
    ("content", "uri", "limit"),
    [
        (text_input("s3://media/huge"), "s3://media/huge", 634_000_000),
        (audio_input("s3://media/huge", "wav"), "s3://media/huge", 1_000_000_000),
        (
            {"image": {"format": "png", "source": s3("s3://media/huge")}},
            "s3://media/huge",
            50_000_000,
        ),
        (
            {"video": {**video_input()["video"], "source": s3("s3://media/huge")}},
            "s3://media/huge",
            2_000_000_000,
        ),
    ],
    ids=["text", "audio", "image", "video"],
)
def test_async_size_limits(
    runtime: NovaRuntime, store: SizedObjectStore, content: Any, uri: str, limit: int
) -> None:
    store.write(uri, b"tiny", "application/octet-stream")
    store.reported_sizes[uri] = limit + 1
    message = rejection(lambda: submit(runtime, content))
    assert f"is {limit + 1} bytes, over the {limit}-byte limit" in message


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (audio_input("s3://media/absent.mp3"), "s3://media/absent.mp3 does not exist"),
        (audio_input(CLIP_URI, "mp3"), "audio format mp3 does not match"),
        ({"image": {"format": "gif", "source": s3(TONE_URI)}}, "not a PNG, JPEG, GIF or WebP"),
    ],
)
def test_content_is_checked_at_submission(
    runtime: NovaRuntime, content: Any, fragment: str
) -> None:
    assert fragment in rejection(lambda: submit(runtime, content))
    assert runtime.list_async_invokes({})["asyncInvokeSummaries"] == []


def test_jobs_survive_a_restart(
    make_runtime: RuntimeFactory, store: MemoryObjectStore, clock: FakeClock, tmp_path: Path
) -> None:
    first = make_runtime(AsyncJobBehaviour(job_seconds=5.0), state_dir=tmp_path)
    done_arn = submit(first, audio_input(), token="early")
    clock.advance(5.0)
    first.run_due_jobs()
    assert first.get_async_invoke(done_arn)["status"] == "Completed"
    pending_arn = submit(first, video_input(), token="late")
    first.close()
    assert sorted(p.name for p in (tmp_path / "nova-async-invokes").iterdir()) == sorted(
        f"{arn.rsplit('/', 1)[1]}.json" for arn in (done_arn, pending_arn)
    )

    second = make_runtime(state_dir=tmp_path)
    assert second.get_async_invoke(done_arn)["status"] == "Completed"
    assert second.get_async_invoke(pending_arn)["status"] == "InProgress"
    assert submit(second, video_input(), token="late") == pending_arn
    clock.advance(5.0)
    second.run_due_jobs()
    assert second.get_async_invoke(pending_arn)["status"] == "Completed"
    assert "embedding-audio-video.jsonl" in files_in(store, folder_of(second, pending_arn))
    second.close()

    third = make_runtime(state_dir=tmp_path)
    statuses = [s["status"] for s in third.list_async_invokes({})["asyncInvokeSummaries"]]
    assert statuses == ["Completed", "Completed"]
