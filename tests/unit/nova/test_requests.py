"""Nova request bodies and answers: every documented limit is refused before any call."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tasks.nova.requests import (
    MAX_INLINE_BASE64_CHARS,
    MAX_TEXT_CHARS,
    Payload,
    PayloadError,
    ResponseFormatError,
    invoke_model_body,
    parsed_embeddings,
    query_purpose,
)
from tasks.settings import EmbeddingSettings

SETTINGS = EmbeddingSettings(dimension=256, video_embedding_mode="AUDIO_VIDEO_SEPARATE")


def params(payload: Payload, purpose: str = "GENERIC_INDEX") -> dict:
    body = invoke_model_body(payload, SETTINGS, purpose)
    assert body["schemaVersion"] == "nova-multimodal-embed-v1"
    assert body["taskType"] == "SINGLE_EMBEDDING"
    return body["singleEmbeddingParams"]


def test_text_body_carries_value_dimension_purpose_and_truncation() -> None:
    assert params(Payload(kind="text", text="a red fox")) == {
        "embeddingPurpose": "GENERIC_INDEX",
        "embeddingDimension": 256,
        "text": {"truncationMode": "END", "value": "a red fox"},
    }


def test_text_from_s3_and_exactly_the_limit_are_accepted() -> None:
    from_s3 = params(Payload(kind="text", s3_uri="s3://bucket/notes.txt"))
    assert from_s3["text"]["source"] == {"s3Location": {"uri": "s3://bucket/notes.txt"}}
    at_limit = params(Payload(kind="text", text="x" * MAX_TEXT_CHARS))
    assert len(at_limit["text"]["value"]) == MAX_TEXT_CHARS


def test_inline_image_is_base64_with_format_and_detail_level() -> None:
    image = params(
        Payload(kind="image", data=b"\x89PNG...", media_format="JPG", detail_level="DOCUMENT_IMAGE")
    )["image"]
    assert image["format"] == "jpeg"
    assert image["detailLevel"] == "DOCUMENT_IMAGE"
    assert base64.b64decode(image["source"]["bytes"]) == b"\x89PNG..."
    standard = params(Payload(kind="image", data=b"gif", media_format="gif"))["image"]
    assert standard["detailLevel"] == "STANDARD_IMAGE"


def test_audio_and_video_from_s3_take_the_settings_embedding_mode() -> None:
    audio = params(Payload(kind="audio", s3_uri="s3://media/a.mp3", media_format="mp3"))
    assert audio["audio"] == {
        "format": "mp3",
        "source": {"s3Location": {"uri": "s3://media/a.mp3"}},
    }
    video = params(Payload(kind="video", s3_uri="s3://media/v.3gp", media_format="3gp"))["video"]
    assert video["embeddingMode"] == "AUDIO_VIDEO_SEPARATE"
    assert video["format"] == "3gp"


def test_the_body_is_json_serialisable_and_has_exactly_one_modality() -> None:
    body = invoke_model_body(Payload(kind="video", data=b"v", media_format="mp4"), SETTINGS)
    decoded = json.loads(json.dumps(body))
    modalities = {"text", "image", "audio", "video"} & set(decoded["singleEmbeddingParams"])
    assert modalities == {"video"}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (Payload(kind="text", text=""), "text_empty"),
        (Payload(kind="text", text="  \n\t "), "text_empty"),
        (Payload(kind="text", text="x" * (MAX_TEXT_CHARS + 1)), "text_too_long"),
        (Payload(kind="text", data=b"bytes"), "source_not_accepted"),
        (Payload(kind="text"), "no_source"),
        (Payload(kind="text", text="t", s3_uri="s3://b/k.txt"), "multiple_sources"),
        (Payload(kind="text", text="t", media_format="png"), "format_not_accepted"),
        (Payload(kind="image", data=b"x", media_format="bmp"), "format_not_accepted"),
        (Payload(kind="image", data=b"x", media_format="tiff"), "format_not_accepted"),
        (Payload(kind="audio", data=b"x", media_format="flac"), "format_not_accepted"),
        (Payload(kind="video", data=b"x", media_format="avi"), "format_not_accepted"),
        (Payload(kind="video", data=b"x", media_format="three_gp"), "format_not_accepted"),
        (Payload(kind="image", data=b"x"), "format_missing"),
        (Payload(kind="image", media_format="png"), "no_source"),
        (
            Payload(kind="image", data=b"x", s3_uri="s3://b/k", media_format="png"),
            "multiple_sources",
        ),
        (Payload(kind="image", data=b"", media_format="png"), "media_empty"),
        (Payload(kind="image", s3_uri="https://b/k", media_format="png"), "s3_uri_malformed"),
        (Payload(kind="image", s3_uri="s3://bucket-only", media_format="png"), "s3_uri_malformed"),
        (
            Payload(kind="image", data=b"x", media_format="png", detail_level="HD"),
            "detail_level_not_accepted",
        ),
        (
            Payload(kind="audio", data=b"x", media_format="mp3", detail_level="DOCUMENT_IMAGE"),
            "detail_level_not_accepted",
        ),
        (Payload(kind="audio", data=b"x", text="t", media_format="mp3"), "source_not_accepted"),
        (Payload(kind="pdf", data=b"x"), "kind_not_accepted"),  # type: ignore[arg-type]
    ],
)
def test_each_limit_is_a_payload_error_with_its_code(payload: Payload, code: str) -> None:
    with pytest.raises(PayloadError) as raised:
        invoke_model_body(payload, SETTINGS)
    assert raised.value.code == code
    assert str(raised.value)


def test_inline_media_over_25_mb_after_base64_is_refused_before_encoding() -> None:
    largest = MAX_INLINE_BASE64_CHARS // 4 * 3  # exactly 25,000,000 base64 characters
    with pytest.raises(PayloadError) as raised:
        invoke_model_body(
            Payload(kind="video", data=bytes(largest + 1), media_format="mp4"), SETTINGS
        )
    assert raised.value.code == "payload_too_large"
    assert "s3_uri" in str(raised.value)


def test_a_body_over_the_invoke_model_limit_is_refused_even_if_the_media_fits() -> None:
    # 25,000,000 base64 characters fit the inline limit, but the JSON around them does not.
    largest = MAX_INLINE_BASE64_CHARS // 4 * 3
    with pytest.raises(PayloadError) as raised:
        invoke_model_body(Payload(kind="image", data=bytes(largest), media_format="png"), SETTINGS)
    assert raised.value.code == "payload_too_large"
    fits = largest - 300
    body = invoke_model_body(Payload(kind="image", data=bytes(fits), media_format="png"), SETTINGS)
    assert len(json.dumps(body).encode()) <= 25_000_000


def test_unknown_purpose_is_a_programming_error_not_a_payload_error() -> None:
    with pytest.raises(ValueError, match="embeddingPurpose") as raised:
        invoke_model_body(Payload(kind="text", text="t"), SETTINGS, purpose="SEARCH")
    assert not isinstance(raised.value, PayloadError)


def answer(*embeddings: tuple[str, list[float]]) -> bytes:
    return json.dumps(
        {"embeddings": [{"embeddingType": t, "embedding": v} for t, v in embeddings]}
    ).encode()


def test_parsed_embeddings_gives_read_only_float32_vectors_in_order() -> None:
    rng = np.random.default_rng(7)
    video, audio = rng.standard_normal(4).tolist(), rng.standard_normal(4).tolist()
    parsed = parsed_embeddings(answer(("VIDEO", video), ("AUDIO", audio)), dimension=4)
    assert [kind for kind, _ in parsed] == ["VIDEO", "AUDIO"]
    assert parsed[0][1].dtype == np.float32
    np.testing.assert_allclose(parsed[1][1], audio, rtol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        parsed[0][1][0] = 1.0


def test_parsed_embeddings_accepts_truncated_char_length() -> None:
    body = json.dumps(
        {
            "embeddings": [
                {"embeddingType": "TEXT", "embedding": [0.5, 0.5], "truncatedCharLength": 9}
            ]
        }
    ).encode()
    assert parsed_embeddings(body, dimension=2)[0][0] == "TEXT"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        json.dumps({"embeddings": []}).encode(),
        answer(("TEXT", [0.1, 0.2, 0.3])),
        answer(("SMELL", [0.1, 0.2])),
        answer(("TEXT", ["a", "b"])),
        answer(("TEXT", [1.0, float("nan")])),  # Python's json writes and reads NaN
        json.dumps(
            {"embeddings": [{"embeddingType": "TEXT", "embedding": [[1.0], [2.0]]}]}
        ).encode(),
    ],
)
def test_parsed_embeddings_refuses_what_is_not_the_documented_answer(body: bytes) -> None:
    with pytest.raises(ResponseFormatError) as raised:
        parsed_embeddings(body, dimension=2)
    assert raised.value.code == "malformed_response"


@pytest.mark.parametrize(
    ("held", "purpose"),
    [
        ({"text"}, "TEXT_RETRIEVAL"),
        ({"text_chunk", "TEXT"}, "TEXT_RETRIEVAL"),
        ({"image"}, "IMAGE_RETRIEVAL"),
        ({"pdf"}, "DOCUMENT_RETRIEVAL"),
        ({"pdf_page", "DOCUMENT_IMAGE"}, "DOCUMENT_RETRIEVAL"),
        ({"video"}, "VIDEO_RETRIEVAL"),
        ({"AUDIO_VIDEO_COMBINED", "video"}, "VIDEO_RETRIEVAL"),
        ({"audio"}, "AUDIO_RETRIEVAL"),
        ({"text", "image"}, "GENERIC_RETRIEVAL"),
        ({"image", "pdf"}, "GENERIC_RETRIEVAL"),
        ({"video", "audio"}, "GENERIC_RETRIEVAL"),
        (set(), "GENERIC_RETRIEVAL"),
    ],
)
def test_query_purpose_matches_what_the_index_holds(held: set[str], purpose: str) -> None:
    assert query_purpose(held) == purpose


def test_query_purpose_refuses_unknown_modalities() -> None:
    with pytest.raises(ValueError, match="smell"):
        query_purpose({"smell"})
