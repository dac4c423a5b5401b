"""Reading an S3 Inventory report, without S3: manifest.json as documented, CSV, Parquet and
ORC data files built in code, and the rule that makes an inventory row the row a crawl yields."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from botocore.client import BaseClient
from botocore.stub import Stubber

from tasks.corpus.inventory import (
    InventoryEntry,
    InventoryError,
    InventoryFile,
    data_file_entries,
    entry_row,
    is_inventory_manifest,
    parsed_inventory_manifest,
    read_inventory_manifest,
)
from tasks.corpus.manifest import ManifestRow
from tasks.corpus.s3 import ListedObject, S3Prefix
from tasks.records import Failure

CSV_SCHEMA = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
    "StorageClass, IsMultipartUploaded, ReplicationStatus, EncryptionStatus, "
    "ObjectLockRetainUntilDate, ObjectLockMode, ObjectLockLegalHoldStatus, "
    "IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm"
)
CSV_COLUMNS = tuple(name.strip() for name in CSV_SCHEMA.split(","))
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional int64 size; optional binary e_tag (UTF8); }"
)


def documented_manifest(**changes: Any) -> dict[str, Any]:
    """The CSV example of the S3 User Guide's "Inventory manifest", with ``changes``."""
    manifest: dict[str, Any] = {
        "sourceBucket": "example-source-bucket",
        "destinationBucket": "arn:aws:s3:::example-inventory-destination-bucket",
        "version": "2016-11-30",
        "creationTimestamp": "1514944800000",
        "fileFormat": "CSV",
        "fileSchema": CSV_SCHEMA,
        "files": [
            {
                "key": "Inventory/example-source-bucket/2016-11-06T21-32Z/files/"
                "939c6d46-85a9-4ba8-87bd-9db705a579ce.csv.gz",
                "size": 2147483647,
                "MD5checksum": "f11166069f1990abeb9c97ace9cdfabc",
            }
        ],
    }
    manifest.update(changes)
    return {name: value for name, value in manifest.items() if value is not None}


def as_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=4).encode()


def offline_s3() -> BaseClient:
    """An S3 client that fails any call: reading a local report must make none."""
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    Stubber(client).activate()
    return client


def csv_line(key: str, **fields: str) -> list[str]:
    """One CSV inventory row in the documented column order; the key URL-encoded."""
    values = {
        "Bucket": "src",
        "Key": quote_plus(key, safe=""),
        "IsLatest": "true",
        "IsDeleteMarker": "false",
        "Size": "10",
        "LastModifiedDate": "2026-12-01T00:00:00.000Z",
        "ETag": "0123456789abcdef0123456789abcdef",
        "StorageClass": "STANDARD",
    }
    values.update(fields)
    return [values.get(column, "") for column in CSV_COLUMNS]


def gzipped_csv(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode())


def test_the_documented_csv_manifest_reads() -> None:
    inventory = parsed_inventory_manifest(as_bytes(documented_manifest()), "manifest.json")

    assert inventory.source_bucket == "example-source-bucket"
    assert inventory.destination_bucket == "example-inventory-destination-bucket"
    assert inventory.source_root == "s3://example-source-bucket/"
    assert (inventory.file_format, inventory.version) == ("CSV", "2016-11-30")
    assert inventory.created_at == datetime(2018, 1, 3, 2, 0, tzinfo=UTC)
    assert inventory.csv_columns[:3] == ("Bucket", "Key", "VersionId")
    (file,) = inventory.files
    assert file == InventoryFile(
        key="Inventory/example-source-bucket/2016-11-06T21-32Z/files/"
        "939c6d46-85a9-4ba8-87bd-9db705a579ce.csv.gz",
        size=2147483647,
        md5="f11166069f1990abeb9c97ace9cdfabc",
    )
    assert inventory.data_file_uri(file).startswith(
        "s3://example-inventory-destination-bucket/Inventory/"
    )


