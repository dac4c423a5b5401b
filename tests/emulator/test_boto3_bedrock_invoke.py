"""InvokeModel on the Nova stand-in through a real boto3 ``bedrock-runtime`` client over HTTP: the
embeddings a user gets for each modality, source and dimension, the errors botocore raises for
requests the model refuses, and a request-rate quota's throttling (aws-apis.md §1.1–§1.4, §1.7,
§1.8)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator.app import Emulator
from emulator.misbehaviour import Misbehaviour
from tasks.demo import sample_media

MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
MODEL_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
DIMENSIONS = (256, 384, 1024, 3072)
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
AUDIO_FORMATS = ("wav", "mp3", "ogg")


@dataclass(frozen=True)
class Media:
    """The test media of this module, generated once: short files of each kind."""

    images: dict[str, bytes]
    audio: dict[str, bytes]
    clip: bytes
    long_clip: bytes
    half_minute: bytes


@pytest.fixture(scope="module")
def media() -> Media:
    """Seeded images in four formats, 3-second tones in three, a 3-second and a 31-second mp4."""
    return Media(
        images={fmt: sample_media.sample_image(1, fmt) for fmt in IMAGE_FORMATS},
        audio={fmt: sample_media.sample_audio(2, 3.0, fmt) for fmt in AUDIO_FORMATS},
        clip=sample_media.sample_video(3, 3.0, "mp4", width=32, height=32, fps=4),
        long_clip=sample_media.sample_video(4, 31.0, "mp4", width=32, height=32, fps=2),
        half_minute=sample_media.sample_audio(5, 30.0, "mp3"),
    )


@pytest.fixture
def bucket(s3: BaseClient, request: pytest.FixtureRequest) -> str:
    """A new bucket named after the test, so tests sharing the session's stand-in never meet."""
    name = "invoke-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3.create_bucket(Bucket=name)
    return name


def put(s3: BaseClient, bucket: str, key: str, data: bytes) -> dict[str, Any]:
    """Store ``data`` at ``bucket/key``; returns the ``s3Location`` source that names it."""
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return {"s3Location": {"uri": f"s3://{bucket}/{key}"}}


def inline(data: bytes) -> dict[str, Any]:
    """An inline ``bytes`` source."""
    return {"bytes": base64.b64encode(data).decode()}


def text(**fields: Any) -> dict[str, Any]:
    """Text ``content`` for :func:`embed`: ``value=`` or ``source=``, truncated at the END."""
    return {"text": {"truncationMode": "END", **fields}}


def index_params(**content: Any) -> dict[str, Any]:
    """``singleEmbeddingParams`` with the GENERIC_INDEX purpose and ``content``."""
    return {"embeddingPurpose": "GENERIC_INDEX", **content}


def request_body(params: dict[str, Any]) -> str:
    """A SINGLE_EMBEDDING body; ``params`` are the ``singleEmbeddingParams`` as given."""
    body = {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": params,
    }
    return json.dumps(body)


