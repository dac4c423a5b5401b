"""InvokeModel on the Nova stand-in: each modality's embeddings, the content checks that need the
source itself (size, format, duration, encoding), truncation, and the vectors' properties."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest

from emulator.errors import ServiceError
from emulator.nova import vectors
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import MemoryObjectStore
from tasks.demo import sample_media
from tests.emulator.nova_job_helpers import SizedObjectStore

DIMENSIONS = (256, 384, 1024, 3072)


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> SizedObjectStore:
    return SizedObjectStore()


@pytest.fixture
def runtime(store: SizedObjectStore) -> Iterator[NovaRuntime]:
    service = NovaRuntime(store, state_dir=None, clock=FakeClock())
    yield service
    service.close()


@pytest.fixture(scope="module")
def clip() -> bytes:
    """Three seconds of picture and sound."""
    return sample_media.sample_video(5, 3.0, "mp4", width=32, height=32, fps=4)


def invoke(runtime: NovaRuntime, modality: str, content: dict[str, Any], **params: Any) -> Any:
    body = {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {"embeddingPurpose": "GENERIC_INDEX", modality: content, **params},
    }
    response = runtime.invoke_model(
        NOVA_MODEL_ID, json.dumps(body).encode(), "application/json", "application/json"
    )
    json.dumps(response)  # the response must be a JSON document as it is
    return response["embeddings"]


def inline(data: bytes) -> dict[str, Any]:
    return {"bytes": base64.b64encode(data).decode()}


def stored(store: MemoryObjectStore, uri: str, data: bytes) -> dict[str, Any]:
    store.write(uri, data, "application/octet-stream")
    return {"s3Location": {"uri": uri}}


def vector(entry: dict[str, Any]) -> np.ndarray:
    return np.asarray(entry["embedding"], dtype=np.float64)


def assert_unit(entry: dict[str, Any], dimension: int) -> None:
    values = vector(entry)
    assert values.shape == (dimension,)
    assert np.linalg.norm(values) == pytest.approx(1.0, abs=1e-5)


def rejection(call: Any) -> str:
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.code == "ValidationException"
    return caught.value.message


def test_text_value_gives_one_text_embedding(runtime: NovaRuntime) -> None:
    [entry] = invoke(runtime, "text", {"truncationMode": "END", "value": "A quiet harbour."})
    assert entry["embeddingType"] == "TEXT"
    assert set(entry) == {"embeddingType", "embedding"}
    assert_unit(entry, 3072)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_requested_dimension_sets_the_length(runtime: NovaRuntime, dimension: int) -> None:
    text = {"truncationMode": "END", "value": "A quiet harbour."}
    [entry] = invoke(runtime, "text", text, embeddingDimension=dimension)
    assert_unit(entry, dimension)


def test_same_input_gives_the_same_vector(runtime: NovaRuntime) -> None:
    text = {"truncationMode": "END", "value": "Tides and lighthouses."}
    assert invoke(runtime, "text", text) == invoke(runtime, "text", text)
    other = invoke(runtime, "text", {"truncationMode": "END", "value": "Tax forms."})
    assert other != invoke(runtime, "text", text)


@pytest.mark.parametrize("image_format", ["png", "jpeg", "gif", "webp"])
def test_each_image_format_inline_and_from_s3(
    runtime: NovaRuntime, store: MemoryObjectStore, image_format: str
) -> None:
    data = sample_media.sample_image(7, image_format)
    [from_bytes] = invoke(runtime, "image", {"format": image_format, "source": inline(data)})
    source = stored(store, f"s3://media/picture.{image_format}", data)
    [from_s3] = invoke(runtime, "image", {"format": image_format, "source": source})
    assert from_bytes["embeddingType"] == "IMAGE"
    assert_unit(from_bytes, 3072)
    assert from_bytes == from_s3


def test_detail_levels_give_different_image_vectors(runtime: NovaRuntime) -> None:
    image = {"format": "png", "source": inline(sample_media.sample_image(8, "png"))}
    [standard] = invoke(runtime, "image", image)
    [explicit] = invoke(runtime, "image", {**image, "detailLevel": "STANDARD_IMAGE"})
    [document] = invoke(runtime, "image", {**image, "detailLevel": "DOCUMENT_IMAGE"})
    assert standard == explicit
    assert standard["embedding"] != document["embedding"]


@pytest.mark.parametrize("audio_format", ["wav", "mp3", "ogg"])
def test_each_audio_format(runtime: NovaRuntime, audio_format: str) -> None:
    data = sample_media.sample_audio(3, 2.0, audio_format)
    [entry] = invoke(runtime, "audio", {"format": audio_format, "source": inline(data)})
    assert entry["embeddingType"] == "AUDIO"
    assert_unit(entry, 3072)


@pytest.mark.parametrize("video_format", ["mp4", "mov", "webm", "mkv"])
def test_each_video_format_combined(runtime: NovaRuntime, video_format: str) -> None:
    data = sample_media.sample_video(4, 2.0, video_format, width=32, height=32, fps=4)
    video = {
        "format": video_format,
        "source": inline(data),
        "embeddingMode": "AUDIO_VIDEO_COMBINED",
    }
    [entry] = invoke(runtime, "video", video)
    assert entry["embeddingType"] == "AUDIO_VIDEO_COMBINED"
    assert_unit(entry, 3072)


def test_separate_mode_gives_a_video_and_an_audio_embedding(
    runtime: NovaRuntime, clip: bytes
) -> None:
    video = {"format": "mp4", "source": inline(clip), "embeddingMode": "AUDIO_VIDEO_SEPARATE"}
    entries = invoke(runtime, "video", video, embeddingDimension=1024)
    assert [entry["embeddingType"] for entry in entries] == ["VIDEO", "AUDIO"]
    for entry in entries:
        assert_unit(entry, 1024)
    [combined] = invoke(runtime, "video", {**video, "embeddingMode": "AUDIO_VIDEO_COMBINED"})
    assert len({tuple(e["embedding"][:8]) for e in [*entries, combined]}) == 3


def test_video_without_sound_is_embedded_in_both_modes(runtime: NovaRuntime) -> None:
    data = sample_media.sample_video(6, 2.0, "mp4", width=32, height=32, fps=4, with_audio=False)
    video = {"format": "mp4", "source": inline(data), "embeddingMode": "AUDIO_VIDEO_SEPARATE"}
    assert [e["embeddingType"] for e in invoke(runtime, "video", video)] == ["VIDEO", "AUDIO"]
    combined = {**video, "embeddingMode": "AUDIO_VIDEO_COMBINED"}
    assert invoke(runtime, "video", combined)[0]["embeddingType"] == "AUDIO_VIDEO_COMBINED"


def test_matryoshka_prefixes_through_the_api(
    runtime: NovaRuntime, store: MemoryObjectStore, clip: bytes
) -> None:
    requests = {
        "text": {"truncationMode": "END", "value": "Matryoshka dolls nest."},
        "image": {"format": "png", "source": inline(sample_media.sample_image(9))},
        "audio": {"format": "wav", "source": inline(sample_media.sample_audio(9, 1.0))},
        "video": {
            "format": "mp4",
            "source": stored(store, "s3://media/clip.mp4", clip),
            "embeddingMode": "AUDIO_VIDEO_COMBINED",
        },
    }
    for modality, content in requests.items():
        full = vector(invoke(runtime, modality, content)[0])
        for dimension in DIMENSIONS[:-1]:
            small = vector(invoke(runtime, modality, content, embeddingDimension=dimension)[0])
            prefix = full[:dimension] / np.linalg.norm(full[:dimension])
            np.testing.assert_allclose(small, prefix, atol=1e-6, err_msg=modality)


def test_image_whose_bytes_are_another_format_is_refused(runtime: NovaRuntime) -> None:
    data = sample_media.sample_image(1, "png")
    message = rejection(
        lambda: invoke(runtime, "image", {"format": "jpeg", "source": inline(data)})
    )
    assert "image format jpeg does not match the image data, which is png" in message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (sample_media.garbage(1), "not a PNG, JPEG, GIF or WebP file"),
        (sample_media.sample_image(1, "bmp"), "not a PNG, JPEG, GIF or WebP file"),
        (sample_media.truncated(sample_media.sample_image(2, "png", 64, 64), 0.5), "decoded"),
        (b"", "not a PNG, JPEG, GIF or WebP file"),
    ],
    ids=["garbage", "bmp", "truncated", "empty"],
)
def test_image_that_cannot_be_decoded_is_refused(
    runtime: NovaRuntime, data: bytes, fragment: str
) -> None:
    message = rejection(lambda: invoke(runtime, "image", {"format": "png", "source": inline(data)}))
    assert fragment in message
    assert "(inline bytes)" in message


def test_audio_of_31_seconds_is_refused_but_30_pass(runtime: NovaRuntime) -> None:
    for seconds in (30.0, 31.0):
        data = sample_media.sample_audio(1, seconds, "wav", sample_rate=8_000)
        audio = {"format": "wav", "source": inline(data)}
        if seconds == 30.0:
            assert invoke(runtime, "audio", audio)[0]["embeddingType"] == "AUDIO"
        else:
            message = rejection(lambda a=audio: invoke(runtime, "audio", a))
            assert "31.0 seconds long; InvokeModel accepts at most 30 seconds" in message
            assert "StartAsyncInvoke" in message


def test_video_over_30_seconds_is_refused(runtime: NovaRuntime, store: MemoryObjectStore) -> None:
    data = sample_media.sample_video(2, 31.0, "mp4", width=16, height=16, fps=1)
    video = {
        "format": "mp4",
        "source": stored(store, "s3://media/long.mp4", data),
        "embeddingMode": "AUDIO_VIDEO_COMBINED",
    }
    message = rejection(lambda: invoke(runtime, "video", video))
    assert "The video is 31.0 seconds long" in message
    assert "s3://media/long.mp4" in message


def audio_only_mp4(clip: bytes) -> bytes:
    """``clip``'s sound remuxed into an MP4 without a picture."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(clip)) as source, av.open(buffer, "w", format="mp4") as target:
        sound = source.streams.audio[0]
        copied = target.add_stream_from_template(sound)
        for packet in source.demux(sound):
            if packet.dts is not None:
                packet.stream = copied
                target.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("modality", "declared", "make", "fragment"),
    [
        ("audio", "mp3", lambda clip: sample_media.sample_audio(1, 1.0, "wav"), "whose container"),
        ("audio", "ogg", lambda clip: sample_media.sample_audio(1, 1.0, "mp3"), "whose container"),
        ("audio", "wav", lambda clip: clip, "audio format wav does not match"),
        ("audio", "wav", lambda clip: sample_media.garbage(2), "could not be read"),
        ("audio", "wav", lambda clip: b"", "could not be read"),
        ("video", "webm", lambda clip: clip, "video format webm does not match"),
        ("video", "mp4", lambda clip: sample_media.sample_audio(1, 1.0, "wav"), "whose container"),
        ("video", "mp4", audio_only_mp4, "holds no video stream"),
        ("video", "mp4", lambda clip: sample_media.truncated(clip, 0.4), "s3://media/input"),
    ],
)
def test_media_that_does_not_fit_its_declaration_is_refused(
    runtime: NovaRuntime,
    store: MemoryObjectStore,
    clip: bytes,
    modality: str,
    declared: str,
    make: Any,
    fragment: str,
) -> None:
    content = {"format": declared, "source": stored(store, "s3://media/input", make(clip))}
    if modality == "video":
        content["embeddingMode"] = "AUDIO_VIDEO_COMBINED"
    assert fragment in rejection(lambda: invoke(runtime, modality, content))


