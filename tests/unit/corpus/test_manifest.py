"""Reading manifests: every format states the same rows, and a bad row is quarantined in place."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.corpus import manifest as corpus_manifest
from tasks.corpus.resolve import ManifestRow, manifest_rows
from tasks.records import Failure

ENTRIES: list[dict[str, Any]] = [
    {
        "uri": "docs/report.pdf",
        "id": "report",
        "modality": "pdf",
        "metadata": {"team": "search", "year": 2024},
        "encoding": None,
    },
    {"uri": "notes.txt", "id": None, "modality": None, "metadata": None, "encoding": "latin-1"},
    {
        "uri": "s3://corpus/a b.png",
        "id": None,
        "modality": None,
        "metadata": None,
        "encoding": None,
    },
]


def jsonl_manifest(path: Path, entries: Sequence[dict[str, Any]]) -> Path:
    lines = [json.dumps({k: v for k, v in entry.items() if v is not None}) for entry in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def csv_manifest(path: Path, entries: Sequence[dict[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["uri", "id", "modality", "metadata", "encoding"])
    for entry in entries:
        metadata = entry["metadata"]
        writer.writerow(
            [
                entry["uri"],
                entry["id"] or "",
                entry["modality"] or "",
                json.dumps(metadata) if metadata is not None else "",
                entry["encoding"] or "",
            ]
        )
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def parquet_manifest(path: Path, entries: Sequence[dict[str, Any]]) -> Path:
    records = [
        {**entry, "metadata": json.dumps(entry["metadata"]) if entry["metadata"] else None}
        for entry in entries
    ]
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def failures(results: list[ManifestRow | Failure]) -> list[Failure]:
    return [result for result in results if isinstance(result, Failure)]


def rows(results: list[ManifestRow | Failure]) -> list[ManifestRow]:
    return [result for result in results if isinstance(result, ManifestRow)]


@pytest.mark.parametrize(
    ("suffix", "write", "positions"),
    [
        (".jsonl", jsonl_manifest, [1, 2, 3]),
        (".ndjson", jsonl_manifest, [1, 2, 3]),
        (".csv", csv_manifest, [2, 3, 4]),  # line numbers: the header is line 1
        (".parquet", parquet_manifest, [1, 2, 3]),
    ],
)
def test_every_format_states_the_same_rows(
    tmp_path: Path, suffix: str, write: Any, positions: list[int]
) -> None:
    manifest = write(tmp_path / f"manifest{suffix}", ENTRIES)

    results = list(manifest_rows(str(manifest)))

    assert all(isinstance(result, ManifestRow) for result in results)
    assert [row.position for row in results] == positions
    assert [row.uri for row in results] == [entry["uri"] for entry in ENTRIES]
    assert [row.item_id for row in results] == ["report", None, None]
    assert [row.modality for row in results] == ["pdf", None, None]
    assert [row.encoding for row in results] == [None, "latin-1", None]
    assert json.loads(results[0].metadata_json) == {"team": "search", "year": 2024}
    assert [row.metadata_json for row in results[1:]] == [None, None]


def test_jsonl_bad_lines_are_quarantined_and_the_rest_read(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    lines = [
        b'{"uri": "a.txt"}',
        b'{"uri": "b.txt", ',
        b"[1, 2]",
        b'{"id": "c"}',
        b'{"uri": 7}',
        b'{"uri": "d.txt", "id": 12}',
        b"",
        b'{"uri": "caf\xe9.txt"}',
        b'{"uri": "e.txt", "id": "e", "item_id": "f"}',
        b'{"uri": ""}',
        b'{"uri": "g.txt", "metadata": {"k": [1, 2]}, "modality": "text"}',
    ]
    manifest.write_bytes(b"\n".join(lines))

    results = list(manifest_rows(str(manifest)))

    assert [(row.position, row.uri) for row in rows(results)] == [(1, "a.txt"), (11, "g.txt")]
    assert rows(results)[1].metadata_json == '{"k": [1, 2]}'
    quarantined = failures(results)
    assert {failure.code for failure in quarantined} == {"malformed_row"}
    assert {failure.stage for failure in quarantined} == {"manifest"}
    assert [failure.message for failure in quarantined] == [
        "line 2: invalid JSON: Expecting property name enclosed in double quotes (column 18)",
        "line 3: expected a JSON object, got array",
        "line 4: no 'uri'",
        "line 5: 'uri' must be a string, got number",
        "line 6: 'id' must be a string, got number",
        "line 8: not valid UTF-8 (byte 12: invalid continuation byte)",
        "line 9: both 'id' and 'item_id' are given; use one",
        "line 10: 'uri' is empty",
    ]
    # What the row did say is kept, so the failure can be traced to it.
    assert (quarantined[2].uri, quarantined[2].item_id) == ("", "c")
    assert (quarantined[4].uri, quarantined[4].item_id) == ("d.txt", "")


def test_jsonl_byte_order_mark_and_crlf_are_accepted(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(b'\xef\xbb\xbf{"uri": "a.txt"}\r\n{"uri": "b.txt"}\r\n')

    assert [row.uri for row in rows(list(manifest_rows(str(manifest))))] == ["a.txt", "b.txt"]


def test_an_over_long_line_is_quarantined_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_manifest, "MAX_LINE_BYTES", 64)
    manifest = tmp_path / "manifest.jsonl"
    long_line = json.dumps({"uri": "big.txt", "metadata": {"text": "x" * 500}})
    manifest.write_text(f'{{"uri": "a.txt"}}\n{long_line}\n{{"uri": "b.txt"}}\n')

    results = list(manifest_rows(str(manifest)))

    assert [row.uri for row in rows(results)] == ["a.txt", "b.txt"]
    assert [failure.message for failure in failures(results)] == [
        "line 2: longer than 64 bytes; not read"
    ]


def test_csv_bad_rows_are_quarantined_with_their_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(
        b"uri,id,metadata,notes\n"
        b"a.txt,a,,\n"
        b"b.txt,b\n"
        b'"multi\nline.txt",m,"{""k"": 1}",spans two lines\n'
        b"\n"
        b"c\xff.txt,c,,\n"
        b"d.txt,d,,too,many\n"
        b"e.txt,,,\n"
    )

    results = list(manifest_rows(str(manifest)))

    assert [(row.position, row.uri, row.item_id) for row in rows(results)] == [
        (2, "a.txt", "a"),
        (4, "multi\nline.txt", "m"),
        (9, "e.txt", None),
    ]
    assert rows(results)[1].metadata_json == '{"k": 1}'
    assert [(failure.code, failure.message) for failure in failures(results)] == [
        ("malformed_row", "line 3: 2 fields, but the header has 4 columns"),
        ("malformed_row", "line 7: not valid UTF-8"),
        ("malformed_row", "line 8: 5 fields, but the header has 4 columns"),
    ]


def test_csv_without_a_uri_column_is_refused_whole(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,id\na.txt,a\n")

    with pytest.raises(ValueError, match="has no 'uri' column"):
        list(manifest_rows(str(manifest)))


def test_parquet_values_of_the_wrong_type_are_quarantined(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    table = pa.table(
        {
            "uri": ["a.txt", "b.txt", None],
            "id": pa.array([1, None, 3], pa.int64()),
            "metadata": pa.array([None, {"lang": "en"}, None], pa.struct([("lang", pa.string())])),
            "extra": ["ignored", "ignored", "ignored"],
        }
    )
    pq.write_table(table, manifest)

    results = list(manifest_rows(str(manifest)))

    assert [(failure.message, failure.uri) for failure in failures(results)] == [
        ("row 1: 'id' must be a string, got number", "a.txt"),
        ("row 3: no 'uri'", ""),
    ]
    (row,) = rows(results)
    assert (row.position, row.uri, json.loads(row.metadata_json or "")) == (
        2,
        "b.txt",
        {"lang": "en"},
    )


def test_a_resolved_manifest_reads_back_in(tmp_path: Path) -> None:
    manifest = tmp_path / "resolved.parquet"
    pq.write_table(
        pa.table({"item_id": ["x"], "uri": ["/data/x.txt"], "metadata_json": ['{"a":1}']}),
        manifest,
    )

    assert list(manifest_rows(str(manifest))) == [
        ManifestRow(position=1, uri="/data/x.txt", item_id="x", metadata_json='{"a":1}')
    ]


def test_a_missing_or_unknown_manifest_stops_the_run(tmp_path: Path) -> None:
    # Read as "no rows", either would look like an empty corpus and empty the index.
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        list(manifest_rows(str(tmp_path / "absent.jsonl")))
    (tmp_path / "manifest.xlsx").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"extension must be one of \.jsonl, \.ndjson"):
        list(manifest_rows(str(tmp_path / "manifest.xlsx")))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_text_manifests_are_read_a_line_at_a_time(tmp_path: Path, suffix: str) -> None:
    count = 200_000
    manifest = tmp_path / f"big{suffix}"
    if suffix == ".jsonl":
        body = "".join(f'{{"uri": "docs/file-{n:06d}.txt"}}\n' for n in range(count))
    else:
        body = "uri\n" + "".join(f"docs/file-{n:06d}.txt\n" for n in range(count))
    manifest.write_text(body)

    tracemalloc.start()
    try:
        reading = manifest_rows(str(manifest))
        first = list(islice(reading, 5))
        _, peak = tracemalloc.get_traced_memory()
        reading.close()
    finally:
        tracemalloc.stop()

    assert [row.uri for row in first] == [f"docs/file-{n:06d}.txt" for n in range(5)]
    assert peak < manifest.stat().st_size / 2  # the read buffer, not the file


def test_parquet_manifests_are_read_a_batch_at_a_time(tmp_path: Path) -> None:
    count = 300_000
    manifest = tmp_path / "big.parquet"
    uris = [f"docs/file-{n:06d}.txt" for n in range(count)]
    pq.write_table(pa.table({"uri": uris}), manifest, row_group_size=10_000)
    baseline = pa.total_allocated_bytes()

    reading = manifest_rows(str(manifest))
    first = list(islice(reading, 3))
    held = pa.total_allocated_bytes() - baseline  # while the reader is open, mid-file
    reading.close()

    assert [row.uri for row in first] == uris[:3]
    assert held < manifest.stat().st_size / 2  # one row group, not the file