@pytest.mark.parametrize(
    ("given", "read"), [("Parquet", "Parquet"), ("ORC", "ORC"), ("csv", "CSV")]
)
def test_every_documented_format_is_accepted(given: str, read: str) -> None:
    content = as_bytes(documented_manifest(fileFormat=given, fileSchema=PARQUET_SCHEMA))
    if read == "CSV":
        content = as_bytes(documented_manifest(fileFormat=given))

    inventory = parsed_inventory_manifest(content, "m.json")

    assert inventory.file_format == read
    assert inventory.csv_columns == (() if read != "CSV" else CSV_COLUMNS)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (as_bytes(documented_manifest(fileSchema=None)), "it has no 'fileSchema'"),
        (as_bytes(documented_manifest(files=None, sourceBucket=None)), "'sourceBucket', 'files'"),
        (
            as_bytes(documented_manifest(fileFormat="Avro")),
            "'Avro' is not one of CSV, ORC, Parquet",
        ),
        (
            as_bytes(documented_manifest(destinationBucket="arn:aws:iam::123:role/x")),
            "is not an S3 bucket ARN",
        ),
        (as_bytes(documented_manifest(sourceBucket="")), "'sourceBucket' must be a non-empty"),
        (as_bytes(documented_manifest(files={"key": "a"})), "'files' must be a list"),
        (
            as_bytes(documented_manifest(files=[{"key": "a.csv.gz", "size": 3}])),
            "files[0] has no 'MD5checksum'",
        ),
        (
            as_bytes(
                documented_manifest(files=[{"key": "a", "size": -1, "MD5checksum": "0" * 32}])
            ),
            "files[0] 'size' must be a byte count",
        ),
        (
            as_bytes(documented_manifest(files=[{"key": "a", "size": 1, "MD5checksum": "abc"}])),
            "files[0] 'MD5checksum' must be 32 hex digits",
        ),
        (
            as_bytes(documented_manifest(creationTimestamp="yesterday")),
            "'creationTimestamp' must be epoch milliseconds",
        ),
        (as_bytes(documented_manifest(fileSchema="Bucket, Size, ETag")), "has no Key column"),
    ],
)
def test_a_bad_manifest_says_what_is_wrong(content: bytes, problem: str) -> None:
    with pytest.raises(InventoryError) as raised:
        parsed_inventory_manifest(content, "s3://dest/inv/manifest.json")

    message = str(raised.value)
    assert message.startswith("s3://dest/inv/manifest.json is not a valid S3 Inventory manifest")
    assert problem in message


def test_only_json_manifests_are_inventories() -> None:
    assert is_inventory_manifest("s3://dest/inventory/src/cfg/2026-12-01T01-00Z/manifest.json")
    assert is_inventory_manifest("/tmp/Manifest.JSON")
    assert not is_inventory_manifest("corpus.jsonl")
    assert not is_inventory_manifest("s3://dest/manifest.parquet")


def test_a_local_manifest_is_checked_against_its_checksum_file(tmp_path: Path) -> None:
    content = as_bytes(documented_manifest())
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(content)
    checksum = tmp_path / "manifest.checksum"

    checksum.write_text(hashlib.md5(content).hexdigest().upper() + "\n")
    assert read_inventory_manifest(str(manifest), offline_s3()).source_bucket == (
        "example-source-bucket"
    )

    checksum.write_text("0" * 32)
    with pytest.raises(InventoryError, match=r"has MD5 [0-9a-f]{32}, but its manifest.checksum"):
        read_inventory_manifest(str(manifest), offline_s3())

    checksum.unlink()  # no checksum file: nothing to check against
    assert read_inventory_manifest(str(manifest), offline_s3()).file_format == "CSV"
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_inventory_manifest(str(tmp_path / "absent" / "manifest.json"), offline_s3())


def test_csv_rows_decode_url_encoded_keys_and_quarantine_bad_lines(tmp_path: Path) -> None:
    data = tmp_path / "data.csv.gz"
    lines = [
        csv_line("docs/my report.txt"),
        csv_line("docs/c++ notes.txt", Size="7", ETag="abc"),
        csv_line("docs/café.md", IsLatest="", IsDeleteMarker=""),
        ["src", "docs%2Fshort.txt", "true"],
        csv_line("docs/size.txt", Size="ten"),
        csv_line("docs/flag.txt", IsLatest="maybe"),
        csv_line("docs/old.txt", IsLatest="false"),
        csv_line("", Key="bad%FF"),
    ]
    data.write_bytes(gzipped_csv(lines))

    entries = list(data_file_entries(str(data), "CSV", CSV_COLUMNS, "s3://dest/data.csv.gz"))

    assert entries[:3] == [
        InventoryEntry(
            "s3://dest/data.csv.gz line 1",
            "docs/my report.txt",
            "src",
            10,
            "0123456789abcdef0123456789abcdef",
            True,
            False,
        ),
        InventoryEntry(
            "s3://dest/data.csv.gz line 2", "docs/c++ notes.txt", "src", 7, "abc", True, False
        ),
        InventoryEntry(
            "s3://dest/data.csv.gz line 3",
            "docs/café.md",
            "src",
            10,
            "0123456789abcdef0123456789abcdef",
        ),
    ]
    failures = entries[3:6] + entries[7:]
    assert all(isinstance(failure, Failure) for failure in failures)
    assert [(f.code, f.uri, f.message) for f in failures if isinstance(f, Failure)] == [
        (
            "malformed_row",
            "",
            "s3://dest/data.csv.gz line 4: 3 fields, but the fileSchema has 18 columns",
        ),
        (
            "malformed_row",
            "s3://src/docs/size.txt",
            "s3://dest/data.csv.gz line 5: invalid literal for int() with base 10: 'ten'",
        ),
        (
            "malformed_row",
            "s3://src/docs/flag.txt",
            "s3://dest/data.csv.gz line 6: 'maybe' is neither true nor false",
        ),
        (
            "malformed_row",
            "",
            "s3://dest/data.csv.gz line 8: key 'bad%FF' is not URL-encoded UTF-8",
        ),
    ]
    old = entries[6]
    assert isinstance(old, InventoryEntry)
    assert old.is_latest is False


