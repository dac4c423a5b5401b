"""Staging async-job inputs on S3 and reading job outputs, against moto's S3 in the stand-in."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import boto3
import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from emulator.app import DUMMY_ACCESS_KEY_ID, DUMMY_SECRET_ACCESS_KEY, Emulator
from tasks.jobs.staging import staged_input
from tasks.s3_objects import (
    ObjectMissingError,
    S3ObjectError,
    ensured_bucket,
    first_existing,
    joined_s3_uri,
    object_lines,
    read_object,
    split_s3_uri,
)

MIB = 2**20


@pytest.fixture
def bucket_name(request: pytest.FixtureRequest) -> str:
    """A bucket name unique to the test, so tests sharing the session's S3 never meet."""
    return "objects-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]


@pytest.fixture
def bucket(s3: BaseClient, bucket_name: str) -> str:
    """A fresh, existing bucket named after the test."""
    s3.create_bucket(Bucket=bucket_name)
    return bucket_name


def calls(client: BaseClient, *operations: str) -> list[str]:
    """A list that records every call of ``operations`` the client makes from now on."""
    made: list[str] = []
    for operation in operations:
        client.meta.events.register(
            f"before-call.s3.{operation}", lambda model, **_: made.append(model.name)
        )
    return made


def uploads(client: BaseClient) -> list[str]:
    """The upload calls (single or multipart) the client makes from now on."""
    return calls(client, "PutObject", "CreateMultipartUpload", "UploadPart")


def local_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_uris_split_into_bucket_and_key_and_join_without_double_slashes() -> None:
    assert split_s3_uri("s3://bucket/a/b.txt") == ("bucket", "a/b.txt")
    assert split_s3_uri("s3://bucket//a/") == ("bucket", "a/")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    for bad in ("s3://", "s3:///key", "/local/file", "https://bucket/key"):
        with pytest.raises(ValueError, match="not an S3 URI"):
            split_s3_uri(bad)
    assert joined_s3_uri("s3://b/staging/", "abc", "/x.png") == "s3://b/staging/abc/x.png"
    assert joined_s3_uri("s3://b", "out/", "", "job-1") == "s3://b/out/job-1"


def test_a_local_file_is_staged_under_its_fingerprint(
    s3: BaseClient, bucket: str, tmp_path: Path
) -> None:
    path = local_file(tmp_path, "talk.mp3", b"ID3 not really audio\n")
    digest = hashlib.sha256(b"sha256:aaaa:21").hexdigest()[:32]

    staged = staged_input(s3, str(path), path, "sha256:aaaa:21", f"s3://{bucket}/staging/")

    assert staged == f"s3://{bucket}/staging/{digest}/talk.mp3"
    assert read_object(s3, staged) == b"ID3 not really audio\n"


def test_staging_again_skips_the_upload_and_a_new_fingerprint_does_not(
    s3: BaseClient, bucket: str, tmp_path: Path
) -> None:
    path = local_file(tmp_path, "notes.txt", b"version one\n")
    staging = f"s3://{bucket}/staging"
    first = staged_input(s3, str(path), path, "fp-1", staging)
    made = uploads(s3)

    again = staged_input(s3, str(path), path, "fp-1", staging)
    assert (again, made) == (first, [])

    path.write_bytes(b"version two\n")
    changed = staged_input(s3, str(path), path, "fp-2", staging)
    assert changed != first
    assert made == ["PutObject"]
    assert read_object(s3, changed) == b"version two\n"


def test_a_partial_object_under_the_key_is_replaced(
    s3: BaseClient, bucket: str, tmp_path: Path
) -> None:
    path = local_file(tmp_path, "notes.txt", b"the whole content\n")
    digest = hashlib.sha256(b"fp").hexdigest()[:32]
    s3.put_object(Bucket=bucket, Key=f"staging/{digest}/notes.txt", Body=b"the wh")

    staged = staged_input(s3, str(path), path, "fp", f"s3://{bucket}/staging")

    assert read_object(s3, staged) == b"the whole content\n"


def test_an_s3_input_is_used_in_place_without_any_call(stand_in: Emulator) -> None:
    client = stand_in.client("s3")
    uri = "s3://corpus/video/long.mp4"
    # A stubber with nothing queued fails any call the client would make.
    with Stubber(client):
        assert staged_input(client, uri, Path("/nowhere"), "fp", "s3://staging/x") == uri


def test_a_large_file_is_uploaded_in_parts(s3: BaseClient, bucket: str, tmp_path: Path) -> None:
    content = random.Random(7).randbytes(11 * MIB)
    path = local_file(tmp_path, "film.mp4", content)
    made = uploads(s3)

    staged = staged_input(
        s3, str(path), path, "fp", f"s3://{bucket}/staging", multipart_threshold_bytes=5 * MIB
    )

    assert sorted(made) == ["CreateMultipartUpload", "UploadPart", "UploadPart"]
    _, key = split_s3_uri(staged)
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-2")
    assert read_object(s3, staged) == content