def test_quicktime_family_formats_are_interchangeable(runtime: NovaRuntime, clip: bytes) -> None:
    for declared in ("mp4", "mov", "3gp"):
        video = {
            "format": declared,
            "source": inline(clip),
            "embeddingMode": "AUDIO_VIDEO_SEPARATE",
        }
        assert len(invoke(runtime, "video", video)) == 2


def test_text_from_s3_is_utf8(runtime: NovaRuntime, store: MemoryObjectStore) -> None:
    text = "Fjörd, 北京, emoji 🌊 and more."
    source = stored(store, "s3://media/utf8.txt", text.encode())
    [from_s3] = invoke(runtime, "text", {"truncationMode": "NONE", "source": source})
    [from_value] = invoke(runtime, "text", {"truncationMode": "NONE", "value": text})
    assert from_s3 == from_value


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"caf\xe9", "is not valid UTF-8 (invalid byte at offset 3)"),
        (b"", "s3://media/doc.txt is empty"),
        (b"a" * 50_001, "holds 50001 characters, over the 50000-character limit of InvokeModel"),
        (b"a" * 1_000_001, "is 1000001 bytes, over the 1000000-byte limit"),
    ],
    ids=["latin1", "empty", "too-many-chars", "too-many-bytes"],
)
def test_s3_text_that_breaks_a_rule_is_refused(
    runtime: NovaRuntime, store: MemoryObjectStore, data: bytes, fragment: str
) -> None:
    text = {"truncationMode": "END", "source": stored(store, "s3://media/doc.txt", data)}
    assert fragment in rejection(lambda: invoke(runtime, "text", text))


