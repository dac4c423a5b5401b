"""The Nova embedder against the stand-in: every modality, quarantine, throttling, 5xx, bounds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from emulator.app import Emulator
from emulator.misbehaviour import Misbehaviour
from tasks.aws_clients import bedrock_runtime_client
from tasks.demo.sample_media import garbage, sample_audio, sample_image, sample_video
from tasks.embed.embedder import EmbeddedUnit, Embedder
from tasks.nova.requests import Payload
from tasks.pacing import Pacer
from tasks.records import Failure
from tasks.settings import EmbeddingSettings, ThroughputSettings

DIMENSION = 256
SETTINGS = EmbeddingSettings(dimension=DIMENSION)
FAST = ThroughputSettings(concurrency=8, requests_per_second=1000)

Work = tuple[str, str, Callable[[], Payload]]


@pytest.fixture
def client(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> BaseClient:
    """A client built the production way: from the environment the stand-in publishes."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    return bedrock_runtime_client(max_connections=16, read_timeout_s=30)


def texts(count: int, prefix: str = "doc") -> list[Work]:
    return [
        (f"{prefix}-{n}#chunk=0", f"{prefix}-{n}", lambda n=n: Payload("text", text=f"note {n}"))
        for n in range(count)
    ]


def run(embedder: Embedder, work: list[Work]) -> tuple[dict[str, EmbeddedUnit], dict[str, Failure]]:
    """Embed ``work`` and check the one invariant every test relies on: one outcome per unit."""
    embedded: dict[str, EmbeddedUnit] = {}
    failed: dict[str, Failure] = {}
    for outcome in embedder.embed(work):
        if isinstance(outcome, Failure):
            assert outcome.unit_key is not None
            failed[outcome.unit_key] = outcome
        else:
            embedded[outcome.key] = outcome
    outputs = Counter([*embedded, *failed])
    assert outputs == Counter(key for key, _, _ in work), "every unit yields exactly one outcome"
    return embedded, failed


def invoke_stats(stand_in: Emulator) -> tuple[int, dict[str, int]]:
    stats = stand_in.stats()["bedrock-runtime"]
    return stats["calls"].get("InvokeModel", 0), stats["errors"].get("InvokeModel", {})


@pytest.mark.slow
def test_text_image_audio_and_video_are_embedded_end_to_end(
    client: BaseClient, s3: BaseClient, stand_in: Emulator
) -> None:
    s3.create_bucket(Bucket="embedder-media")
    s3.put_object(Bucket="embedder-media", Key="clip.mp4", Body=sample_video(4, 3.0))
    separate = EmbeddingSettings(dimension=DIMENSION, video_embedding_mode="AUDIO_VIDEO_SEPARATE")
    embedder = Embedder(client, separate, FAST, Pacer(100))
    work: list[Work] = [
        ("note", "note", lambda: Payload("text", text="a red fox in the snow")),
        ("photo", "photo", lambda: Payload("image", data=sample_image(1), media_format="png")),
        (
            "scan#page=1",
            "scan",
            lambda: Payload(
                "image",
                data=sample_image(2, "jpeg"),
                media_format="jpeg",
                detail_level="DOCUMENT_IMAGE",
            ),
        ),
        (
            "tone#t=0.0-2.0",
            "tone",
            lambda: Payload("audio", data=sample_audio(3, 2.0), media_format="wav"),
        ),
        (
            "clip#t=0.0-3.0",
            "clip",
            lambda: Payload("video", s3_uri="s3://embedder-media/clip.mp4", media_format="mp4"),
        ),
    ]
    embedded, failed = run(embedder, work)
    assert failed == {}
    kinds = {key: [kind for kind, _ in unit.vectors] for key, unit in embedded.items()}
    assert kinds == {
        "note": ["TEXT"],
        "photo": ["IMAGE"],
        "scan#page=1": ["IMAGE"],
        "tone#t=0.0-2.0": ["AUDIO"],
        "clip#t=0.0-3.0": ["VIDEO", "AUDIO"],
    }
    for unit in embedded.values():
        for _, vector in unit.vectors:
            assert vector.shape == (DIMENSION,)
            assert vector.dtype == np.float32
    assert embedder.counters.model_calls == 5
    assert embedder.counters.retries == 0


