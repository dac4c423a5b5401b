"""An S3 Inventory report as the corpus manifest, against the stand-in's S3 (moto): a report in
the documented layout (manifest.json, manifest.checksum, CSV/Parquet/ORC data files) built from
a listing of the source bucket plans the same items as a crawl of that bucket."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from botocore.client import BaseClient

from emulator.app import Emulator
from tasks.corpus.inventory import InventoryError
from tasks.corpus.resolve import manifest_directory, manifest_rows
from tasks.corpus.source import CorpusSource, corpus_items
from tasks.demo.sample_media import sample_image
from tasks.records import Failure, Item

CSV_SCHEMA = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"
)
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional binary version_id (UTF8); optional boolean is_latest; "
    "optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); "
    "optional binary storage_class (UTF8); }"
)
ORC_SCHEMA = (
    "struct<bucket:string,key:string,version_id:string,is_latest:boolean,"
    "is_delete_marker:boolean,size:bigint,last_modified_date:timestamp,e_tag:string,"
    "storage_class:string>"
)
FORMATS = ("CSV", "Parquet", "ORC")
REPORT = "inventory/{source}/nightly/2026-12-01T01-00Z"

Record = dict[str, Any]


@pytest.fixture
def buckets(s3: BaseClient, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A fresh source bucket holding a small corpus, and a destination bucket for its reports."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    source, destination = f"inv-src-{digest}", f"inv-dst-{digest}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=destination)
    objects = {
        "docs/a.txt": b"alpha\n",
        "docs/notes/b.md": b"# beta\n",
        "docs/my report.txt": b"a key with a space\n",
        "docs/c++ & more.txt": b"a key with a plus\n",
        "docs/caf\u00e9.txt": b"a key that is not ASCII\n",
        "docs/.hidden.txt": b"hidden\n",
        "docs/folder/": b"",
        "docs/empty.txt": b"",
        "docs-old/c.txt": b"another prefix\n",
        "images/photo.png": sample_image(4, "png"),
        "blobs/no-extension": b"Plain words with no extension say this is text.\n",
    }
    for key, body in objects.items():
        s3.put_object(Bucket=source, Key=key, Body=body)
    return source, destination


def listed_records(s3: BaseClient, bucket: str) -> list[Record]:
    """What S3 Inventory reports for each current object: read from a listing of the bucket."""
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            records.append(
                {
                    "bucket": bucket,
                    "key": listed["Key"],
                    "version_id": None,
                    "is_latest": True,
                    "is_delete_marker": False,
                    "size": listed["Size"],
                    "last_modified_date": listed["LastModified"],
                    "e_tag": listed["ETag"].strip('"'),
                    "storage_class": "STANDARD",
                }
            )
    return records


def older_versions(bucket: str) -> list[Record]:
    """Rows of a report that lists all versions: a replaced version and a deleted object."""
    base = {"bucket": bucket, "storage_class": "STANDARD", "last_modified_date": None}
    return [
        {**base, "key": "docs/a.txt", "version_id": "v0", "is_latest": False,
         "is_delete_marker": False, "size": 3, "e_tag": "0" * 32},
        {**base, "key": "docs/deleted.txt", "version_id": "v2", "is_latest": True,
         "is_delete_marker": True, "size": None, "e_tag": None},
        {**base, "key": "docs/deleted.txt", "version_id": "v1", "is_latest": False,
         "is_delete_marker": False, "size": 9, "e_tag": "1" * 32},
    ]  # fmt: skip


def data_file(file_format: str, records: list[Record]) -> bytes:
    """One data file as S3 Inventory writes it."""
    if file_format == "CSV":
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for record in records:
            modified = record["last_modified_date"]
            writer.writerow(
                [
                    record["bucket"],
                    quote_plus(record["key"], safe=""),  # keys are URL-encoded in CSV
                    record["version_id"] or "",
                    str(record["is_latest"]).lower(),
                    str(record["is_delete_marker"]).lower(),
                    "" if record["size"] is None else str(record["size"]),
                    "" if modified is None else modified.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    record["e_tag"] or "",
                    record["storage_class"],
                ]
            )
        return gzip.compress(text.getvalue().encode())
    table = pa.Table.from_pylist(
        records,
        pa.schema(
            [
                ("bucket", pa.string()),
                ("key", pa.string()),
                ("version_id", pa.string()),
                ("is_latest", pa.bool_()),
                ("is_delete_marker", pa.bool_()),
                ("size", pa.int64()),
                ("last_modified_date", pa.timestamp("ms", tz="UTC")),
                ("e_tag", pa.string()),
                ("storage_class", pa.string()),
            ]
        ),
    )
    sink = pa.BufferOutputStream()
    if file_format == "Parquet":
        pq.write_table(table, sink, compression="snappy")
    else:
        orc.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def publish(
    s3: BaseClient,
    source: str,
    destination: str,
    file_format: str,
    records: list[Record],
    files: int = 2,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Writes a report of ``records`` in ``files`` data files to the destination bucket in the
    documented layout, and returns its manifest.json's URI. ``edit`` may change the manifest
    before it is written (with its checksum)."""
    report = REPORT.format(source=source)
    extension = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[file_format]
    listed = []
    for number in range(files):
        body = data_file(file_format, records[number::files])
        key = f"inventory/{source}/nightly/data/part-{number:04d}.{extension}"
        s3.put_object(Bucket=destination, Key=key, Body=body)
        listed.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
    schema = {"CSV": CSV_SCHEMA, "Parquet": PARQUET_SCHEMA, "ORC": ORC_SCHEMA}[file_format]
    manifest = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{destination}",
        "version": "2016-11-30",
        "creationTimestamp": "1796086800000",
        "fileFormat": file_format,
        "fileSchema": schema,
        "files": listed,
    }
    if edit is not None:
        edit(manifest)
    content = json.dumps(manifest, indent=4).encode()
    s3.put_object(Bucket=destination, Key=f"{report}/manifest.json", Body=content)
    checksum = hashlib.md5(content).hexdigest().encode()
    s3.put_object(Bucket=destination, Key=f"{report}/manifest.checksum", Body=checksum)
    return f"s3://{destination}/{report}/manifest.json"


