"""Async Nova jobs: limits refused before any call, exact request bodies, and results read
without losing a segment."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tasks.jobs.results import (
    JobResult,
    ResultFile,
    ResultFormatError,
    Segment,
    SegmentFailure,
    job_folder,
    parsed_job_result,
    parsed_segment_lines,
    result_file_names,
    segment_key,
)
from tasks.nova.segmented import (
    ASYNC_MAX_BYTES,
    ASYNC_MAX_SECONDS,
    MAX_MEDIA_SEGMENTS,
    MAX_TEXT_SEGMENTS,
    AsyncInputError,
    checked_async_input,
    client_request_token,
    start_async_invoke_arguments,
)
from tasks.settings import NOVA_MODEL_ID, EmbeddingSettings

DIM = 256
SETTINGS = EmbeddingSettings(dimension=DIM, segment_seconds=5, async_text_segment_chars=32_000)
ARN = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/abc123def456"
TOKEN = "nf-" + "0" * 48 + "-a1"


def vector(seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32).tolist()


def line(**fields: object) -> str:
    return json.dumps(fields)


def refusal(**kwargs: object) -> AsyncInputError:
    with pytest.raises(AsyncInputError) as caught:
        checked_async_input(**kwargs)  # type: ignore[arg-type]
    return caught.value


# --- limits -------------------------------------------------------------------------------


def test_two_hour_file_at_5_s_segments_is_refused_naming_the_setting_that_fits() -> None:
    err = refusal(kind="video", size_bytes=10**9, settings=SETTINGS, duration_seconds=7200.0)
    assert err.code == "too_many_segments"
    assert "a 7,200 s video file at 5 s segments makes 1,440 segments" in str(err)
    assert "Nova allows 1,434" in str(err)
    assert "segment_seconds (NOVAFLOW_EMBEDDING__SEGMENT_SECONDS) to 6 or more" in str(err)
    six = SETTINGS.model_copy(update={"segment_seconds": 6})
    assert checked_async_input("video", 10**9, six, duration_seconds=7200.0) == 1_200


def test_exactly_the_segment_cap_fits_and_half_a_second_more_does_not() -> None:
    at_cap = checked_async_input("audio", 1_000, SETTINGS, duration_seconds=7170.0)
    assert at_cap == MAX_MEDIA_SEGMENTS
    over = refusal(kind="audio", size_bytes=1_000, settings=SETTINGS, duration_seconds=7170.5)
    assert over.code == "too_many_segments"
    assert "1,435 segments" in str(over)


def test_segment_count_rounds_up_a_partial_last_segment() -> None:
    assert checked_async_input("audio", 1_000, SETTINGS, duration_seconds=31.0) == 7
    assert checked_async_input("audio", 1_000, SETTINGS, duration_seconds=0.2) == 1


def test_media_over_two_hours_is_refused_whatever_the_segment_length() -> None:
    thirty = SETTINGS.model_copy(update={"segment_seconds": 30})
    assert checked_async_input("video", 1_000, thirty, duration_seconds=ASYNC_MAX_SECONDS) == 240
    err = refusal(kind="video", size_bytes=1_000, settings=thirty, duration_seconds=7200.5)
    assert err.code == "too_long_for_async"
    assert "2 hours" in str(err)


@pytest.mark.parametrize("kind", ["text", "audio", "video"])
def test_sizes_up_to_the_async_limit_pass_and_one_byte_more_is_refused(kind: str) -> None:
    limit = ASYNC_MAX_BYTES[kind]
    length = {"char_count": 1_000} if kind == "text" else {"duration_seconds": 60.0}
    assert checked_async_input(kind, limit, SETTINGS, **length) >= 1  # type: ignore[arg-type]
    err = refusal(kind=kind, size_bytes=limit + 1, settings=SETTINGS, **length)
    assert err.code == "too_large_for_async"
    assert f"{limit + 1:,} bytes" in str(err)


def test_text_segment_cap_names_the_smallest_segment_length_that_fits() -> None:
    at_cap = MAX_TEXT_SEGMENTS * 32_000
    assert checked_async_input("text", at_cap, SETTINGS, char_count=at_cap) == MAX_TEXT_SEGMENTS
    err = refusal(kind="text", size_bytes=at_cap + 1, settings=SETTINGS, char_count=at_cap + 1)
    assert err.code == "too_many_segments"
    assert "1,901 segments; Nova allows 1,900" in str(err)
    assert "(NOVAFLOW_EMBEDDING__ASYNC_TEXT_SEGMENT_CHARS) to 32,001 or more" in str(err)
    fits = SETTINGS.model_copy(update={"async_text_segment_chars": 32_001})
    assert checked_async_input("text", at_cap + 1, fits, char_count=at_cap + 1) == 1_900


def test_text_too_long_for_any_segment_length_is_told_to_split() -> None:
    chars = MAX_TEXT_SEGMENTS * 50_000 + 1
    err = refusal(kind="text", size_bytes=chars, settings=SETTINGS, char_count=chars)
    assert err.code == "too_many_segments"
    assert "split it; even async_text_segment_chars=50,000 makes 1,901 segments" in str(err)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "audio", "size_bytes": 100, "duration_seconds": 0.0},
        {"kind": "video", "size_bytes": 0, "duration_seconds": 10.0},
        {"kind": "text", "size_bytes": 100, "char_count": 0},
    ],
)
def test_empty_inputs_are_refused(kwargs: dict) -> None:
    assert refusal(settings=SETTINGS, **kwargs).code == "media_empty"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "audio", "size_bytes": 100},
        {"kind": "text", "size_bytes": 100, "duration_seconds": 10.0},
        {"kind": "video", "size_bytes": 100, "duration_seconds": float("nan")},
        {"kind": "image", "size_bytes": 100, "duration_seconds": 1.0},
    ],
)
def test_a_missing_length_or_unknown_kind_is_a_programming_error(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="async") as caught:
        checked_async_input(settings=SETTINGS, **kwargs)
    assert not isinstance(caught.value, AsyncInputError)


# --- idempotency tokens ---------------------------------------------------------------------

PARTS = ("run-1", "talk#t=0.0-7200.0", "etag:abc:10", "0123456789abcdef")


def test_token_is_deterministic_and_matches_the_api_pattern() -> None:
    token = client_request_token(*PARTS, attempt=1)
    assert token == client_request_token(*PARTS, attempt=1)
    assert re.fullmatch(r"nf-[0-9a-f]{48}-a1", token)
    assert re.fullmatch(r"[!-~]{1,256}", token)


def test_any_changed_part_or_attempt_gives_another_token() -> None:
    tokens = {client_request_token(*PARTS, attempt=1), client_request_token(*PARTS, attempt=2)}
    for position in range(len(PARTS)):
        changed = list(PARTS)
        changed[position] += "x"
        tokens.add(client_request_token(*changed, attempt=1))
    assert len(tokens) == 2 + len(PARTS)
    assert client_request_token(*PARTS, attempt=2).endswith("-a2")


def test_token_parts_cannot_bleed_into_each_other() -> None:
    assert client_request_token("a", "b|c", "f", "h", 1) != client_request_token(
        "a|b", "c", "f", "h", 1
    )


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        client_request_token(*PARTS, attempt=0)


# --- StartAsyncInvoke arguments -------------------------------------------------------------


def arguments(kind: str, media_format: str | None, settings: EmbeddingSettings = SETTINGS) -> dict:
    return start_async_invoke_arguments(
        kind,  # type: ignore[arg-type]
        "s3://media/in/file",
        media_format,
        "s3://novaflow-async/output",
        TOKEN,
        settings,
    )


def test_text_job_arguments_match_the_documented_request() -> None:
    assert arguments("text", None) == {
        "clientRequestToken": TOKEN,
        "modelId": NOVA_MODEL_ID,
        "modelInput": {
            "schemaVersion": "nova-multimodal-embed-v1",
            "taskType": "SEGMENTED_EMBEDDING",
            "segmentedEmbeddingParams": {
                "embeddingPurpose": "GENERIC_INDEX",
                "embeddingDimension": DIM,
                "text": {
                    "truncationMode": "END",
                    "source": {"s3Location": {"uri": "s3://media/in/file"}},
                    "segmentationConfig": {"maxLengthChars": 32_000},
                },
            },
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://novaflow-async/output"}},
    }


def test_audio_job_carries_format_and_segment_duration_only() -> None:
    params = arguments("audio", ".MP3")["modelInput"]["segmentedEmbeddingParams"]
    assert params == {
        "embeddingPurpose": "GENERIC_INDEX",
        "embeddingDimension": DIM,
        "audio": {
            "format": "mp3",
            "source": {"s3Location": {"uri": "s3://media/in/file"}},
            "segmentationConfig": {"durationSeconds": 5},
        },
    }


@pytest.mark.parametrize("mode", ["AUDIO_VIDEO_COMBINED", "AUDIO_VIDEO_SEPARATE"])
def test_video_job_carries_the_settings_embedding_mode(mode: str) -> None:
    settings = SETTINGS.model_copy(update={"video_embedding_mode": mode, "dimension": 3072})
    body = arguments("video", "mp4", settings)
    assert json.loads(json.dumps(body)) == body
    assert body["modelInput"]["segmentedEmbeddingParams"] == {
        "embeddingPurpose": "GENERIC_INDEX",
        "embeddingDimension": 3072,
        "video": {
            "format": "mp4",
            "source": {"s3Location": {"uri": "s3://media/in/file"}},
            "embeddingMode": mode,
            "segmentationConfig": {"durationSeconds": 5},
        },
    }


@pytest.mark.parametrize(
    ("kind", "media_format", "code"),
    [
        ("audio", "flac", "format_not_accepted"),
        ("video", "avi", "format_not_accepted"),
        ("video", "mp3", "format_not_accepted"),
        ("text", "txt", "format_not_accepted"),
        ("audio", None, "format_missing"),
    ],
)
def test_formats_nova_does_not_take_are_refused(
    kind: str, media_format: str | None, code: str
) -> None:
    with pytest.raises(AsyncInputError) as caught:
        arguments(kind, media_format)
    assert caught.value.code == code


def test_every_documented_media_format_is_accepted() -> None:
    for media_format in ("mp3", "wav", "ogg"):
        assert arguments("audio", media_format)["modelInput"]
    for media_format in ("mp4", "mov", "mkv", "webm", "flv", "mpeg", "mpg", "wmv", "3gp"):
        assert arguments("video", media_format.upper())["modelInput"]


@pytest.mark.parametrize(
    ("input_uri", "output_uri"),
    [
        ("s3://media", "s3://out/prefix"),
        ("s3://media/", "s3://out/prefix"),
        ("https://media/a.mp4", "s3://out/prefix"),
        ("s3://Media/a.mp4", "s3://out/prefix"),
        ("s3://media/a.mp4\n", "s3://out/prefix"),
        ("s3://media/a.mp4", "s3:/out"),
        ("s3://media/a.mp4", "s3://Out/prefix"),
    ],
)
def test_malformed_s3_uris_are_refused(input_uri: str, output_uri: str) -> None:
    with pytest.raises(AsyncInputError) as caught:
        start_async_invoke_arguments("video", input_uri, "mp4", output_uri, TOKEN, SETTINGS)
    assert caught.value.code == "s3_uri_malformed"


def test_output_may_be_a_bare_bucket_or_a_prefix() -> None:
    for output in ("s3://out", "s3://out/jobs/2026/"):
        body = start_async_invoke_arguments(
            "audio", "s3://media/a.wav", "wav", output, TOKEN, SETTINGS
        )
        assert body["outputDataConfig"] == {"s3OutputDataConfig": {"s3Uri": output}}


@pytest.mark.parametrize("token", ["", "has space", "x" * 257, "é", TOKEN + "\n"])
def test_tokens_outside_the_api_pattern_are_a_programming_error(token: str) -> None:
    with pytest.raises(ValueError, match="clientRequestToken"):
        start_async_invoke_arguments(
            "audio", "s3://media/a.wav", "wav", "s3://out", token, SETTINGS
        )


# --- the result index -----------------------------------------------------------------------


def test_result_index_lists_each_embedding_type_and_its_file() -> None:
    document = {
        "sourceFileUri": "s3://media/in/talk.mp4",
        "embeddingDimension": DIM,
        "embeddingResults": [
            {
                "embeddingType": "VIDEO",
                "status": "SUCCESS",
                "outputFileUri": "s3://out/abc123def456/embedding-video.jsonl",
            },
            {
                "embeddingType": "AUDIO",
                "status": "PARTIAL_SUCCESS",
                "failureReason": "INTERNAL_SERVER_EXCEPTION",
                "message": "2 of 10 segments failed",
                "outputFileUri": "s3://out/abc123def456/embedding-audio.jsonl",
            },
        ],
    }
    assert parsed_job_result(json.dumps(document).encode()) == JobResult(
        source_uri="s3://media/in/talk.mp4",
        dimension=DIM,
        files=(
            ResultFile("VIDEO", "SUCCESS", "s3://out/abc123def456/embedding-video.jsonl"),
            ResultFile(
                "AUDIO",
                "PARTIAL_SUCCESS",
                "s3://out/abc123def456/embedding-audio.jsonl",
                "INTERNAL_SERVER_EXCEPTION",
                "2 of 10 segments failed",
            ),
        ),
    )


def test_failed_spelling_is_read_as_failure_and_may_name_no_file() -> None:
    result = parsed_job_result(
        '{"embeddingDimension": 256, "embeddingResults": [{"embeddingType": "TEXT",'
        ' "status": "FAILED", "failureReason": "RAI_VIOLATION_INPUT_TEXT_DEFLECTION"}]}'
    )
    assert result.source_uri is None
    assert result.files == (
        ResultFile("TEXT", "FAILURE", None, "RAI_VIOLATION_INPUT_TEXT_DEFLECTION"),
    )


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"embeddingDimension": 256}',
        '{"embeddingDimension": 256, "embeddingResults": []}',
        '{"embeddingResults": [{"embeddingType": "TEXT", "status": "SUCCESS",'
        ' "outputFileUri": "s3://o/f"}]}',
        '{"embeddingDimension": 256, "embeddingResults": ["TEXT"]}',
        '{"embeddingDimension": 256, "embeddingResults": [{"embeddingType": "SMELL",'
        ' "status": "SUCCESS", "outputFileUri": "s3://o/f"}]}',
        '{"embeddingDimension": 256, "embeddingResults": [{"embeddingType": "TEXT",'
        ' "status": "DONE", "outputFileUri": "s3://o/f"}]}',
        '{"embeddingDimension": 256, "embeddingResults": [{"embeddingType": "TEXT",'
        ' "status": "PARTIAL_SUCCESS"}]}',
    ],
)
def test_a_malformed_result_index_is_refused(document: str) -> None:
    with pytest.raises(ResultFormatError) as caught:
        parsed_job_result(document)
    assert caught.value.code == "malformed_result"


# --- segment lines --------------------------------------------------------------------------


def test_media_lines_become_read_only_float32_segments_with_times() -> None:
    lines = [
        line(
            embedding=vector(seed),
            segmentMetadata={
                "segmentIndex": seed,
                "segmentStartSeconds": 5.0 * seed,
                "segmentEndSeconds": 5.0 * seed + 5,
            },
            status="SUCCESS",
        )
        for seed in range(3)
    ]
    segments = list(parsed_segment_lines(lines, "AUDIO_VIDEO_COMBINED", DIM))
    assert [s.index for s in segments] == [0, 1, 2]
    first = segments[0]
    assert isinstance(first, Segment)
    assert (first.embedding_type, first.start_seconds, first.end_seconds) == (
        "AUDIO_VIDEO_COMBINED",
        0.0,
        5.0,
    )
    assert first.vector.dtype == np.float32
    assert np.array_equal(first.vector, np.asarray(vector(0), dtype=np.float32))
    with pytest.raises(ValueError, match="read-only"):
        first.vector[0] = 1.0


def test_text_lines_keep_their_character_positions() -> None:
    text = line(
        embedding=vector(7),
        segmentMetadata={
            "segmentIndex": 1,
            "segmentStartCharPosition": 794,
            "segmentEndCharPosition": 1600,
            "truncatedCharLength": 0,
        },
        status="SUCCESS",
    ).encode()
    (segment,) = parsed_segment_lines([text], "TEXT", DIM)
    assert isinstance(segment, Segment)
    assert (segment.index, segment.char_start, segment.char_end) == (1, 794, 1600)
    assert segment.start_seconds is None


def test_failure_lines_keep_the_service_reason_and_position() -> None:
    failed = line(
        segmentMetadata={"segmentIndex": 4, "segmentStartSeconds": 20, "segmentEndSeconds": 25},
        status="FAILURE",
        failureReason="RATE_LIMIT_EXCEEDED",
        message="try later",
    )
    bare = line(segmentMetadata={"segmentIndex": 5}, status="FAILED")
    first, second = parsed_segment_lines([failed, bare], "AUDIO", DIM)
    assert first == SegmentFailure(4, "AUDIO", "RATE_LIMIT_EXCEEDED", "try later", 20.0, 25.0)
    assert isinstance(second, SegmentFailure)
    assert (second.index, second.reason) == (5, "FAILURE")
    assert "line 2" in second.message


@pytest.mark.parametrize(
    ("bad_line", "says"),
    [
        ("{not json", "not JSON"),
        ('"a string"', "not a JSON object"),
        (line(segmentMetadata={"segmentIndex": 0}, status="SUCCESS"), "no embedding"),
        (line(embedding=vector(1)[:-1], segmentMetadata={"segmentIndex": 0}), "255 values"),
        (line(embedding=[float("nan"), *vector(1)[1:]]), "NaN"),
        (line(embedding=[1e39, *vector(1)[1:]]), "infinite"),
        ('{"embedding": [1' + "0" * 400 + "]}", "1 values"),
        ('{"embedding": [1' + "0" * 400 + ", 0" * (DIM - 1) + "]}", "infinite"),
        (line(embedding=["0.5", *vector(1)[1:]]), "non-numbers"),
        (line(embedding=[True, *vector(1)[1:]]), "non-numbers"),
        (line(embedding=vector(1), segmentMetadata={"segmentIndex": "0"}), "segmentIndex"),
        (line(embedding=vector(1), segmentMetadata=[0, 5]), "segmentMetadata"),
        (line(embedding=vector(1), segmentMetadata={"segmentEndSeconds": 1e999}), "is inf"),
        (line(embedding=vector(1), status="MAYBE"), "unknown status"),
    ],
)
def test_a_malformed_line_becomes_a_failure_naming_its_line_number(
    bad_line: str, says: str
) -> None:
    good = line(embedding=vector(0), segmentMetadata={"segmentIndex": 0})
    parsed = list(parsed_segment_lines([good, "", bad_line, good], "VIDEO", DIM))
    assert len(parsed) == 3
    assert isinstance(parsed[0], Segment)
    assert isinstance(parsed[2], Segment)
    failure = parsed[1]
    assert isinstance(failure, SegmentFailure)
    assert failure.reason == "malformed_output"
    assert "line 3" in failure.message
    assert says in failure.message


def test_blank_lines_are_skipped_and_a_lines_own_type_wins() -> None:
    separate = [
        line(embedding=vector(1), embeddingType="VIDEO", segmentMetadata={"segmentIndex": 0}),
        "   \n",
        b"\n",
        line(embedding=vector(2), embeddingType="AUDIO", segmentMetadata={"segmentIndex": 0}),
    ]
    parsed = list(parsed_segment_lines(separate, "AUDIO_VIDEO_COMBINED", DIM))
    assert [segment.embedding_type for segment in parsed] == ["VIDEO", "AUDIO"]


def test_lines_of_another_dimension_are_not_loaded() -> None:
    (failure,) = parsed_segment_lines([line(embedding=vector(0))], "TEXT", 1024)
    assert isinstance(failure, SegmentFailure)
    assert "256 values; 1024 were asked for" in failure.message


# --- file names, folders and keys -----------------------------------------------------------


def test_result_file_names_prefer_the_blogs_names_and_keep_the_documented_ones() -> None:
    assert result_file_names("AUDIO_VIDEO_COMBINED") == (
        "embedding-audio-video.jsonl",
        "embedding-video.jsonl",
    )
    assert result_file_names("IMAGE") == ("embedding-image.jsonl", "embedding-image.json")
    assert result_file_names("TEXT") == ("embedding-text.jsonl",)
    with pytest.raises(ValueError, match="unknown embedding type"):
        result_file_names("SMELL")


@pytest.mark.parametrize(
    ("reported", "folder"),
    [
        ("s3://out/jobs/abc123def456", "s3://out/jobs/abc123def456"),
        ("s3://out/jobs/abc123def456/", "s3://out/jobs/abc123def456"),
        ("s3://out/jobs", "s3://out/jobs/abc123def456"),
        ("s3://out/jobs/", "s3://out/jobs/abc123def456"),
        ("s3://out", "s3://out/abc123def456"),
    ],
)
def test_job_folder_appends_the_job_id_only_when_missing(reported: str, folder: str) -> None:
    assert job_folder(reported, ARN) == folder


def test_job_folder_refuses_an_arn_without_a_job_id() -> None:
    with pytest.raises(ValueError, match="ARN"):
        job_folder("s3://out", "arn:aws:bedrock:us-east-1:123456789012:async-invoke/")


def media(embedding_type: str, index: int | None = 3) -> Segment:
    return Segment(index, embedding_type, np.zeros(DIM, np.float32), 15.0, 30.0)


def test_media_keys_are_time_spans_with_a_suffix_only_when_separate() -> None:
    assert segment_key("talk", media("AUDIO_VIDEO_COMBINED"), separate=False) == "talk#t=15.0-30.0"
    assert segment_key("talk", media("VIDEO"), separate=True) == "talk#t=15.0-30.0#video"
    assert segment_key("talk", media("AUDIO"), separate=True) == "talk#t=15.0-30.0#audio"
    assert segment_key("song", media("AUDIO"), separate=False) == "song#t=15.0-30.0"


def test_text_keys_are_chunks_and_failures_share_their_segments_key() -> None:
    text = Segment(2, "TEXT", np.zeros(DIM, np.float32), char_start=64_000, char_end=96_000)
    assert segment_key("notes", text, separate=False) == "notes#chunk=2"
    failure = SegmentFailure(4, "VIDEO", "INVALID_CONTENT", "bad frame", 15.0, 30.0)
    assert segment_key("talk", failure, separate=True) == "talk#t=15.0-30.0#video"


def test_a_segment_without_times_or_index_has_no_key() -> None:
    unknown = SegmentFailure(None, "VIDEO", "malformed_output", "line 1 of the VIDEO output")
    assert segment_key("talk", unknown, separate=False) is None
