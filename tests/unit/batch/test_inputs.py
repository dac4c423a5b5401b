"""A shard's batch inputs: each unit's record carries the very body InvokeModel would be sent,
under a recordId that names its shard and position; files are split at the per-file record and
byte limits; a unit whose input cannot be prepared is refused with the Failure InvokeModel's
path gives it, and a record over the file limit as ``batch_record_too_large``."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import orjson
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from PIL import Image

from tasks.batch.inputs import (
    MAX_UNITS_PER_SHARD,
    input_file_name,
    record_id,
    record_position,
    shard_input,
)
from tasks.embed.embedder import EmbeddedUnit, Embedder
from tasks.media.unit_inputs import unit_payloads
from tasks.pacing import Pacer
from tasks.records import Failure, Unit
from tasks.settings import (
    BatchInferenceSettings,
    EmbeddingSettings,
    NovaflowSettings,
    ThroughputSettings,
)

DIMENSION = 256
MB = 1_000_000


def _settings(**batch: Any) -> NovaflowSettings:
    return NovaflowSettings(
        embedding=EmbeddingSettings(dimension=DIMENSION),
        batch_inference=BatchInferenceSettings(**batch),
    )


def _text_unit(folder: Path, name: str, text: str) -> Unit:
    path = folder / name
    path.write_text(text)
    return Unit(f"{name}#chunk=0", name, str(path), "text_chunk", char_start=0, char_end=len(text))


def _noise_png(folder: Path, name: str, side: int, seed: int) -> Unit:
    """An image unit whose PNG does not compress: about 3 × side² bytes, sent as they are."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    path = folder / name
    path.write_bytes(buffer.getvalue())
    return Unit(name, name, str(path), "image")


def _lines(files: tuple[Path, ...]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]


def _invoke_model_path(
    units: list[Unit], settings: NovaflowSettings
) -> tuple[dict[str, Any], dict[str, Failure]]:
    """What the InvokeModel path makes of ``units``, with no network: the body each unit is sent
    (by key, parsed) and the Failure each unit refused before any call gets (its ``uri`` filled
    in as ``embedded_shard`` does)."""
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bodies: dict[str, Any] = {}

    def capture(params: dict[str, Any], **_: Any) -> None:
        document = json.loads(params["body"])
        bodies[f"call-{len(bodies)}"] = document

    client.meta.events.register("provide-client-params.bedrock-runtime.InvokeModel", capture)
    answer = json.dumps(
        {"embeddings": [{"embeddingType": "TEXT", "embedding": [0.0] * DIMENSION}]}
    ).encode()
    by_key = {unit.key: unit for unit in units}
    embedder = Embedder(
        client, settings.embedding, ThroughputSettings(concurrency=1), Pacer(1_000_000.0)
    )
    failures: dict[str, Failure] = {}
    called: list[str] = []
    with Stubber(client) as stubber:
        for _ in units:
            stubber.add_response(
                "invoke_model",
                {"body": StreamingBody(io.BytesIO(answer), len(answer)),
                 "contentType": "application/json"},
            )  # fmt: skip
        for outcome in embedder.embed(unit_payloads(units, settings, None)):
            if isinstance(outcome, EmbeddedUnit):
                called.append(outcome.key)
            else:
                assert outcome.unit_key is not None
                unit = by_key[outcome.unit_key]
                failures[unit.key] = Failure(
                    outcome.item_id, outcome.uri or unit.uri, outcome.stage, outcome.code,
                    outcome.message, outcome.unit_key, outcome.attempts,
                )  # fmt: skip
    # One unit at a time, in order: the n-th call is the n-th unit that was not refused.
    return dict(zip(called, bodies.values(), strict=True)), failures


def _without_addresses(failure: Failure) -> Failure:
    """The failure with Python object addresses (``at 0x7f…``) blanked: they differ per call."""
    return Failure(
        failure.item_id, failure.uri, failure.stage, failure.code,
        re.sub(r" at 0x[0-9a-f]+", " at 0x…", failure.message), failure.unit_key,
        failure.attempts,
    )  # fmt: skip


# -- record ids ------------------------------------------------------------------------------


def test_a_record_id_is_alphanumeric_and_names_its_shard_and_position() -> None:
    assert record_id(12, 7) == "s0000012u00007"
    draw = random.Random(11)
    for _ in range(200):
        shard, position = draw.randint(1, 9_999_999), draw.randint(0, MAX_UNITS_PER_SHARD)
        identifier = record_id(shard, position)
        assert identifier.isalnum()
        assert len(identifier) == 14
        assert record_position(identifier) == (shard, position)


@pytest.mark.parametrize(("shard", "position"), [(0, 0), (10_000_000, 0), (1, 100_000), (1, -1)])
def test_no_record_id_is_made_for_a_shard_or_position_it_cannot_spell(
    shard: int, position: int
) -> None:
    with pytest.raises(ValueError, match="no record id"):
        record_id(shard, position)


@pytest.mark.parametrize(
    "identifier", ["", "record-1", "s12u7", "S0000012U00007", "s0000012u000070", "u00007s0000012"]
)
def test_an_id_novaflow_did_not_write_names_no_unit(identifier: str) -> None:
    assert record_position(identifier) is None


@pytest.mark.parametrize(
    "identifier", ["s0000012u00007\n", "s\u0661\u0662\u0663\u0664\u0665\u0666\u0667u00007",
                   "s0000000u00000"],
)  # fmt: skip
def test_an_id_record_id_cannot_write_names_no_unit(identifier: str) -> None:
    assert record_position(identifier) is None


def test_a_shard_s_files_are_named_by_shard_then_part() -> None:
    assert input_file_name(42, 1) == "shard-0000042.jsonl"
    assert input_file_name(42, 2) == "shard-0000042.2.jsonl"
    assert input_file_name(9_999_999, 13) == "shard-9999999.13.jsonl"