def test_missing_s3_objects_are_named(runtime: NovaRuntime) -> None:
    missing = {"s3Location": {"uri": "s3://media/nowhere.bin"}}
    contents = {
        "text": {"truncationMode": "END", "source": missing},
        "image": {"format": "png", "source": missing},
        "audio": {"format": "mp3", "source": missing},
        "video": {"format": "mp4", "source": missing, "embeddingMode": "AUDIO_VIDEO_SEPARATE"},
    }
    for modality, content in contents.items():
        message = rejection(lambda m=modality, c=content: invoke(runtime, m, c))
        assert (
            message == "The S3 object s3://media/nowhere.bin does not exist or is not accessible."
        )


@pytest.mark.parametrize(
    ("modality", "limit"),
    [("image", 50_000_000), ("audio", 100_000_000), ("video", 100_000_000)],
)
def test_sync_size_limits(
    runtime: NovaRuntime, store: SizedObjectStore, clip: bytes, modality: str, limit: int
) -> None:
    data = {
        "image": sample_media.sample_image(1, "png"),
        "audio": sample_media.sample_audio(1, 1.0, "wav"),
        "video": clip,
    }[modality]
    content: dict[str, Any] = {"format": {"image": "png", "audio": "wav", "video": "mp4"}[modality]}
    if modality == "video":
        content["embeddingMode"] = "AUDIO_VIDEO_COMBINED"
    content["source"] = stored(store, "s3://media/big", data)
    store.reported_sizes["s3://media/big"] = limit
    assert invoke(runtime, modality, content)
    store.reported_sizes["s3://media/big"] = limit + 1
    message = rejection(lambda: invoke(runtime, modality, content))
    assert f"The {modality} object s3://media/big is {limit + 1} bytes" in message


