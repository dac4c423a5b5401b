"""Async invocations on the Nova stand-in: submission checks, the job lifecycle on an injected
clock, the files a job writes, partial and failed jobs, restarts, idempotency and listing."""

from __future__ import annotations

import io
import itertools
import json
import threading
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emulator.errors import ServiceError
from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova import media, vectors
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import MemoryObjectStore, ObjectNotFoundError
from tasks import sample_media

OUTPUT_PREFIX = "s3://results/runs/"
CLIP_URI = "s3://media/long-clip.mp4"
TONE_URI = "s3://media/long-tone.mp3"
START = 1_795_000_000.0


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SizedObjectStore(MemoryObjectStore):
    """A memory store that reports chosen sizes for some URIs, to reach limits without the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.reported_sizes: dict[str, int] = {}

    def size(self, uri: str) -> int:
        return self.reported_sizes.get(uri) or super().size(uri)


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """47 seconds of picture and sound: nine full 5-second segments and a short tenth."""
    return sample_media.sample_video(11, 47.0, "mp4", width=32, height=32, fps=2)


@pytest.fixture(scope="module")
def long_tone() -> bytes:
    return sample_media.sample_audio(12, 47.0, "mp3")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(long_clip: bytes, long_tone: bytes) -> SizedObjectStore:
    objects = SizedObjectStore()
    objects.write(CLIP_URI, long_clip, "video/mp4")
    objects.write(TONE_URI, long_tone, "audio/mpeg")
    return objects


RuntimeFactory = Callable[..., NovaRuntime]


@pytest.fixture
def make_runtime(store: SizedObjectStore, clock: FakeClock) -> Iterator[RuntimeFactory]:
    """Builds runtimes on the test's store and clock; all are closed at the end."""
    made: list[NovaRuntime] = []

    def make(
        behaviour: AsyncJobBehaviour | None = None,
        state_dir: Path | None = None,
        objects: MemoryObjectStore | None = None,
    ) -> NovaRuntime:
        chosen = behaviour or AsyncJobBehaviour(job_seconds=10.0)
        runtime = NovaRuntime(
            objects or store, state_dir=state_dir, clock=clock, job_behaviour=lambda: chosen
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> NovaRuntime:
    return make_runtime()


def s3(uri: str) -> dict[str, Any]:
    return {"s3Location": {"uri": uri}}


def video_input(mode: str = "AUDIO_VIDEO_COMBINED", seconds: int = 5) -> dict[str, Any]:
    return {
        "video": {
            "format": "mp4",
            "source": s3(CLIP_URI),
            "embeddingMode": mode,
            "segmentationConfig": {"durationSeconds": seconds},
        }
    }


def audio_input(uri: str = TONE_URI, audio_format: str = "mp3", seconds: int = 5) -> Any:
    return {
        "audio": {
            "format": audio_format,
            "source": s3(uri),
            "segmentationConfig": {"durationSeconds": seconds},
        }
    }


def text_input(uri: str, max_chars: int = 800, mode: str = "END") -> dict[str, Any]:
    return {
        "text": {
            "truncationMode": mode,
            "source": s3(uri),
            "segmentationConfig": {"maxLengthChars": max_chars},
        }
    }


def request_body(content: dict[str, Any], token: str | None = "token-1", **params: Any) -> Any:
    body: dict[str, Any] = {
        "modelId": NOVA_MODEL_ID,
        "modelInput": {
            "schemaVersion": "nova-multimodal-embed-v1",
            "taskType": "SEGMENTED_EMBEDDING",
            "segmentedEmbeddingParams": {
                "embeddingPurpose": "GENERIC_INDEX",
                "embeddingDimension": 256,
                **content,
                **params,
            },
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": OUTPUT_PREFIX}},
    }
    if token is not None:
        body["clientRequestToken"] = token
    return body


def submit(runtime: NovaRuntime, content: dict[str, Any], token: str | None = "token-1") -> str:
    return runtime.start_async_invoke(request_body(content, token))["invocationArn"]


def finish(runtime: NovaRuntime, clock: FakeClock, seconds: float = 10.0) -> dict[str, Any]:
    """Advance the clock, run due jobs; returns the listing of every job."""
    clock.advance(seconds)
    runtime.run_due_jobs()
    return runtime.list_async_invokes({})


def folder_of(runtime: NovaRuntime, arn: str) -> str:
    return runtime.get_async_invoke(arn)["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]


def files_in(store: MemoryObjectStore, folder: str) -> dict[str, bytes]:
    prefix = f"{folder}/"
    return {uri[len(prefix) :]: store.read(uri) for uri in store.uris() if uri.startswith(prefix)}


def jsonl(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def rejection(call: Callable[[], Any], code: str = "ValidationException") -> str:
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    assert caught.value.status == 400
    return caught.value.message


def assert_covers_in_order(metadata: list[dict[str, Any]], duration: float, step: int) -> None:
    assert [m["segmentIndex"] for m in metadata] == list(range(len(metadata)))
    assert metadata[0]["segmentStartSeconds"] == 0.0
    for before, after in itertools.pairwise(metadata):
        assert before["segmentEndSeconds"] == after["segmentStartSeconds"]
    for m in metadata:
        assert 0 < m["segmentEndSeconds"] - m["segmentStartSeconds"] <= step
    assert metadata[-1]["segmentEndSeconds"] == pytest.approx(duration)


def test_job_runs_from_in_progress_to_completed(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock, long_clip: bytes
) -> None:
    arn = submit(runtime, video_input())
    job_id = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:bedrock:us-east-1:123456789012:async-invoke/{job_id}"
    assert len(job_id) == 12
    assert job_id.isalnum()
    assert job_id == job_id.lower()
    started = runtime.get_async_invoke(arn)
    assert started == {
        "invocationArn": arn,
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA_MODEL_ID}",
        "clientRequestToken": "token-1",
        "status": "InProgress",
        "submitTime": "2026-11-18T11:06:40.000Z",
        "lastModifiedTime": "2026-11-18T11:06:40.000Z",
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://results/runs/{job_id}"}},
    }
    clock.advance(9.9)
    assert runtime.run_due_jobs() == 0
    assert runtime.get_async_invoke(arn)["status"] == "InProgress"
    assert files_in(store, f"s3://results/runs/{job_id}") == {}

    clock.advance(0.35)
    runtime.run_due_jobs()
    ended = runtime.get_async_invoke(arn)
    assert ended["status"] == "Completed"
    assert ended["endTime"] == ended["lastModifiedTime"] == "2026-11-18T11:06:50.250Z"
    assert "failureMessage" not in ended
    assert runtime.run_due_jobs() == 0

    folder = f"s3://results/runs/{job_id}"
    files = files_in(store, folder)
    assert set(files) == {
        "segmented-embedding-result.json",
        "embedding-audio-video.jsonl",
        "manifest.json",
    }
    assert json.loads(files["segmented-embedding-result.json"]) == {
        "sourceFileUri": CLIP_URI,
        "embeddingDimension": 256,
        "embeddingResults": [
            {
                "embeddingType": "AUDIO_VIDEO_COMBINED",
                "status": "SUCCESS",
                "outputFileUri": f"{folder}/embedding-audio-video.jsonl",
            }
        ],
    }
    lines = jsonl(files["embedding-audio-video.jsonl"])
    assert len(lines) == 10
    for line in lines:
        assert set(line) == {"embedding", "segmentMetadata", "status"}
        assert line["status"] == "SUCCESS"
        assert np.linalg.norm(line["embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert len(line["embedding"]) == 256
    duration = media.probe_media(long_clip).duration_seconds
    assert_covers_in_order([line["segmentMetadata"] for line in lines], duration, 5)
    assert len({tuple(line["embedding"][:4]) for line in lines}) == 10

    manifest = json.loads(files["manifest.json"])
    assert manifest["invocationArn"] == arn
    assert manifest["jobId"] == job_id
    assert manifest["resultFileUri"] == f"{folder}/segmented-embedding-result.json"
    assert manifest["completionTime"] == ended["endTime"]
    assert manifest["outputFiles"] == [
        {
            "embeddingType": "AUDIO_VIDEO_COMBINED",
            "outputFileUri": f"{folder}/embedding-audio-video.jsonl",
            "segmentCount": 10,
            "successCount": 10,
            "failureCount": 0,
        }
    ]


def test_separate_mode_writes_video_and_audio_files(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock
) -> None:
    arn = submit(runtime, video_input("AUDIO_VIDEO_SEPARATE", seconds=20))
    finish(runtime, clock)
    folder = folder_of(runtime, arn)
    files = files_in(store, folder)
    assert set(files) == {
        "segmented-embedding-result.json",
        "embedding-video.jsonl",
        "embedding-audio.jsonl",
        "manifest.json",
    }
    results = json.loads(files["segmented-embedding-result.json"])["embeddingResults"]
    assert [(r["embeddingType"], r["outputFileUri"]) for r in results] == [
        ("VIDEO", f"{folder}/embedding-video.jsonl"),
        ("AUDIO", f"{folder}/embedding-audio.jsonl"),
    ]
    video, audio = jsonl(files["embedding-video.jsonl"]), jsonl(files["embedding-audio.jsonl"])
    assert [line["segmentMetadata"] for line in video] == [
        line["segmentMetadata"] for line in audio
    ]
    assert [line["segmentMetadata"]["segmentEndSeconds"] for line in video][:2] == [20.0, 40.0]
    assert len(video) == 3


def test_audio_job_segments_cover_the_recording(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock, long_tone: bytes
) -> None:
    arn = submit(runtime, audio_input(seconds=10))
    finish(runtime, clock)
    files = files_in(store, folder_of(runtime, arn))
    lines = jsonl(files["embedding-audio.jsonl"])
    duration = media.probe_media(long_tone).duration_seconds
    assert_covers_in_order([line["segmentMetadata"] for line in lines], duration, 10)
    assert len(lines) == 5


def test_text_job_spans_cover_the_text(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock
) -> None:
    text = " ".join(f"word{index % 97}" for index in range(5_000))
    store.write("s3://media/essay.txt", text.encode(), "text/plain")
    arn = submit(runtime, text_input("s3://media/essay.txt", max_chars=800))
    finish(runtime, clock)
    files = files_in(store, folder_of(runtime, arn))
    assert set(files) >= {"embedding-text.jsonl"}
    lines = jsonl(files["embedding-text.jsonl"])
    spans = [
        (
            line["segmentMetadata"]["segmentStartCharPosition"],
            line["segmentMetadata"]["segmentEndCharPosition"],
        )
        for line in lines
    ]
    assert "".join(text[start:end] for start, end in spans) == text
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    assert all(0 < end - start <= 800 for start, end in spans)
    for index, line in enumerate(lines):
        assert line["segmentMetadata"]["segmentIndex"] == index
        assert line["segmentMetadata"]["truncatedCharLength"] == 0
        start, end = spans[index]
        expected = vectors.text_embedding(text[start:end], 256)
        np.testing.assert_allclose(line["embedding"], expected, atol=1e-7)


def test_inline_text_job_has_no_source_uri(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock
) -> None:
    content = {"text": {"truncationMode": "END", "value": "short note", "segmentationConfig": {}}}
    arn = submit(runtime, content)
    finish(runtime, clock)
    result = json.loads(files_in(store, folder_of(runtime, arn))["segmented-embedding-result.json"])
    assert "sourceFileUri" not in result
    assert result["embeddingResults"][0]["status"] == "SUCCESS"


def test_text_segment_over_the_token_limit(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock
) -> None:
    store.write("s3://media/dense.txt", ("a " * 30_000).encode(), "text/plain")
    none_arn = submit(runtime, text_input("s3://media/dense.txt", 50_000, "NONE"), token="none")
    end_arn = submit(runtime, text_input("s3://media/dense.txt", 50_000, "END"), token="end")
    finish(runtime, clock)

    none_files = files_in(store, folder_of(runtime, none_arn))
    first, second = jsonl(none_files["embedding-text.jsonl"])
    assert first["status"] == "FAILURE"
    assert "embedding" not in first
    assert first["failureReason"] == "INVALID_CONTENT"
    assert "exceeds 8192 tokens" in first["message"]
    assert second["status"] == "SUCCESS"
    [result] = json.loads(none_files["segmented-embedding-result.json"])["embeddingResults"]
    assert result["status"] == "PARTIAL_SUCCESS"
    assert result["failureReason"] == "INVALID_CONTENT"
    assert runtime.get_async_invoke(none_arn)["status"] == "Completed"

    end_files = files_in(store, folder_of(runtime, end_arn))
    first, second = jsonl(end_files["embedding-text.jsonl"])
    assert first["segmentMetadata"]["truncatedCharLength"] == 8192 * 2 - 1
    assert second["segmentMetadata"]["truncatedCharLength"] == 0


def test_image_job_gives_the_sync_vector(
    runtime: NovaRuntime, store: MemoryObjectStore, clock: FakeClock
) -> None:
    picture = sample_media.sample_image(21, "webp")
    store.write("s3://media/p.webp", picture, "image/webp")
    image = {"format": "webp", "source": s3("s3://media/p.webp"), "detailLevel": "DOCUMENT_IMAGE"}
    arn = submit(runtime, {"image": image})
    finish(runtime, clock)
    files = files_in(store, folder_of(runtime, arn))
    assert set(files) == {
        "segmented-embedding-result.json",
        "embedding-image.jsonl",
        "manifest.json",
    }
    [line] = jsonl(files["embedding-image.jsonl"])
    assert line["segmentMetadata"] == {"segmentIndex": 0}
    sync_body = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": 256,
            "image": image,
        },
    }
    sync = runtime.invoke_model(NOVA_MODEL_ID, json.dumps(sync_body).encode(), None, None)
    assert sync["embeddings"][0]["embedding"] == line["embedding"]


def test_media_length_adds_to_the_job_time(make_runtime: RuntimeFactory, clock: FakeClock) -> None:
    runtime = make_runtime(AsyncJobBehaviour(job_seconds=2.0, seconds_per_media_minute=6.0))
    arn = submit(runtime, video_input())
    # 2 s plus 6 s per minute of the 47-second clip: due 6.7 s after submission.
    clock.advance(6.6)
    assert runtime.run_due_jobs() == 0
    clock.advance(0.2)
    runtime.run_due_jobs()
    assert runtime.get_async_invoke(arn)["status"] == "Completed"


def test_behaviour_is_taken_at_submission(store: MemoryObjectStore, clock: FakeClock) -> None:
    behaviour = AsyncJobBehaviour(job_seconds=100.0)
    runtime = NovaRuntime(store, state_dir=None, clock=clock, job_behaviour=lambda: behaviour)
    try:
        arn = submit(runtime, audio_input())
        behaviour = AsyncJobBehaviour(job_seconds=1.0)
        clock.advance(2.0)
        assert runtime.run_due_jobs() == 0
        assert runtime.get_async_invoke(arn)["status"] == "InProgress"
    finally:
        runtime.close()


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


class SignallingStore(MemoryObjectStore):
    """Sets ``manifest_written`` when a job's manifest is stored."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        super().__init__(objects)
        self.manifest_written = threading.Event()

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        super().write(uri, data, content_type)
        if uri.endswith("/manifest.json"):
            self.manifest_written.set()


def test_background_thread_finishes_due_jobs(
    make_runtime: RuntimeFactory, clock: FakeClock, long_tone: bytes
) -> None:
    objects = SignallingStore({TONE_URI: long_tone})
    runtime = make_runtime(AsyncJobBehaviour(job_seconds=1.0), objects=objects)
    arn = submit(runtime, audio_input())
    clock.advance(1.0)
    assert objects.manifest_written.wait(timeout=30)
    # Waits for the thread's pass to end; finds nothing left to do.
    assert runtime.run_due_jobs() == 0
    assert runtime.get_async_invoke(arn)["status"] == "Completed"