def by_id(results: Iterable[Item | Failure]) -> list[Item | Failure]:
    return sorted(results, key=lambda result: (result.item_id, result.uri))


def head_requests(client: BaseClient) -> list[str]:
    keys: list[str] = []
    client.meta.events.register(
        "provide-client-params.s3.HeadObject", lambda params, **_: keys.append(params["Key"])
    )
    return keys


@pytest.mark.parametrize("file_format", FORMATS)
def test_an_inventory_plans_the_items_a_crawl_of_its_bucket_plans(
    s3: BaseClient, buckets: tuple[str, str], file_format: str
) -> None:
    source, destination = buckets
    records = listed_records(s3, source) + older_versions(source)
    manifest = publish(s3, source, destination, file_format, records)
    crawled = by_id(corpus_items(CorpusSource(corpus=f"s3://{source}/"), s3))
    heads = head_requests(s3)

    from_inventory = by_id(corpus_items(CorpusSource(manifest=manifest), s3))

    assert from_inventory == crawled
    items = [result for result in from_inventory if isinstance(result, Item)]
    assert {item.item_id for item in items} == {
        "blobs/no-extension",
        "docs-old/c.txt",
        "docs/a.txt",
        "docs/c++ & more.txt",
        "docs/caf\u00e9.txt",
        "docs/my report.txt",
        "docs/notes/b.md",
        "images/photo.png",
    }
    (empty,) = [result for result in from_inventory if isinstance(result, Failure)]
    assert (empty.item_id, empty.code) == ("docs/empty.txt", "empty_file")
    assert heads == []  # the report's ETag and size sufficed, as the listing's do


@pytest.mark.parametrize("file_format", ["CSV", "Parquet"])
def test_a_root_under_the_source_bucket_keeps_only_its_prefix(
    s3: BaseClient, buckets: tuple[str, str], file_format: str
) -> None:
    source, destination = buckets
    manifest = publish(s3, source, destination, file_format, listed_records(s3, source))

    from_inventory = by_id(
        corpus_items(CorpusSource(manifest=manifest, root=f"s3://{source}/docs"), s3)
    )

    assert from_inventory == by_id(corpus_items(CorpusSource(corpus=f"s3://{source}/docs"), s3))
    assert "notes/b.md" in {result.item_id for result in from_inventory}
    with pytest.raises(ValueError, match=f"is not in bucket '{source}'"):
        corpus_items(CorpusSource(manifest=manifest, root=f"s3://{destination}/"), s3)


def test_a_local_copy_of_the_manifest_reads_its_data_files_from_s3(
    s3: BaseClient, buckets: tuple[str, str], tmp_path: Any
) -> None:
    source, destination = buckets
    manifest = publish(s3, source, destination, "CSV", listed_records(s3, source))
    bucket, _, key = manifest[len("s3://") :].partition("/")
    local = tmp_path / "manifest.json"
    local.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    from_local = by_id(corpus_items(CorpusSource(manifest=str(local)), s3))

    assert from_local == by_id(corpus_items(CorpusSource(corpus=f"s3://{source}/"), s3))


