"""Corpus input against S3 (moto's server in the stand-in): crawling a prefix, resolving objects
by their ETag, quarantining missing and forbidden ones, and manifests stored on S3."""

from __future__ import annotations

import hashlib
import json
import re

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from emulator.app import Emulator
from tasks.corpus.resolve import (
    ListedObject,
    ManifestRow,
    crawled_rows,
    manifest_directory,
    manifest_rows,
    resolved_items,
)
from tasks.demo.sample_media import sample_image
from tasks.records import Failure, Item


@pytest.fixture
def bucket(s3: BaseClient, request: pytest.FixtureRequest) -> str:
    """A fresh bucket named after the test, so tests sharing the session's S3 never meet."""
    name = "corpus-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_environment(stand_in: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables pointed at the stand-in, as a deployed run would have them."""
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)


def put(s3: BaseClient, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


NEWLINE = b"\n"


def md5_hex(content: bytes) -> str:
    """S3's ETag of an object uploaded in one PUT."""
    return hashlib.md5(content).hexdigest()


def etag_fingerprint(s3: BaseClient, bucket: str, key: str) -> str:
    head = s3.head_object(Bucket=bucket, Key=key)
    return f"etag:{head['ETag'].strip(chr(34))}:{head['ContentLength']}"


def head_requests(client: BaseClient) -> list[str]:
    """A list that records the key of every HeadObject call the client makes from now on."""
    keys: list[str] = []
    client.meta.events.register(
        "provide-client-params.s3.HeadObject", lambda params, **_: keys.append(params["Key"])
    )
    return keys


def test_crawling_a_prefix_lists_nested_keys_in_order(s3: BaseClient, bucket: str) -> None:
    put(
        s3,
        bucket,
        {
            "docs/b.txt": b"second\n",
            "docs/a/deep/note.md": b"# deep\n",
            "docs/a.txt": b"first\n",
            "docs/.hidden.txt": b"hidden\n",
            "docs/a/.cache/x.txt": b"hidden\n",
            "docs/folder/": b"",
            "docs-old/c.txt": b"another prefix\n",
            "elsewhere/d.txt": b"another prefix\n",
        },
    )

    rows = list(crawled_rows(f"s3://{bucket}/docs", s3))

    assert [(row.position, row.uri) for row in rows] == [
        (1, f"s3://{bucket}/docs/a.txt"),
        (2, f"s3://{bucket}/docs/a/deep/note.md"),
        (3, f"s3://{bucket}/docs/b.txt"),
    ]
    assert all(isinstance(row, ListedObject) for row in rows)


def test_crawled_objects_resolve_by_etag_without_extra_requests(
    s3: BaseClient, bucket: str
) -> None:
    png = sample_image(5, "png")
    put(s3, bucket, {"docs/a.txt": b"first\n", "docs/img/photo.png": png})
    heads = head_requests(s3)

    items = list(
        resolved_items(crawled_rows(f"s3://{bucket}/docs/", s3), f"s3://{bucket}/docs", s3)
    )

    assert items == [
        Item(
            item_id="a.txt",
            uri=f"s3://{bucket}/docs/a.txt",
            modality="text",
            fingerprint=f"etag:{md5_hex(b'first' + NEWLINE)}:6",
            size_bytes=6,
        ),
        Item(
            item_id="img/photo.png",
            uri=f"s3://{bucket}/docs/img/photo.png",
            modality="image",
            fingerprint=etag_fingerprint(s3, bucket, "docs/img/photo.png"),
            size_bytes=len(png),
        ),
    ]
    assert heads == ["docs/img/photo.png"]  # only the test's own HEAD: the listing sufficed


def test_manifest_rows_on_s3_resolve_with_a_head_request(s3: BaseClient, bucket: str) -> None:
    put(s3, bucket, {"media/clip.txt": b"version one\n"})
    row = ManifestRow(1, f"s3://{bucket}/media/clip.txt", item_id="clip")

    (before,) = resolved_items([row], None, s3)
    put(s3, bucket, {"media/clip.txt": b"version two, longer\n"})
    (after,) = resolved_items([row], None, s3)

    assert isinstance(before, Item)
    assert isinstance(after, Item)
    assert before.fingerprint == f"etag:{md5_hex(b'version one' + NEWLINE)}:12"
    assert after.fingerprint == etag_fingerprint(s3, bucket, "media/clip.txt")
    assert after.fingerprint != before.fingerprint
    assert (after.item_id, after.size_bytes) == ("clip", 20)


def test_bad_s3_rows_are_quarantined_with_specific_codes(s3: BaseClient, bucket: str) -> None:
    put(
        s3,
        bucket,
        {
            "docs/empty.txt": b"",
            "docs/upload-1": sample_image(6, "png"),
            "docs/upload-2": bytes(range(256)),
            "other/x.txt": b"outside the root\n",
        },
    )
    rows = [
        ManifestRow(1, f"s3://{bucket}/docs/missing.pdf"),
        ManifestRow(2, f"s3://{bucket}/docs/empty.txt"),
        ManifestRow(3, f"s3://{bucket}/docs/upload-1"),
        ManifestRow(4, f"s3://{bucket}/docs/upload-2"),
        ManifestRow(5, f"s3://{bucket}/other/x.txt"),
        ManifestRow(6, "../other/x.txt"),
        ManifestRow(7, "/etc/passwd"),
        ManifestRow(8, f"s3://{bucket}/docs/"),
    ]

    results = list(resolved_items(rows, f"s3://{bucket}/docs", s3))

    sniffed = results[2]
    assert isinstance(sniffed, Item)
    assert (sniffed.item_id, sniffed.modality) == ("upload-1", "image")
    assert all(isinstance(result, Failure) for i, result in enumerate(results) if i != 2)
    outcomes = [(r.code, r.item_id, r.message) for r in results if isinstance(r, Failure)]
    root = f"s3://{bucket}/docs/"
    assert outcomes == [
        ("not_found", "missing.pdf", f"no S3 object at {root}missing.pdf"),
        ("empty_file", "empty.txt", f"{root}empty.txt is empty (0 bytes)"),
        (
            "unsupported_type",
            "upload-2",
            f"cannot tell what {root}upload-2 holds: extension (none) is not a known media type "
            "and its first bytes match no known format; declare its 'modality' to embed it anyway",
        ),
        ("outside_root", "", f"s3://{bucket}/other/x.txt is outside the corpus root {root}"),
        ("outside_root", "", f"'../other/x.txt' climbs out of the corpus root {root}"),
        ("outside_root", "", f"'/etc/passwd' is a local path, but the corpus root is {root}"),
        ("malformed_row", "", f"'{root}' names no S3 object (expected s3://bucket/key)"),
    ]


def test_a_missing_bucket_is_not_found(s3: BaseClient) -> None:
    row = ManifestRow(1, "s3://no-such-bucket-for-corpus-tests/docs/a.txt", item_id="lost")

    (failure,) = resolved_items([row], None, s3)

    assert isinstance(failure, Failure)
    assert (failure.code, failure.item_id, failure.message) == (
        "not_found",
        "lost",
        "no S3 bucket 'no-such-bucket-for-corpus-tests' "
        "(for s3://no-such-bucket-for-corpus-tests/docs/a.txt)",
    )


def test_s3_locations_s3_cannot_hold_are_malformed(s3: BaseClient) -> None:
    rows = [
        ManifestRow(1, "s3://Not_A_Bucket!/a.txt"),
        ManifestRow(2, "s3://bucket/" + "k" * 1025, item_id="long"),
    ]

    bad_bucket, long_key = resolved_items(rows, None, s3)

    assert isinstance(bad_bucket, Failure)
    assert (bad_bucket.code, bad_bucket.item_id) == ("malformed_row", "a.txt")
    assert bad_bucket.message.startswith("'s3://Not_A_Bucket!/a.txt' is not a valid S3 location")
    assert isinstance(long_key, Failure)
    assert (long_key.code, long_key.item_id) == ("malformed_row", "long")
    assert long_key.message.startswith("S3 keys are at most 1024 bytes")


def test_a_forbidden_object_is_unreadable(stand_in: Emulator) -> None:
    # moto does not enforce bucket policies, so S3's 403 answer is stubbed.
    client = stand_in.client("s3")
    with Stubber(client) as stub:
        stub.add_client_error(
            "head_object", service_error_code="403", http_status_code=403, service_message=""
        )
        (failure,) = resolved_items([ManifestRow(1, "s3://locked/report.pdf")], None, client)

    assert isinstance(failure, Failure)
    assert (failure.code, failure.item_id) == ("unreadable", "report.pdf")
    assert failure.message == (
        "access denied reading s3://locked/report.pdf (403): the credentials in use may not read it"
    )


def test_other_s3_errors_are_raised_not_quarantined(stand_in: Emulator) -> None:
    client = stand_in.client("s3")
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(client.exceptions.ClientError, match="SlowDown"):
            list(resolved_items([ManifestRow(1, "s3://busy/report.pdf")], None, client))


@pytest.mark.usefixtures("aws_environment")
def test_a_jsonl_manifest_stored_on_s3(s3: BaseClient, bucket: str) -> None:
    put(
        s3,
        bucket,
        {
            "corpus/media/a.txt": b"alpha\n",
            "corpus/media/photo.png": sample_image(8, "png"),
            "outside.txt": b"outside\n",
        },
    )
    lines = [
        {"uri": "media/a.txt", "metadata": {"lang": "en"}},
        {"uri": f"s3://{bucket}/corpus/media/photo.png", "id": "photo"},
        {"uri": "../outside.txt"},
        "not an object",
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    put(s3, bucket, {"corpus/manifest.jsonl": body})
    manifest = f"s3://{bucket}/corpus/manifest.jsonl"

    # No client passed: both the manifest and the objects are reached through the variables.
    results = list(resolved_items(manifest_rows(manifest), manifest_directory(manifest)))

    assert manifest_directory(manifest) == f"s3://{bucket}/corpus/"
    assert [type(result).__name__ for result in results] == ["Item", "Item", "Failure", "Failure"]
    text, photo, escape, malformed = results
    assert isinstance(text, Item)
    assert (text.item_id, text.uri, text.metadata_json) == (
        "media/a.txt",
        f"s3://{bucket}/corpus/media/a.txt",
        '{"lang":"en"}',
    )
    assert isinstance(photo, Item)
    assert (photo.item_id, photo.modality) == ("photo", "image")
    assert isinstance(escape, Failure)
    assert (escape.code, escape.uri) == ("outside_root", "../outside.txt")
    assert isinstance(malformed, Failure)
    assert malformed.message == "line 4: expected a JSON object, got string"


@pytest.mark.usefixtures("aws_environment")
def test_a_parquet_manifest_stored_on_s3_and_a_crawl_without_a_client(
    s3: BaseClient, bucket: str
) -> None:
    put(s3, bucket, {"docs/a.txt": b"alpha\n", "docs/b.md": b"# beta\n"})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"uri": [f"s3://{bucket}/docs/b.md"], "id": ["b"]}), sink)
    put(s3, bucket, {"manifests/run.parquet": sink.getvalue().to_pybytes()})

    from_manifest = list(manifest_rows(f"s3://{bucket}/manifests/run.parquet"))
    crawled = list(crawled_rows(f"s3://{bucket}/docs"))

    assert from_manifest == [ManifestRow(position=1, uri=f"s3://{bucket}/docs/b.md", item_id="b")]
    assert [row.uri for row in crawled] == [f"s3://{bucket}/docs/a.txt", f"s3://{bucket}/docs/b.md"]
    assert isinstance(boto3.client("s3").head_bucket(Bucket=bucket), dict)


def test_an_s3_root_must_name_a_bucket() -> None:
    with pytest.raises(ValueError, match=re.escape("not an S3 prefix: 's3://'")):
        list(crawled_rows("s3://"))