def test_an_uncompressed_csv_file_reads_too(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(gzip.decompress(gzipped_csv([csv_line("a.txt")])))

    (entry,) = data_file_entries(str(data), "CSV", CSV_COLUMNS, "data.csv")

    assert isinstance(entry, InventoryEntry)
    assert entry.key == "a.txt"


def columnar_table() -> pa.Table:
    """Rows in the documented ORC/Parquet columns; keys as they are, not URL-encoded."""
    rows = 2500  # several batches of DATA_BATCH_ROWS
    return pa.table(
        {
            "bucket": pa.array(["src"] * rows),
            "key": pa.array([f"docs/file {index:04d}+.txt" for index in range(rows)]),
            "version_id": pa.array([None] * rows, pa.string()),
            "is_latest": pa.array([True] * rows),
            "is_delete_marker": pa.array([index == 7 for index in range(rows)]),
            "size": pa.array([index + 1 for index in range(rows)], pa.int64()),
            "last_modified_date": pa.array(
                [datetime(2026, 12, 1, tzinfo=UTC)] * rows, pa.timestamp("ms")
            ),
            "e_tag": pa.array([f"{index:032x}" for index in range(rows)]),
            "storage_class": pa.array(["STANDARD"] * rows),
        }
    )


@pytest.mark.parametrize("file_format", ["Parquet", "ORC"])
def test_columnar_files_read_batch_by_batch(tmp_path: Path, file_format: str) -> None:
    data = tmp_path / "data"
    table = columnar_table()
    if file_format == "Parquet":
        pq.write_table(table, data, row_group_size=1000)
    else:
        orc.write_table(table, str(data), stripe_size=64 * 1024)

    entries = list(data_file_entries(str(data), file_format, (), "data"))  # type: ignore[arg-type]

    assert len(entries) == table.num_rows
    assert entries[0] == InventoryEntry(
        "data row 1", "docs/file 0000+.txt", "src", 1, f"{0:032x}", True, False
    )
    assert entries[-1] == InventoryEntry(
        "data row 2500", "docs/file 2499+.txt", "src", 2500, f"{2499:032x}", True, False
    )
    marker = entries[7]
    assert isinstance(marker, InventoryEntry)
    assert marker.is_delete_marker


def test_a_columnar_file_without_keys_or_of_another_format_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"bucket": ["src"], "size": [1]}), data)
    with pytest.raises(InventoryError, match=r"data.parquet has no 'key' column"):
        list(data_file_entries(str(data), "Parquet", (), "data.parquet"))
    with pytest.raises(
        InventoryError, match=r"cannot read inventory data file data.parquet as ORC"
    ):
        list(data_file_entries(str(data), "ORC", (), "data.parquet"))


ROOT = S3Prefix.of("s3://src/")


@pytest.mark.parametrize(
    ("entry", "root", "expected"),
    [
        (
            InventoryEntry("f line 1", "docs/a.txt", "src", 6, "abc"),
            ROOT,
            ListedObject(position=4, uri="s3://src/docs/a.txt", etag="abc", size_bytes=6),
        ),
        (
            InventoryEntry("f line 1", "docs/a.txt", None, None, "abc"),
            ROOT,
            ManifestRow(position=4, uri="s3://src/docs/a.txt"),
        ),
        (InventoryEntry("f line 1", "docs/a.txt", "src", 6, "abc", is_latest=False), ROOT, None),
        (
            InventoryEntry("f line 1", "docs/a.txt", "src", None, None, is_delete_marker=True),
            ROOT,
            None,
        ),
        (InventoryEntry("f line 1", "docs/folder/", "src", 0, "abc"), ROOT, None),
        (InventoryEntry("f line 1", "docs/.cache/a.txt", "src", 6, "abc"), ROOT, None),
        (
            InventoryEntry("f line 1", "docs-old/a.txt", "src", 6, "abc"),
            S3Prefix.of("s3://src/docs"),
            None,
        ),
        (
            InventoryEntry("f line 1", "docs/a.txt", "src", 6, "abc"),
            S3Prefix.of("s3://src/docs"),
            ListedObject(position=4, uri="s3://src/docs/a.txt", etag="abc", size_bytes=6),
        ),
        (
            InventoryEntry("f line 9", "a.txt", "other", 6, "abc"),
            ROOT,
            Failure(
                item_id="",
                uri="s3://other/a.txt",
                stage="manifest",
                code="malformed_row",
                message="f line 9: lists bucket 'other', but the inventory is of 'src'",
            ),
        ),
    ],
)
def test_an_entry_becomes_the_row_a_crawl_would_yield(
    entry: InventoryEntry, root: S3Prefix, expected: ManifestRow | Failure | None
) -> None:
    assert entry_row(entry, root, 4) == expected