def embed(
    bedrock: BaseClient, content: dict[str, Any], model_id: str = MODEL_ID, **params: Any
) -> list[dict[str, Any]]:
    """Invoke the model for one input (``{"text": ...}`` etc.); returns the ``embeddings`` list."""
    response = bedrock.invoke_model(
        modelId=model_id,
        body=request_body(index_params(**content, **params)),
        contentType="application/json",
        accept="application/json",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["contentType"] == "application/json"
    document = json.loads(response["body"].read())
    assert set(document) == {"embeddings"}
    return document["embeddings"]


def vectors_of(
    embeddings: list[dict[str, Any]], types: list[str], dimension: int = 3072
) -> list[list[float]]:
    """Check the embeddings' types, lengths and unit norms; returns the vectors in order."""
    assert [entry["embeddingType"] for entry in embeddings] == types
    for entry in embeddings:
        assert set(entry) == {"embeddingType", "embedding"}
        assert len(entry["embedding"]) == dimension
        assert all(isinstance(value, float) for value in entry["embedding"])
        assert np.linalg.norm(entry["embedding"]) == pytest.approx(1.0, abs=1e-5)
    return [entry["embedding"] for entry in embeddings]


def refused(exception: type[ClientError], call: Callable[[], object], status: int = 400) -> str:
    """Run ``call``, expecting ``exception`` with HTTP ``status``; returns the error message."""
    with pytest.raises(exception) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    return caught.value.response["Error"]["Message"]


def test_text_inline_and_from_s3(bedrock: BaseClient, s3: BaseClient, bucket: str) -> None:
    words = "A heron stands in the shallows at dawn."
    [from_value] = vectors_of(embed(bedrock, text(value=words)), ["TEXT"])
    source = put(s3, bucket, "notes/heron.txt", words.encode())
    [from_s3] = vectors_of(embed(bedrock, text(source=source)), ["TEXT"])
    assert from_s3 == from_value
    [other] = vectors_of(embed(bedrock, text(value="Rain.")), ["TEXT"])
    assert other != from_value


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_image_inline_and_from_s3(
    bedrock: BaseClient, s3: BaseClient, bucket: str, media: Media, image_format: str
) -> None:
    data = media.images[image_format]
    image = {"format": image_format, "source": inline(data)}
    [from_bytes] = vectors_of(
        embed(bedrock, {"image": image}, embeddingDimension=1024), ["IMAGE"], 1024
    )
    source = put(s3, bucket, f"pictures/p.{image_format}", data)
    image = {"format": image_format, "source": source, "detailLevel": "STANDARD_IMAGE"}
    [from_s3] = vectors_of(
        embed(bedrock, {"image": image}, embeddingDimension=1024), ["IMAGE"], 1024
    )
    assert from_s3 == from_bytes


@pytest.mark.parametrize("audio_format", AUDIO_FORMATS)
def test_audio_inline_and_from_s3(
    bedrock: BaseClient, s3: BaseClient, bucket: str, media: Media, audio_format: str
) -> None:
    data = media.audio[audio_format]
    audio = {"format": audio_format, "source": inline(data)}
    [from_bytes] = vectors_of(
        embed(bedrock, {"audio": audio}, embeddingDimension=384), ["AUDIO"], 384
    )
    audio = {"format": audio_format, "source": put(s3, bucket, f"tones/t.{audio_format}", data)}
    [from_s3] = vectors_of(embed(bedrock, {"audio": audio}, embeddingDimension=384), ["AUDIO"], 384)
    assert from_s3 == from_bytes


def test_half_a_minute_of_audio_is_accepted(
    bedrock: BaseClient, s3: BaseClient, bucket: str, media: Media
) -> None:
    audio = {"format": "mp3", "source": put(s3, bucket, "tones/30s.mp3", media.half_minute)}
    vectors_of(embed(bedrock, {"audio": audio}, embeddingDimension=256), ["AUDIO"], 256)


@pytest.mark.parametrize(
    ("mode", "types"),
    [
        ("AUDIO_VIDEO_COMBINED", ["AUDIO_VIDEO_COMBINED"]),
        ("AUDIO_VIDEO_SEPARATE", ["VIDEO", "AUDIO"]),
    ],
)
def test_video_in_both_embedding_modes(
    bedrock: BaseClient, s3: BaseClient, bucket: str, media: Media, mode: str, types: list[str]
) -> None:
    video = {"format": "mp4", "embeddingMode": mode, "source": inline(media.clip)}
    from_bytes = vectors_of(embed(bedrock, {"video": video}, embeddingDimension=256), types, 256)
    video["source"] = put(s3, bucket, "clips/c.mp4", media.clip)
    from_s3 = vectors_of(embed(bedrock, {"video": video}, embeddingDimension=256), types, 256)
    assert from_s3 == from_bytes
    assert len({tuple(vector) for vector in from_bytes}) == len(types)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_each_dimension_is_the_renormalised_prefix_of_the_full_vector(
    bedrock: BaseClient, media: Media, dimension: int
) -> None:
    for content in (
        text(value="matryoshka dolls nest inside each other"),
        {"image": {"format": "png", "source": inline(media.images["png"])}},
    ):
        [full] = embed(bedrock, content, embeddingDimension=3072)
        [short] = embed(bedrock, content, embeddingDimension=dimension)
        assert short["embeddingType"] == full["embeddingType"]
        assert len(short["embedding"]) == dimension
        prefix = np.asarray(full["embedding"][:dimension], dtype=np.float64)
        np.testing.assert_allclose(short["embedding"], prefix / np.linalg.norm(prefix), atol=1e-6)


def test_default_dimension_is_3072(bedrock: BaseClient) -> None:
    vectors_of(embed(bedrock, text(value="default")), ["TEXT"])


def test_foundation_model_arn_serves_as_model_id(bedrock: BaseClient, media: Media) -> None:
    content = {"audio": {"format": "wav", "source": inline(media.audio["wav"])}}
    assert embed(bedrock, content, model_id=MODEL_ARN) == embed(bedrock, content)


def test_the_same_request_gives_the_same_vector(bedrock: BaseClient, media: Media) -> None:
    content = {
        "video": {
            "format": "mp4",
            "embeddingMode": "AUDIO_VIDEO_COMBINED",
            "source": inline(media.clip),
        }
    }
    first = embed(bedrock, content, embeddingDimension=1024)
    second = embed(bedrock, content, embeddingDimension=1024)
    assert first == second
    words = {"text": {"truncationMode": "NONE", "value": "once more, with feeling"}}
    assert embed(bedrock, words) == embed(bedrock, words)


# Each case builds ``singleEmbeddingParams`` from the module's media and the test bucket's name.
ParamsBuilder = Callable[[Media, str], dict[str, Any]]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        pytest.param(
            lambda m, b: index_params(
                video={
                    "format": "mp4",
                    "embeddingMode": "AUDIO_VIDEO_COMBINED",
                    "source": {"s3Location": {"uri": f"s3://{b}/long.mp4"}},
                }
            ),
            "31.0 seconds long; InvokeModel accepts at most 30 seconds",
            id="clip-31-seconds",
        ),
        pytest.param(
            lambda m, b: {"text": {"truncationMode": "END", "value": "x"}},
            "#/singleEmbeddingParams: required key [embeddingPurpose] not found",
            id="missing-purpose",
        ),
        pytest.param(
            lambda m, b: index_params(embeddingDimension=512, **text(value="x")),
            "512 is not a valid enum value (one of [256, 384, 1024, 3072])",
            id="unknown-dimension",
        ),
        pytest.param(
            lambda m, b: index_params(
                **text(value="x"),
                image={"format": "png", "source": inline(m.images["png"])},
            ),
            "exactly one of [text, image, audio, video] must be present, found 2: [text, image]",
            id="two-modalities",
        ),
        pytest.param(
            lambda m, b: index_params(**text(value="a" * 8_193)),
            "expected maxLength: 8192, actual: 8193",
            id="text-over-8192-chars",
        ),
        pytest.param(
            lambda m, b: index_params(**text(source=inline(b"plain words"))),
            "extraneous key [bytes] is not permitted",
            id="bytes-for-text",
        ),
        pytest.param(
            lambda m, b: index_params(image={"format": "png", "source": inline(m.images["jpeg"])}),
            "The image format png does not match the image data, which is jpeg",
            id="png-holding-jpeg",
        ),
        pytest.param(
            lambda m, b: index_params(
                image={
                    "format": "png",
                    "source": inline(sample_media.truncated(m.images["png"], 0.5)),
                }
            ),
            "The png image could not be decoded",
            id="truncated-image",
        ),
        pytest.param(
            lambda m, b: index_params(
                image={"format": "webp", "source": inline(sample_media.garbage(6))}
            ),
            "The image is not a PNG, JPEG, GIF or WebP file",
            id="garbage-image",
        ),
        pytest.param(
            lambda m, b: index_params(
                audio={"format": "mp3", "source": {"s3Location": {"uri": f"s3://{b}/absent.mp3"}}}
            ),
            "/absent.mp3 does not exist or is not accessible",
            id="missing-s3-object",
        ),
        pytest.param(
            lambda m, b: index_params(
                image={"format": "png", "source": {"s3Location": {"uri": f"s3://{b}-gone/p.png"}}}
            ),
            "-gone/p.png does not exist or is not accessible",
            id="missing-s3-bucket",
        ),
    ],
)
def test_invalid_requests_raise_validation_exception(
    bedrock: BaseClient,
    s3: BaseClient,
    bucket: str,
    media: Media,
    build: ParamsBuilder,
    fragment: str,
) -> None:
    put(s3, bucket, "long.mp4", media.long_clip)
    body = request_body(build(media, bucket))
    message = refused(
        bedrock.exceptions.ValidationException,
        lambda: bedrock.invoke_model(modelId=MODEL_ID, body=body, contentType="application/json"),
    )
    assert fragment in message
    vectors_of(embed(bedrock, text(value="still fine")), ["TEXT"])


