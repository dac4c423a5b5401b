"""Shared fixtures and helpers of the Nova async-invocation tests (``test_nova_job_*.py``): an
injected clock, an in-memory S3 holding a long clip and a long tone, runtimes built on them, and
request builders and output readers.

A test module binds the fixtures to its own names (``clock = helpers.clock``), which registers
them with pytest for that module; the helper functions are imported as usual.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.errors import ServiceError
from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import MemoryObjectStore
from tasks.demo import sample_media

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
