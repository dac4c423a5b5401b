"""The Nova stand-in's request checks: the model's schema (InvokeModel bodies and StartAsyncInvoke
``modelInput``) and the service's member constraints (model IDs, the StartAsyncInvoke envelope,
headers). Every rule is one table row: a valid body, one change, and the message it must give."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulator.errors import ServiceError
from emulator.nova import media, schema, vectors
from emulator.nova.service import NOVA_MODEL_ID, NovaRuntime
from emulator.objects import MemoryObjectStore
from tasks.demo import sample_media

Mutation = Callable[[dict[str, Any]], None]
PNG = sample_media.sample_image(1, "png")
PNG_URI = "s3://media/picture.png"
WAV_URI = "s3://media/tone.wav"
MP4_URI = "s3://media/clip.mp4"
TEXT_URI = "s3://media/notes.txt"
OUTPUT_URI = "s3://results/embeddings/"


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def store() -> MemoryObjectStore:
    return MemoryObjectStore(
        {
            PNG_URI: PNG,
            WAV_URI: sample_media.sample_audio(2, 2.0, "wav"),
            MP4_URI: sample_media.sample_video(3, 2.0, "mp4", width=32, height=32, fps=4),
            TEXT_URI: b"Plain text about embeddings.",
        }
    )


@pytest.fixture
def runtime(store: MemoryObjectStore) -> Iterator[NovaRuntime]:
    service = NovaRuntime(store, state_dir=None, clock=FakeClock())
    yield service
    service.close()


def s3(uri: str) -> dict[str, Any]:
    return {"s3Location": {"uri": uri}}


SYNC_BODIES: dict[str, dict[str, Any]] = {
    "text": {"truncationMode": "END", "value": "hello world"},
    "image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}},
    "audio": {"format": "wav", "source": s3(WAV_URI)},
    "video": {"format": "mp4", "source": s3(MP4_URI), "embeddingMode": "AUDIO_VIDEO_COMBINED"},
}
ASYNC_BODIES: dict[str, dict[str, Any]] = {
    "text": {"truncationMode": "END", "source": s3(TEXT_URI), "segmentationConfig": {}},
    "image": {"format": "png", "source": s3(PNG_URI)},
    "audio": {"format": "wav", "source": s3(WAV_URI), "segmentationConfig": {}},
    "video": {
        "format": "mp4",
        "source": s3(MP4_URI),
        "embeddingMode": "AUDIO_VIDEO_SEPARATE",
        "segmentationConfig": {"durationSeconds": 1},
    },
}


def sync_body(modality: str) -> dict[str, Any]:
    params = {"embeddingPurpose": "GENERIC_INDEX", modality: copy.deepcopy(SYNC_BODIES[modality])}
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": params,
    }


def async_body(modality: str) -> dict[str, Any]:
    params = {"embeddingPurpose": "GENERIC_INDEX", modality: copy.deepcopy(ASYNC_BODIES[modality])}
    return {"taskType": "SEGMENTED_EMBEDDING", "segmentedEmbeddingParams": params}


def envelope(model_input: Any, **members: Any) -> dict[str, Any]:
    return {
        "clientRequestToken": "token-1",
        "modelId": NOVA_MODEL_ID,
        "modelInput": model_input,
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": OUTPUT_URI}},
        **members,
    }


def _parent(document: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, last = path.split(".")
    for name in parents:
        document = document[name]
    return document, last


def setting(path: str, value: Any) -> Mutation:
    """A change that sets the member at dotted ``path`` to ``value``."""

    def mutate(document: dict[str, Any]) -> None:
        parent, last = _parent(document, path)
        parent[last] = value

    return mutate


def removing(path: str) -> Mutation:
    """A change that deletes the member at dotted ``path``."""

    def mutate(document: dict[str, Any]) -> None:
        parent, last = _parent(document, path)
        del parent[last]

    return mutate


def invoke(runtime: NovaRuntime, body: Any) -> dict[str, Any]:
    return runtime.invoke_model(NOVA_MODEL_ID, json.dumps(body).encode(), "application/json", None)


def validation_error(call: Callable[[], Any]) -> str:
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.code == "ValidationException", caught.value.message
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize("modality", list(SYNC_BODIES))
def test_every_base_sync_body_is_valid(runtime: NovaRuntime, modality: str) -> None:
    assert invoke(runtime, sync_body(modality))["embeddings"]


@pytest.mark.parametrize("modality", list(ASYNC_BODIES))
def test_every_base_async_body_is_valid(runtime: NovaRuntime, modality: str) -> None:
    response = runtime.start_async_invoke(envelope(async_body(modality)))
    assert response["invocationArn"].startswith("arn:aws:bedrock:us-east-1:123456789012:")


def test_missing_purpose_gives_bedrocks_exact_message(runtime: NovaRuntime) -> None:
    body = sync_body("text")
    del body["singleEmbeddingParams"]["embeddingPurpose"]
    assert validation_error(lambda: invoke(runtime, body)) == (
        "Malformed input request: #/singleEmbeddingParams: required key [embeddingPurpose] not "
        "found, please reformat your input and try again."
    )


P = "singleEmbeddingParams"
SYNC_VIOLATIONS = [
    ("text", removing("taskType"), "#: required key [taskType] not found"),
    ("text", setting("taskType", "EMBED"), "#/taskType: EMBED is not a valid enum value"),
    ("text", setting("taskType", "SEGMENTED_EMBEDDING"), "not supported by InvokeModel"),
    ("text", setting("taskType", 1), "#/taskType: expected type: String, found: Integer"),
    ("text", setting("schemaVersion", "v2"), "#/schemaVersion: v2 is not a valid enum value"),
    ("text", removing(P), "#: required key [singleEmbeddingParams] not found"),
    ("text", setting("extra", 1), "#: extraneous key [extra] is not permitted"),
    ("text", setting("segmentedEmbeddingParams", {}), "extraneous key [segmentedEmbeddingParams]"),
    ("text", setting(P, []), f"#/{P}: expected type: JSONObject, found: JSONArray"),
    ("text", setting(f"{P}.embeddingPurpose", "SEARCH"), "SEARCH is not a valid enum value"),
    (
        "text",
        setting(f"{P}.embeddingDimension", 512),
        "embeddingDimension: 512 is not a valid enum",
    ),
    ("text", setting(f"{P}.embeddingDimension", "256"), "expected type: Integer, found: String"),
    ("text", setting(f"{P}.embeddingDimension", 256.0), "expected type: Integer, found: Number"),
    ("text", setting(f"{P}.embeddingDimension", True), "expected type: Integer, found: Boolean"),
    ("text", setting(f"{P}.colour", "red"), f"#/{P}: extraneous key [colour] is not permitted"),
    ("text", removing(f"{P}.text"), "exactly one of [text, image, audio, video] must be present"),
    ("text", setting(f"{P}.image", SYNC_BODIES["image"]), "found 2: [text, image]"),
    ("text", removing(f"{P}.text.truncationMode"), "required key [truncationMode] not found"),
    ("text", setting(f"{P}.text.truncationMode", "MIDDLE"), "MIDDLE is not a valid enum value"),
    ("text", setting(f"{P}.text.source", s3(TEXT_URI)), "exactly one of [value, source]"),
    (
        "text",
        removing(f"{P}.text.value"),
        "exactly one of [value, source] must be present, found 0",
    ),
    ("text", setting(f"{P}.text.value", "x" * 8193), "expected maxLength: 8192, actual: 8193"),
    ("text", setting(f"{P}.text.value", ""), "expected minLength: 1, actual: 0"),
    ("text", setting(f"{P}.text.value", 42), "#/singleEmbeddingParams/text/value: expected type"),
    ("text", setting(f"{P}.text.segmentationConfig", {}), "extraneous key [segmentationConfig]"),
    ("image", removing(f"{P}.image.format"), "required key [format] not found"),
    ("image", setting(f"{P}.image.format", "bmp"), "#/singleEmbeddingParams/image/format: bmp is"),
    ("image", setting(f"{P}.image.format", "PNG"), "PNG is not a valid enum value"),
    ("image", removing(f"{P}.image.source"), "required key [source] not found"),
    ("image", setting(f"{P}.image.detailLevel", "HIGH"), "HIGH is not a valid enum value"),
    ("image", setting(f"{P}.image.embeddingMode", "X"), "extraneous key [embeddingMode]"),
    ("image", setting(f"{P}.image.source", {}), "exactly one of [bytes, s3Location]"),
    ("image", setting(f"{P}.image.source.s3Location", {"uri": PNG_URI}), "found 2"),
    ("image", setting(f"{P}.image.source.bytes", "not base64!"), "string is not valid base64"),
    ("image", setting(f"{P}.image.source.bytes", "abc"), "string is not valid base64"),
    ("image", setting(f"{P}.image.source.bytes", 7), "bytes: expected type: String"),
    ("image", setting(f"{P}.image.source.extra", 1), "extraneous key [extra] is not permitted"),
    ("audio", removing(f"{P}.audio.source.s3Location.uri"), "required key [uri] not found"),
    ("audio", setting(f"{P}.audio.source.s3Location.uri", "http://a/b"), "does not match pattern"),
    ("audio", setting(f"{P}.audio.source.s3Location.uri", "s3://media"), "does not match pattern"),
    ("audio", setting(f"{P}.audio.source.s3Location.bucketOwner", "123"), "bucketOwner: string"),
    ("audio", setting(f"{P}.audio.source.s3Location.region", "x"), "extraneous key [region]"),
    ("audio", setting(f"{P}.audio.source.s3Location", "s3://x/y"), "expected type: JSONObject"),
    ("audio", setting(f"{P}.audio.format", "flac"), "flac is not a valid enum value"),
    ("audio", setting(f"{P}.audio.embeddingMode", "X"), "extraneous key [embeddingMode]"),
    ("video", removing(f"{P}.video.embeddingMode"), "required key [embeddingMode] not found"),
    ("video", setting(f"{P}.video.embeddingMode", "BOTH"), "BOTH is not a valid enum value"),
    ("video", setting(f"{P}.video.format", "avi"), "avi is not a valid enum value"),
    ("video", setting(f"{P}.video.format", "three_gp"), "three_gp is not a valid enum value"),
    ("video", setting(P, {"embeddingPurpose": "GENERIC_INDEX", "video": 3}), "found: Integer"),
]


@pytest.mark.parametrize(
    ("modality", "mutation", "fragment"),
    [pytest.param(*case, id=f"{case[0]}:{case[2][:48]}") for case in SYNC_VIOLATIONS],
)
def test_sync_schema_violation(
    runtime: NovaRuntime, modality: str, mutation: Mutation, fragment: str
) -> None:
    body = sync_body(modality)
    mutation(body)
    message = validation_error(lambda: invoke(runtime, body))
    assert fragment in message
    if "not supported by" not in fragment:
        assert message.startswith("Malformed input request: #")
        assert message.endswith(", please reformat your input and try again.")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"{not json", "not valid JSON", id="not-json"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"[1, 2]", "#: expected type: JSONObject, found: JSONArray", id="array"),
        pytest.param(b'"text"', "found: String", id="string"),
        pytest.param(b'{"taskType": NaN}', "not valid JSON", id="nan"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", id="not-utf8"),
    ],
)
def test_body_that_is_no_json_object(runtime: NovaRuntime, body: bytes, fragment: str) -> None:
    message = validation_error(lambda: runtime.invoke_model(NOVA_MODEL_ID, body, None, None))
    assert fragment in message


def test_body_over_25_million_bytes_is_refused(runtime: NovaRuntime) -> None:
    body = b" " * 25_000_001
    message = validation_error(lambda: runtime.invoke_model(NOVA_MODEL_ID, body, None, None))
    assert "less than or equal to 25000000" in message


def test_inline_bytes_over_25_million_base64_characters_are_refused() -> None:
    body = sync_body("image")
    body[P]["image"]["source"]["bytes"] = "A" * 25_000_004
    with pytest.raises(ServiceError) as caught:
        schema.parse_request(body, schema.SINGLE_EMBEDDING)
    assert "expected maxLength: 25000000, actual: 25000004" in caught.value.message


S = "segmentedEmbeddingParams"
ASYNC_VIOLATIONS = [
    ("text", setting("taskType", "SINGLE_EMBEDDING"), "not supported by StartAsyncInvoke"),
    ("text", removing(S), "#: required key [segmentedEmbeddingParams] not found"),
    ("text", setting("singleEmbeddingParams", {}), "extraneous key [singleEmbeddingParams]"),
    ("text", removing(f"{S}.embeddingPurpose"), f"#/{S}: required key [embeddingPurpose]"),
    ("text", removing(f"{S}.text.segmentationConfig"), "required key [segmentationConfig]"),
    ("text", setting(f"{S}.text.segmentationConfig", 5), "expected type: JSONObject"),
    ("text", setting(f"{S}.text.segmentationConfig.maxLengthChars", 799), "799 is not greater"),
    ("text", setting(f"{S}.text.segmentationConfig.maxLengthChars", 50_001), "not less or equal"),
    ("text", setting(f"{S}.text.segmentationConfig.durationSeconds", 5), "[durationSeconds]"),
    ("text", setting(f"{S}.text.source", {"bytes": "aGk="}), "extraneous key [bytes]"),
    ("image", setting(f"{S}.image.source", {"bytes": "aGk="}), "only from s3Location"),
    ("image", setting(f"{S}.image.segmentationConfig", {}), "extraneous key [segmentationConfig]"),
    ("audio", removing(f"{S}.audio.segmentationConfig"), "required key [segmentationConfig]"),
    ("audio", setting(f"{S}.audio.segmentationConfig.durationSeconds", 0), "0 is not greater"),
    ("audio", setting(f"{S}.audio.segmentationConfig.durationSeconds", 31), "31 is not less"),
    ("audio", setting(f"{S}.audio.segmentationConfig.durationSeconds", 2.5), "found: Number"),
    ("audio", setting(f"{S}.audio.segmentationConfig.maxLengthChars", 900), "[maxLengthChars]"),
    ("audio", setting(f"{S}.audio.source", {"bytes": "aGk="}), "only from s3Location"),
    ("video", removing(f"{S}.video.segmentationConfig"), "required key [segmentationConfig]"),
    ("video", removing(f"{S}.video.embeddingMode"), "required key [embeddingMode]"),
    ("video", setting(f"{S}.video.source", {"bytes": "aGk="}), "only from s3Location"),
]


@pytest.mark.parametrize(
    ("modality", "mutation", "fragment"),
    [pytest.param(*case, id=f"{case[0]}:{case[2][:48]}") for case in ASYNC_VIOLATIONS],
)
def test_async_schema_violation(
    runtime: NovaRuntime, modality: str, mutation: Mutation, fragment: str
) -> None:
    model_input = async_body(modality)
    mutation(model_input)
    message = validation_error(lambda: runtime.start_async_invoke(envelope(model_input)))
    assert fragment in message
    assert runtime.list_async_invokes({})["asyncInvokeSummaries"] == []


def test_async_text_value_is_accepted_inline(runtime: NovaRuntime) -> None:
    model_input = async_body("text")
    model_input[S]["text"] = {"truncationMode": "END", "value": "hi", "segmentationConfig": {}}
    assert runtime.start_async_invoke(envelope(model_input))["invocationArn"]


ENVELOPE_VIOLATIONS = [
    (removing("modelId"), "Value null at 'modelId' failed to satisfy constraint: Member must not"),
    (setting("modelId", "amazon nova"), "at 'modelId' failed to satisfy constraint: Member must"),
    (setting("modelId", "a" * 257), "Member must have length less than or equal to 256"),
    (
        setting("modelId", "amazon.titan-embed-text-v2:0"),
        "The provided model identifier is invalid",
    ),
    (removing("modelInput"), "Value null at 'modelInput'"),
    (setting("clientRequestToken", ""), "Member must have length greater than or equal to 1"),
    (setting("clientRequestToken", "t" * 257), "Member must have length less than or equal to 256"),
    (setting("clientRequestToken", "with space"), "regular expression pattern: [!-~]*"),
    (removing("outputDataConfig"), "Value null at 'outputDataConfig'"),
    (setting("outputDataConfig", {"s3": {}}), "exactly one union member"),
    (
        setting("outputDataConfig.s3OutputDataConfig", {}),
        "outputDataConfig.s3OutputDataConfig.s3Uri",
    ),
    (setting("outputDataConfig.s3OutputDataConfig.s3Uri", "https://x/y"), "regular expression"),
    (setting("outputDataConfig.s3OutputDataConfig.s3Uri", "s3://A_B/c"), "regular expression"),
    (setting("outputDataConfig.s3OutputDataConfig.s3Uri", "s3://b" + "c" * 1024), "1024"),
    (setting("outputDataConfig.s3OutputDataConfig.kmsKeyId", "my-key"), "kmsKeyId"),
    (setting("outputDataConfig.s3OutputDataConfig.bucketOwner", "12345"), "bucketOwner"),
    (setting("tags", [{"key": "k", "value": "v"}] * 201), "less than or equal to 200"),
    (setting("tags", [{"key": "", "value": "v"}]), "tags.1.member.key"),
    (setting("tags", [{"key": "k" * 129, "value": "v"}]), "less than or equal to 128"),
    (setting("tags", [{"key": "k", "value": "v" * 257}]), "less than or equal to 256"),
    (setting("tags", [{"key": "k!", "value": "v"}]), "regular expression pattern"),
    (setting("tags", [{"key": "k"}]), "Value null at 'tags.1.member.value'"),
    (setting("tags", {"k": "v"}), "Member must be a list"),
]


@pytest.mark.parametrize(
    ("mutation", "fragment"),
    [pytest.param(*case, id=case[1][:56]) for case in ENVELOPE_VIOLATIONS],
)
def test_start_async_invoke_envelope_violation(
    runtime: NovaRuntime, mutation: Mutation, fragment: str
) -> None:
    body = envelope(async_body("text"))
    mutation(body)
    assert fragment in validation_error(lambda: runtime.start_async_invoke(body))


def test_envelope_violations_are_reported_together(runtime: NovaRuntime) -> None:
    body = envelope(async_body("text"), clientRequestToken="a b", modelId=None)
    message = validation_error(lambda: runtime.start_async_invoke(body))
    assert message.startswith("2 validation errors detected: ")
    assert "'clientRequestToken'" in message
    assert "'modelId'" in message


def test_valid_envelope_extras_are_accepted(runtime: NovaRuntime) -> None:
    body = envelope(
        async_body("image"),
        tags=[{"key": "project", "value": "novaflow"}, {"key": "empty", "value": ""}],
    )
    body["outputDataConfig"]["s3OutputDataConfig"].update(
        kmsKeyId="arn:aws:kms:us-east-1:123456789012:alias/novaflow", bucketOwner="123456789012"
    )
    arn = runtime.start_async_invoke(body)["invocationArn"]
    config = runtime.get_async_invoke(arn)["outputDataConfig"]["s3OutputDataConfig"]
    assert config["kmsKeyId"] == "arn:aws:kms:us-east-1:123456789012:alias/novaflow"
    assert config["bucketOwner"] == "123456789012"


@pytest.mark.parametrize(
    "model_id",
    [
        NOVA_MODEL_ID,
        f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA_MODEL_ID}",
    ],
)
def test_model_id_and_its_arn_are_accepted(runtime: NovaRuntime, model_id: str) -> None:
    body = json.dumps(sync_body("text")).encode()
    assert runtime.invoke_model(model_id, body, None, None)["embeddings"]


@pytest.mark.parametrize(
    "model_id",
    [
        "amazon.titan-embed-text-v2:0",
        "amazon.nova-2-multimodal-embeddings-v1",
        f"us.{NOVA_MODEL_ID}",
        f"arn:aws:bedrock:eu-west-1::foundation-model/{NOVA_MODEL_ID}",
        "",
    ],
)
def test_other_model_ids_are_invalid(runtime: NovaRuntime, model_id: str) -> None:
    body = json.dumps(sync_body("text")).encode()
    message = validation_error(lambda: runtime.invoke_model(model_id, body, None, None))
    assert message == "The provided model identifier is invalid."


@pytest.mark.parametrize(
    ("content_type", "accept", "fragment"),
    [
        ("text/plain", None, "Content-Type text/plain is not supported"),
        ("application/x-www-form-urlencoded", None, "Content-Type"),
        (None, "text/html", "Accept type text/html is not supported"),
        ("application/json", "image/png, text/html", "Accept type"),
    ],
)
def test_unsupported_media_types_are_refused(
    runtime: NovaRuntime, content_type: str | None, accept: str | None, fragment: str
) -> None:
    body = json.dumps(sync_body("text")).encode()
    call = lambda: runtime.invoke_model(NOVA_MODEL_ID, body, content_type, accept)  # noqa: E731
    assert fragment in validation_error(call)


@pytest.mark.parametrize(
    ("content_type", "accept"),
    [
        (None, None),
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "*/*"),
        ("Application/JSON", "text/html, application/*;q=0.5"),
    ],
)
def test_json_media_types_are_accepted(
    runtime: NovaRuntime, content_type: str | None, accept: str | None
) -> None:
    body = json.dumps(sync_body("text")).encode()
    assert runtime.invoke_model(NOVA_MODEL_ID, body, content_type, accept)["embeddings"]


def test_schema_enumerations_agree_with_the_content_modules() -> None:
    assert schema.EMBEDDING_DIMENSIONS == vectors.DIMENSIONS
    assert schema.DEFAULT_EMBEDDING_DIMENSION == vectors.FULL_DIMENSION
    assert schema.IMAGE_FORMATS == media.IMAGE_FORMATS
    assert schema.TRUNCATION_MODES == vectors.TRUNCATION_MODES
    assert schema.DETAIL_LEVELS == vectors.DETAIL_LEVELS


def test_parsed_request_carries_defaults() -> None:
    request = schema.parse_request(sync_body("image"), schema.SINGLE_EMBEDDING)
    assert request.embedding_dimension == 3072
    assert isinstance(request.content, schema.ImageInput)
    assert request.content.detail_level == "STANDARD_IMAGE"
    assert request.content.source == schema.InlineSource(PNG)
    segmented = schema.parse_request(async_body("text"), schema.SEGMENTED_EMBEDDING)
    assert isinstance(segmented.content, schema.TextInput)
    assert segmented.content.segment_chars == 32_000
    audio = schema.parse_request(async_body("audio"), schema.SEGMENTED_EMBEDDING)
    assert isinstance(audio.content, schema.AudioInput)
    assert audio.content.segment_seconds == 5