def test_a_validation_exception_quarantines_that_unit_with_the_service_message(
    client: BaseClient, stand_in: Emulator
) -> None:
    embedder = Embedder(client, SETTINGS, FAST, Pacer(1000))
    corrupt = ("broken", "broken", lambda: Payload("image", data=garbage(5), media_format="png"))
    embedded, failed = run(embedder, [*texts(10), corrupt])
    assert len(embedded) == 10
    failure = failed["broken"]
    assert (failure.stage, failure.code, failure.item_id) == (
        "embed",
        "ValidationException",
        "broken",
    )
    assert "not a PNG, JPEG, GIF or WebP" in failure.message
    assert failure.attempts == 1
    calls, errors = invoke_stats(stand_in)
    assert calls == 11, "a ValidationException is never retried"
    assert errors == {"ValidationException": 1}


def test_other_input_errors_are_quarantined_with_their_aws_code(
    client: BaseClient, stand_in: Emulator
) -> None:
    unknown_model = SETTINGS.model_copy(update={"model_id": "amazon.nova-9-embeddings-v0:0"})
    embedder = Embedder(client, unknown_model, FAST, Pacer(1000))
    _, failed = run(embedder, texts(3))
    assert {f.code for f in failed.values()} == {"ValidationException"}
    assert all("model identifier" in f.message for f in failed.values())


def test_payloads_that_cannot_be_prepared_are_quarantined_before_any_call(
    client: BaseClient, stand_in: Emulator
) -> None:
    class PreparationError(ValueError):
        code = "image_truncated"

    def truncated_image() -> Payload:
        raise PreparationError("the image ends early: re-export it")

    def missing_file() -> Payload:
        raise FileNotFoundError("no such file: /corpus/gone.png")

    embedder = Embedder(client, SETTINGS, FAST, Pacer(1000))
    work: list[Work] = [
        ("empty", "empty", lambda: Payload("text", text="   ")),
        ("long", "long", lambda: Payload("text", text="x" * 9000)),
        ("cut", "cut", truncated_image),
        ("gone", "gone", missing_file),
        *texts(2),
    ]
    embedded, failed = run(embedder, work)
    assert len(embedded) == 2
    assert {key: (f.stage, f.code) for key, f in failed.items()} == {
        "empty": ("prepare", "text_empty"),
        "long": ("prepare", "text_too_long"),
        "cut": ("prepare", "image_truncated"),
        "gone": ("prepare", "unreadable_source"),
    }
    assert "re-export" in failed["cut"].message
    assert invoke_stats(stand_in)[0] == 2


def test_under_a_request_quota_every_unit_ends_embedded_and_throttles_are_counted(
    client: BaseClient, stand_in: Emulator
) -> None:
    quota = Misbehaviour(operations=frozenset({"InvokeModel"}), requests_per_second=20)
    stand_in.configure(bedrock_faults=(quota,))
    # The pacer is set above the quota on purpose: the embedder must absorb the throttling.
    throughput = ThroughputSettings(concurrency=8, requests_per_second=60)
    embedder = Embedder(client, SETTINGS, throughput, Pacer(throughput.requests_per_second))
    embedded, failed = run(embedder, texts(200))
    assert failed == {}
    assert len(embedded) == 200
    counters = embedder.counters
    calls, errors = invoke_stats(stand_in)
    assert counters.throttles > 0
    assert counters.throttles == errors["ThrottlingException"]
    assert counters.model_calls == calls
    assert counters.retries == calls - 200


def test_with_one_call_in_five_failing_every_unit_ends_embedded_and_retries_are_counted(
    client: BaseClient, stand_in: Emulator
) -> None:
    flaky = Misbehaviour(operations=frozenset({"InvokeModel"}), server_error_rate=0.2, seed=11)
    stand_in.configure(bedrock_faults=(flaky,))
    embedder = Embedder(client, SETTINGS, FAST, Pacer(1000))
    embedded, failed = run(embedder, texts(200))
    assert failed == {}
    assert len(embedded) == 200
    calls, errors = invoke_stats(stand_in)
    server_errors = errors.get("InternalServerException", 0) + errors.get(
        "ServiceUnavailableException", 0
    )
    assert server_errors > 0
    assert embedder.counters.retries == server_errors == calls - 200
    assert embedder.counters.model_calls == calls
    assert embedder.counters.throttles == 0