def test_a_missing_local_file_cannot_be_staged(s3: BaseClient, tmp_path: Path) -> None:
    gone = tmp_path / "gone.wav"

    with pytest.raises(S3ObjectError, match=re.escape(f"no file at {gone}")) as raised:
        staged_input(s3, str(gone), gone, "fp", "s3://any-bucket/staging")

    assert raised.value.code == "input_missing"


def test_a_missing_bucket_is_reported_or_created(s3: BaseClient, bucket_name: str) -> None:
    uri = f"s3://{bucket_name}/jobs/out"

    with pytest.raises(S3ObjectError, match=f"'{bucket_name}'.*NOVAFLOW_ASYNC_JOBS__") as raised:
        ensured_bucket(s3, uri, create=False)
    assert raised.value.code == "bucket_missing"

    assert ensured_bucket(s3, uri, create=True) is True
    assert ensured_bucket(s3, uri, create=True) is False
    assert ensured_bucket(s3, uri, create=False) is False


def test_a_bucket_is_created_in_the_clients_region(stand_in: Emulator, bucket_name: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=stand_in.endpoints.s3,
        region_name="eu-west-1",
        aws_access_key_id=DUMMY_ACCESS_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET_ACCESS_KEY,
    )

    assert ensured_bucket(client, f"s3://{bucket_name}/staging", create=True) is True

    assert client.get_bucket_location(Bucket=bucket_name)["LocationConstraint"] == "eu-west-1"


def test_a_forbidden_bucket_is_reported(stand_in: Emulator) -> None:
    # moto does not enforce bucket policies, so S3's 403 answer is stubbed.
    client = stand_in.client("s3")
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(S3ObjectError, match="'locked'") as raised:
            ensured_bucket(client, "s3://locked/out", create=True)

    assert raised.value.code == "bucket_forbidden"


def test_reading_a_missing_object_raises_object_missing(s3: BaseClient, bucket: str) -> None:
    uri = f"s3://{bucket}/job/embedding-text.jsonl"

    with pytest.raises(ObjectMissingError, match=f"no S3 object at {uri}") as raised:
        read_object(s3, uri)
    assert raised.value.code == "object_missing"

    lines = object_lines(s3, uri)
    with pytest.raises(ObjectMissingError):
        next(lines)


def test_an_object_over_the_limit_is_not_read(s3: BaseClient, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="big.json", Body=b"x" * 101)

    with pytest.raises(S3ObjectError, match="101 bytes, more than the 100") as raised:
        read_object(s3, f"s3://{bucket}/big.json", max_bytes=100)

    assert raised.value.code == "object_too_large"
    assert read_object(s3, f"s3://{bucket}/big.json", max_bytes=101) == b"x" * 101


def test_object_lines_streams_every_line(s3: BaseClient, bucket: str) -> None:
    long_line = b'{"embedding": [' + b"0.125, " * 20_000 + b"1.0]}"  # longer than a read
    body = b'{"a": 1}\n' + long_line + b"\r\n\n" + b'{"last": true}'
    s3.put_object(Bucket=bucket, Key="job/embedding-text.jsonl", Body=body)

    lines = list(object_lines(s3, f"s3://{bucket}/job/embedding-text.jsonl"))

    assert lines == [b'{"a": 1}', long_line, b"", b'{"last": true}']


def test_first_existing_picks_the_first_present_variant(s3: BaseClient, bucket: str) -> None:
    base = f"s3://{bucket}/job"
    s3.put_object(Bucket=bucket, Key="job/embedding-image.json", Body=b"{}\n")
    s3.put_object(Bucket=bucket, Key="job/embedding-image.jsonl", Body=b"{}\n")
    variants = [f"{base}/embedding-image.jsonx", f"{base}/embedding-image.jsonl"]

    assert first_existing(s3, [*variants, f"{base}/embedding-image.json"]) == variants[1]
    assert first_existing(s3, [f"{base}/embedding-audio-video.jsonl"]) is None
    assert first_existing(s3, ["s3://no-such-bucket-for-object-tests/x.jsonl"]) is None
    assert first_existing(s3, []) is None


def test_first_existing_reports_a_refusal_only_when_nothing_is_found(
    stand_in: Emulator,
) -> None:
    client = stand_in.client("s3")
    uris = ["s3://out/job/embedding-video.jsonl", "s3://out/job/embedding-audio-video.jsonl"]
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        stub.add_response("head_object", {"ContentLength": 3})
        assert first_existing(client, uris) == uris[1]

        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
        with pytest.raises(S3ObjectError, match=re.escape(uris[0])) as raised:
            first_existing(client, uris)

    assert raised.value.code == "object_forbidden"
