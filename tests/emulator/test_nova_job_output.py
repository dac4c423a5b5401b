"""Async invocations on the Nova stand-in: the job lifecycle on an injected clock and the files a
finished job writes for each modality."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova import media, vectors
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import MemoryObjectStore
from tasks.demo import sample_media
from tests.emulator.nova_job_helpers import (
    CLIP_URI,
    TONE_URI,
    FakeClock,
    RuntimeFactory,
    assert_covers_in_order,
    audio_input,
    files_in,
    finish,
    folder_of,
    jsonl,
    s3,
    submit,
    text_input,
    video_input,
)


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
