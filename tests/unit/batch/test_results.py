"""A batch job's output lines read back: a result is matched to its unit by recordId alone, a
refused record carries the error InvokeModel would have answered, and a line novaflow cannot
match is refused rather than guessed at."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from tasks.batch.inputs import record_id
from tasks.batch.results import OutputLineError, record_result
from tasks.nova.requests import ResponseFormatError

DIMENSION = 8


def _vector(seed: int) -> list[float]:
    return [round(float(v), 6) for v in np.random.default_rng(seed).uniform(-1, 1, DIMENSION)]


def _line(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document) + b"\n"


def _success(identifier: str, *embeddings: tuple[str, list[float]]) -> bytes:
    return _line(
        {
            "recordId": identifier,
            "modelInput": {"schemaVersion": "nova-multimodal-embed-v1"},
            "modelOutput": {
                "embeddings": [{"embeddingType": kind, "embedding": v} for kind, v in embeddings]
            },
        }
    )


def _error(identifier: str, error: dict[str, Any]) -> bytes:
    return _line({"recordId": identifier, "modelInput": {}, "error": error})


def test_a_result_names_the_shard_and_position_its_record_id_was_written_for() -> None:
    draw = random.Random(5)
    for _ in range(50):
        shard, position = draw.randint(1, 9_999_999), draw.randint(0, 99_999)
        vector = _vector(shard)

        result = record_result(_success(record_id(shard, position), ("TEXT", vector)), DIMENSION)

        assert (result.shard, result.position, result.code) == (shard, position, "")
        [(kind, values)] = result.vectors
        assert kind == "TEXT"
        np.testing.assert_array_equal(values, np.asarray(vector, dtype=np.float32))


def test_every_vector_of_a_separate_audio_video_answer_is_kept_in_order() -> None:
    video, audio = _vector(1), _vector(2)

    result = record_result(_success("s0000003u00001", ("VIDEO", video), ("AUDIO", audio)), 8)

    assert [kind for kind, _ in result.vectors] == ["VIDEO", "AUDIO"]
    np.testing.assert_array_equal(result.vectors[1][1], np.asarray(audio, dtype=np.float32))


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_a_refused_record_carries_the_error_invoke_model_answers_with_that_status(
    status: int, code: str
) -> None:
    message = f"The model refused the input (HTTP {status})."

    result = record_result(
        _error("s0000002u00004", {"errorCode": status, "errorMessage": message}), DIMENSION
    )

    assert (result.shard, result.position) == (2, 4)
    assert (result.code, result.message, result.vectors) == (code, message, ())


def test_a_status_novaflow_does_not_know_is_kept_in_the_code() -> None:
    result = record_result(
        _error("s0000001u00000", {"errorCode": 418, "errorMessage": "teapot"}), DIMENSION
    )

    assert (result.code, result.message) == ("batch_error_418", "teapot")


def test_a_refused_record_without_a_message_still_says_where_it_failed() -> None:
    result = record_result(_error("s0000001u00000", {"errorCode": 400}), DIMENSION)

    assert result.code == "ValidationException"
    assert result.message == "the batch job gave no message"


@pytest.mark.parametrize(
    ("model_output", "why"),
    [
        (None, "no 'embeddings' list"),
        ({"embeddings": []}, "no 'embeddings' list"),
        ({"embeddings": [{"embeddingType": "TEXT", "embedding": [0.5] * 3}]}, "3 values"),
        ({"embeddings": [{"embeddingType": "SMELL", "embedding": [0.5] * 8}]}, "lacks"),
        ({"embeddings": [{"embeddingType": "TEXT", "embedding": ["a"] * 8}]}, "non-numbers"),
    ],
)
def test_a_malformed_model_output_is_refused_with_the_invoke_model_path_s_code(
    model_output: Any, why: str
) -> None:
    line = _line({"recordId": "s0000007u00002", "modelInput": {}, "modelOutput": model_output})

    result = record_result(line, DIMENSION)

    assert (result.shard, result.position, result.vectors) == (7, 2, ())
    assert result.code == ResponseFormatError.code == "malformed_response"
    assert result.message.startswith("batch output: ")
    assert why in result.message


@pytest.mark.parametrize(
    "line",
    [
        b"not json at all\n",
        b'{"recordId": "s0000001u00000", "modelOutput": \n',
        b'["s0000001u00000"]\n',
        _line({"modelInput": {}, "modelOutput": {}}),
        _line({"recordId": 7, "modelOutput": {}}),
        _line({"recordId": "record-1", "modelOutput": {}}),
        _line({"recordId": "s12u7", "modelOutput": {}}),
        _line({"recordId": "S0000001U00000", "modelOutput": {}}),
        _line({"recordId": "s0000001u00000x", "modelOutput": {}}),
    ],
)
def test_a_line_novaflow_cannot_match_to_a_unit_is_refused(line: bytes) -> None:
    with pytest.raises(OutputLineError):
        record_result(line, DIMENSION)