def test_a_malformed_data_row_is_quarantined_and_the_others_resolve(
    s3: BaseClient, buckets: tuple[str, str]
) -> None:
    source, destination = buckets
    records = [r for r in listed_records(s3, source) if r["key"] in ("docs/a.txt", "docs/x")]
    body = gzip.decompress(data_file("CSV", records)) + b'"other-bucket","docs%2Fz.txt"\n'
    s3.put_object(Bucket=destination, Key="data/part.csv.gz", Body=gzip.compress(body))

    def point_at_the_file(manifest: dict[str, Any]) -> None:
        gz = s3.get_object(Bucket=destination, Key="data/part.csv.gz")["Body"].read()
        manifest["files"] = [
            {"key": "data/part.csv.gz", "size": len(gz), "MD5checksum": hashlib.md5(gz).hexdigest()}
        ]

    manifest = publish(s3, source, destination, "CSV", [], files=0, edit=point_at_the_file)

    results = list(corpus_items(CorpusSource(manifest=manifest), s3))

    assert [type(result).__name__ for result in results] == ["Item", "Failure"]
    item, failure = results
    assert isinstance(item, Item)
    assert item.item_id == "docs/a.txt"
    assert isinstance(failure, Failure)
    assert (failure.stage, failure.code) == ("manifest", "malformed_row")
    assert failure.message == (
        f"s3://{destination}/data/part.csv.gz line 2: 2 fields, but the fileSchema has 9 columns"
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda manifest: manifest["files"][1].update(MD5checksum="0" * 32),
            r"part-0001.csv.gz has MD5 [0-9a-f]{32}, but .*manifest.json says 0{32}",
        ),
        (
            lambda manifest: manifest["files"][1].update(size=manifest["files"][1]["size"] + 1),
            r"part-0001.csv.gz is \d+ bytes, but .*manifest.json says \d+",
        ),
        (
            lambda manifest: manifest["files"][1].update(key="inventory/gone.csv.gz"),
            r"inventory/gone.csv.gz, listed in .*manifest.json, does not exist",
        ),
    ],
)
def test_a_data_file_that_is_not_what_the_manifest_says_stops_the_run(
    s3: BaseClient,
    buckets: tuple[str, str],
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    source, destination = buckets
    manifest = publish(s3, source, destination, "CSV", listed_records(s3, source), edit=edit)

    with pytest.raises(InventoryError, match=message):
        list(corpus_items(CorpusSource(manifest=manifest), s3))


def test_a_bad_or_damaged_manifest_stops_the_run_at_once(
    s3: BaseClient, buckets: tuple[str, str]
) -> None:
    source, destination = buckets
    manifest = publish(
        s3, source, destination, "CSV", [], files=0, edit=lambda m: m.pop("fileSchema")
    )
    with pytest.raises(InventoryError, match="is not a valid S3 Inventory manifest: it has no"):
        corpus_items(CorpusSource(manifest=manifest), s3)

    manifest = publish(s3, source, destination, "CSV", [], files=0)
    report = REPORT.format(source=source)
    s3.put_object(Bucket=destination, Key=f"{report}/manifest.checksum", Body=b"0" * 32)
    with pytest.raises(InventoryError, match=r"but its manifest\.checksum says 0{32}"):
        corpus_items(CorpusSource(manifest=manifest), s3)

    with pytest.raises(FileNotFoundError, match="manifest not found"):
        corpus_items(CorpusSource(manifest=f"s3://{destination}/absent/manifest.json"), s3)


def test_an_empty_report_lists_no_rows(s3: BaseClient, buckets: tuple[str, str]) -> None:
    source, destination = buckets
    manifest = publish(s3, source, destination, "Parquet", [], files=0)

    assert list(corpus_items(CorpusSource(manifest=manifest), s3)) == []


def test_the_resolver_entry_points_route_an_inventory(
    stand_in: Emulator,
    s3: BaseClient,
    buckets: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backfill reads its manifest through these, with the AWS variables and no client.
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    source, destination = buckets
    manifest = publish(s3, source, destination, "Parquet", listed_records(s3, source))

    rows = list(manifest_rows(manifest))

    assert manifest_directory(manifest) == f"s3://{source}/"
    assert [row.position for row in rows] == list(range(1, len(rows) + 1))
    assert sorted(row.uri for row in rows) == sorted(
        f"s3://{source}/{key}"
        for key in (
            "blobs/no-extension",
            "docs-old/c.txt",
            "docs/a.txt",
            "docs/c++ & more.txt",
            "docs/caf\u00e9.txt",
            "docs/empty.txt",
            "docs/my report.txt",
            "docs/notes/b.md",
            "images/photo.png",
        )
    )