# -- shard inputs ----------------------------------------------------------------------------


def test_each_record_holds_the_body_invoke_model_would_be_sent(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    units = [
        _text_unit(corpus, "a.txt", "the harbour at dawn, caf\u00e9 au lait"),
        _noise_png(corpus, "tile.png", 24, seed=3),
        _text_unit(corpus, "b.txt", "the lighthouse at dusk"),
    ]
    settings = _settings()
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 5, settings, None, out)

    assert written.files == (out / "shard-0000005.jsonl",)
    assert (written.records, written.refused) == (3, ())
    assert written.input_bytes == sum(path.stat().st_size for path in written.files)
    lines = _lines(written.files)
    assert [line["recordId"] for line in lines] == [record_id(5, n) for n in range(3)]
    sent, _ = _invoke_model_path(units, settings)
    assert {units[n].key: line["modelInput"] for n, line in enumerate(lines)} == sent


def test_a_file_is_continued_in_a_new_part_at_the_record_limit(tmp_path: Path) -> None:
    units = [_text_unit(tmp_path, f"note-{n}.txt", f"note {n}") for n in range(5)]
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 3, _settings(max_records_per_file=2), None, out)

    assert [path.name for path in written.files] == [
        "shard-0000003.jsonl",
        "shard-0000003.2.jsonl",
        "shard-0000003.3.jsonl",
    ]
    assert [len(path.read_bytes().splitlines()) for path in written.files] == [2, 2, 1]
    assert [line["recordId"] for line in _lines(written.files)] == [
        record_id(3, n) for n in range(5)
    ]
    assert written.records == 5


def test_a_file_is_continued_in_a_new_part_before_it_would_pass_the_byte_limit(
    tmp_path: Path,
) -> None:
    # Each picture makes a record of about 0.7 MB: two never share a file of at most 1 MB.
    units = [
        _noise_png(tmp_path, "one.png", 420, seed=1),
        _text_unit(tmp_path, "a.txt", "a caption"),
        _noise_png(tmp_path, "two.png", 420, seed=2),
        _noise_png(tmp_path, "three.png", 420, seed=3),
        _text_unit(tmp_path, "b.txt", "another caption"),
    ]
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 1, _settings(max_file_bytes=MB), None, out)

    sizes = [path.stat().st_size for path in written.files]
    assert len(written.files) == 3
    assert all(size <= MB for size in sizes)
    assert [len(path.read_bytes().splitlines()) for path in written.files] == [2, 1, 2]
    assert [line["recordId"] for line in _lines(written.files)] == [
        record_id(1, n) for n in range(5)
    ]
    assert (written.records, written.input_bytes) == (5, sum(sizes))


def test_a_record_over_the_file_limit_is_refused_and_the_others_still_go(
    tmp_path: Path,
) -> None:
    units = [
        _text_unit(tmp_path, "a.txt", "before"),
        _noise_png(tmp_path, "huge.png", 600, seed=4),  # a record of about 1.4 MB
        _text_unit(tmp_path, "b.txt", "after"),
    ]
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 2, _settings(max_file_bytes=MB), None, out)

    assert [line["recordId"] for line in _lines(written.files)] == [
        record_id(2, 0),
        record_id(2, 2),
    ]
    assert written.records == 2
    [refusal] = written.refused
    assert (refusal.unit_key, refusal.item_id, refusal.uri) == (
        "huge.png",
        "huge.png",
        units[1].uri,
    )
    assert (refusal.stage, refusal.code) == ("prepare", "batch_record_too_large")
    assert "1,000,000" in refusal.message
    assert "batch_inference.max_file_bytes" in refusal.message


def test_a_unit_that_cannot_be_prepared_is_refused_as_invoke_model_s_path_refuses_it(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    units = [
        _text_unit(tmp_path, "good.txt", "something to embed"),
        _text_unit(tmp_path, "blank.txt", "   \n\t "),
        Unit("broken.png", "broken.png", str(broken), "image"),
        Unit("gone.txt#chunk=0", "gone.txt", str(tmp_path / "gone.txt"), "text_chunk",
             char_start=0, char_end=10),
        _text_unit(tmp_path, "long.txt", "x" * 9_000),  # over the 8,192 characters sent inline
    ]  # fmt: skip
    settings = _settings()
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 1, settings, None, out)

    _, expected = _invoke_model_path(units, settings)
    assert set(expected) == {"blank.txt#chunk=0", "broken.png", "gone.txt#chunk=0",
                             "long.txt#chunk=0"}  # fmt: skip
    assert {f.unit_key: _without_addresses(f) for f in written.refused} == {
        key: _without_addresses(failure) for key, failure in expected.items()
    }
    assert [line["recordId"] for line in _lines(written.files)] == [record_id(1, 0)]


def test_a_shard_whose_every_unit_is_refused_writes_no_file(tmp_path: Path) -> None:
    units = [_text_unit(tmp_path, f"blank-{n}.txt", " ") for n in range(3)]
    out = tmp_path / "out"
    out.mkdir()

    written = shard_input(units, 8, _settings(), None, out)

    assert (written.files, written.records, written.input_bytes) == ((), 0, 0)
    assert [failure.code for failure in written.refused] == ["text_empty"] * 3
    assert list(out.iterdir()) == []


def test_a_shard_too_large_for_its_record_ids_is_refused(tmp_path: Path) -> None:
    unit = _text_unit(tmp_path, "a.txt", "a")
    units = [unit] * (MAX_UNITS_PER_SHARD + 2)

    with pytest.raises(ValueError, match="at most 100000"):
        shard_input(units, 1, _settings(), None, tmp_path)