def long_text(words: int) -> str:
    return " ".join(f"w{index % 500}" for index in range(words))


@pytest.mark.parametrize("mode", ["END", "START"])
def test_text_over_the_token_limit_is_truncated(
    runtime: NovaRuntime, store: MemoryObjectStore, mode: str
) -> None:
    text = long_text(9_000)
    source = stored(store, "s3://media/long.txt", text.encode())
    [entry] = invoke(runtime, "text", {"truncationMode": mode, "source": source})
    kept, cut_at = vectors.truncated_text(text, mode)
    assert entry["truncatedCharLength"] == cut_at
    assert entry["embeddingType"] == "TEXT"
    if mode == "END":
        assert text[:cut_at] == kept
        assert len(kept.split()) == 8_192
    else:
        assert text[cut_at:] == kept
    np.testing.assert_allclose(vector(entry), vectors.text_embedding(kept, 3072), atol=1e-7)


def test_text_over_the_token_limit_with_mode_none_is_refused(
    runtime: NovaRuntime, store: MemoryObjectStore
) -> None:
    source = stored(store, "s3://media/long.txt", long_text(9_000).encode())
    message = rejection(
        lambda: invoke(runtime, "text", {"truncationMode": "NONE", "source": source})
    )
    assert "exceeds 8192 tokens" in message


def test_text_at_the_token_limit_is_not_truncated(
    runtime: NovaRuntime, store: MemoryObjectStore
) -> None:
    source = stored(store, "s3://media/fits.txt", long_text(8_192).encode())
    [entry] = invoke(runtime, "text", {"truncationMode": "NONE", "source": source})
    assert "truncatedCharLength" not in entry