@pytest.mark.parametrize(
    "model_id",
    [
        "amazon.titan-embed-text-v2:0",
        "amazon.nova-2-multimodal-embeddings-v2:0",
        f"arn:aws:bedrock:eu-west-1::foundation-model/{MODEL_ID}",
    ],
)
def test_unknown_model_id_is_refused(bedrock: BaseClient, model_id: str) -> None:
    body = request_body(index_params(**text(value="x")))
    message = refused(
        bedrock.exceptions.ValidationException,
        lambda: bedrock.invoke_model(modelId=model_id, body=body),
    )
    assert message == "The provided model identifier is invalid."


def test_segmented_task_type_is_refused_by_invoke_model(bedrock: BaseClient) -> None:
    body = json.dumps(
        {
            "taskType": "SEGMENTED_EMBEDDING",
            "segmentedEmbeddingParams": index_params(
                text={"truncationMode": "END", "value": "x", "segmentationConfig": {}}
            ),
        }
    )
    message = refused(
        bedrock.exceptions.ValidationException,
        lambda: bedrock.invoke_model(modelId=MODEL_ID, body=body),
    )
    assert "Task type SEGMENTED_EMBEDDING is not supported by InvokeModel" in message


def test_request_rate_quota_throttles_the_call_beyond_it(stand_in: Emulator) -> None:
    # A quota of one request per 100 s: a bucket of one token that no test outlasts, so the
    # outcome does not depend on how fast this machine answers.
    quota = Misbehaviour(operations=frozenset({"InvokeModel"}), requests_per_second=0.01)
    stand_in.configure(bedrock_faults=(quota,))
    client = stand_in.client(
        "bedrock-runtime", retries={"mode": "standard", "total_max_attempts": 1}
    )
    body = request_body(index_params(**text(value="quick")))
    client.invoke_model(modelId=MODEL_ID, body=body)
    message = refused(
        client.exceptions.ThrottlingException,
        lambda: client.invoke_model(modelId=MODEL_ID, body=body),
        status=429,
    )
    assert message == "Too many requests, please wait before trying again."
    stats = stand_in.stats()["bedrock-runtime"]
    assert stats["calls"]["InvokeModel"] == 2
    assert stats["errors"]["InvokeModel"] == {"ThrottlingException": 1}