def test_a_unit_still_throttled_after_its_requeues_is_quarantined_as_throttled(
    stand_in: Emulator,
) -> None:
    stand_in.configure(bedrock_faults=(Misbehaviour(throttle_rate=1.0),))
    no_botocore_retries = stand_in.client(
        "bedrock-runtime", retries={"mode": "standard", "total_max_attempts": 1}
    )
    throughput = ThroughputSettings(concurrency=2, requests_per_second=1000, max_throttle_retries=2)
    embedder = Embedder(no_botocore_retries, SETTINGS, throughput, Pacer(1000, cooldown_seconds=0))
    embedded, failed = run(embedder, texts(3))
    assert embedded == {}
    for failure in failed.values():
        assert (failure.stage, failure.code, failure.attempts) == ("embed", "throttled", 3)
        assert "ThrottlingException" in failure.message
    assert embedder.counters.throttles == 9
    assert embedder.counters.retries == 6


def test_work_is_read_lazily_with_at_most_twice_the_concurrency_in_flight(
    client: BaseClient, stand_in: Emulator
) -> None:
    stand_in.configure(bedrock_faults=(Misbehaviour(latency_seconds=0.01),))
    concurrency = 3
    throughput = ThroughputSettings(concurrency=concurrency, requests_per_second=1000)
    embedder = Embedder(client, SETTINGS, throughput, Pacer(1000))
    pulled = 0

    def work() -> Iterator[Work]:
        nonlocal pulled
        for item in texts(40):
            pulled += 1
            yield item

    finished = 0
    for _ in embedder.embed(work()):
        assert pulled - finished <= 2 * concurrency
        finished += 1
    assert finished == pulled == 40


def test_every_http_attempt_is_paced_retries_included(
    client: BaseClient, stand_in: Emulator
) -> None:
    class CountingPacer(Pacer):
        def __init__(self) -> None:
            super().__init__(1000)
            self.acquired = 0

        def acquire(self, amount: float = 1.0) -> float:
            self.acquired += 1  # one worker thread: no lock needed
            return super().acquire(amount)

    flaky = Misbehaviour(operations=frozenset({"InvokeModel"}), server_error_rate=0.3, seed=5)
    stand_in.configure(bedrock_faults=(flaky,))
    pacer = CountingPacer()
    embedder = Embedder(client, SETTINGS, ThroughputSettings(concurrency=1), pacer)
    run(embedder, texts(30))
    assert embedder.counters.retries > 0
    assert pacer.acquired == embedder.counters.model_calls == invoke_stats(stand_in)[0]


def test_embedders_sharing_a_client_each_count_only_their_own_calls(
    client: BaseClient, stand_in: Emulator
) -> None:
    first = Embedder(client, SETTINGS, FAST, Pacer(1000))
    second = Embedder(client, SETTINGS, FAST, Pacer(1000))
    run(first, texts(5, "a"))
    run(second, texts(7, "b"))
    run(first, texts(3, "c"))
    assert (first.counters.model_calls, second.counters.model_calls) == (8, 7)
    assert invoke_stats(stand_in)[0] == 15


def test_credential_errors_stop_the_stream_instead_of_quarantining_every_unit(
    client: BaseClient,
) -> None:
    embedder = Embedder(client, SETTINGS, FAST, Pacer(1000))
    with Stubber(client) as stub:
        stub.add_client_error("invoke_model", "AccessDeniedException", "not allowed", 403)
        with pytest.raises(ClientError, match="AccessDenied"):
            list(embedder.embed(texts(1)))


def test_a_model_error_is_quarantined_without_retry(client: BaseClient) -> None:
    embedder = Embedder(client, SETTINGS, FAST, Pacer(1000))
    with Stubber(client) as stub:
        stub.add_client_error("invoke_model", "ModelErrorException", "could not embed", 424)
        _, failed = run(embedder, texts(1))
    failure = failed["doc-0#chunk=0"]
    assert (failure.code, failure.message) == ("ModelErrorException", "could not embed")


def test_an_embedder_wants_a_bedrock_runtime_client(stand_in: Emulator) -> None:
    with pytest.raises(ValueError, match="bedrock-runtime"):
        Embedder(stand_in.client("s3"), SETTINGS, FAST, Pacer(1))
