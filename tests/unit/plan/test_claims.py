"""Of the rows that claim one item id, the first in the manifest keeps it, whichever bucket of
the spill the id falls in; the others are ``duplicate_id`` rows naming the row that keeps it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tasks import schemas, spill
from tasks.corpus.manifest import ManifestRow
from tasks.corpus.resolve import resolved_items
from tasks.plan import buckets as corpus_buckets
from tasks.plan.claims import KeptBuckets, kept_claims
from tasks.records import Failure, Item

ROWS = [
    ManifestRow(1, "notes.txt", item_id="shared"),
    ManifestRow(2, "photo.png", item_id="shared"),
    ManifestRow(3, "notes.txt"),
    ManifestRow(4, "./docs/../notes.txt"),  # derives the same id, "notes.txt"
    ManifestRow(5, "missing.txt", item_id="ghost"),  # a failed row that keeps its id …
    ManifestRow(6, "photo.png", item_id="ghost"),  # … so this item is the duplicate
    ManifestRow(7, "", item_id="late"),  # refused before it claims its id …
    ManifestRow(8, "photo.png", item_id="late"),  # … so this row keeps it
    ManifestRow(9, "docs/report.pdf", item_id="shared"),
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "docs").mkdir(parents=True)
    (root / "notes.txt").write_text("field notes\n")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (root / "docs" / "report.pdf").write_bytes(b"%PDF-1.7\n" + bytes(64))
    return root


def _kept(corpus: Path, tmp_path: Path, spill_rows: int) -> tuple[list[str], list[Failure]]:
    """The manifest and the failed rows a plan records for ``ROWS``, spilled to one bucket or
    (``spill_rows`` below the row count) to 256."""
    passed: list[Failure] = []
    batches = corpus_buckets.corpus_batches(
        resolved_items(ROWS, str(corpus)), passed.append, batch_rows=2
    )
    scratch = tmp_path / f"spill-{spill_rows}"
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spill, "SPILL_ROWS", spill_rows)
        spilled = spill.spilled_buckets(batches, str(scratch), 8, corpus_buckets.CLAIMS)
    manifest: list[pa.Table] = []
    failures: list[pa.Table] = []
    kept = KeptBuckets(spilled, manifest.append, failures.append)
    returned = [kept.read(bucket)["item_id"] for bucket in range(1 << spilled.bits)]
    table = pa.concat_tables(manifest, promote_options="none") if manifest else None
    assert table is not None
    assert table.schema == schemas.MANIFEST
    assert sorted(table["item_id"].to_pylist()) == sorted(
        item_id for ids in returned for item_id in ids.to_pylist()
    )
    rows = [Failure(**row) for part in failures for row in part.to_pylist()] + passed
    return table["uri"].to_pylist(), sorted(rows, key=lambda failure: failure.message)


def _duplicate(item_id: str, first: int) -> str:
    return f"id '{item_id}' is already used by the row at position {first}; ids must be unique"


@pytest.mark.parametrize("spill_rows", [100, 1], ids=["one bucket", "256 buckets"])
def test_the_first_row_claiming_an_id_keeps_it(
    corpus: Path, tmp_path: Path, spill_rows: int
) -> None:
    uris, failures = _kept(corpus, tmp_path, spill_rows)

    notes, photo = str(corpus / "notes.txt"), str(corpus / "photo.png")
    assert sorted(uris) == sorted([notes, notes, photo])  # rows 1, 3 and 8
    assert [(f.item_id, f.code, f.message) for f in failures] == [
        ("ghost", "duplicate_id", _duplicate("ghost", 5)),
        ("notes.txt", "duplicate_id", _duplicate("notes.txt", 3)),
        ("shared", "duplicate_id", _duplicate("shared", 1)),
        ("shared", "duplicate_id", _duplicate("shared", 1)),
        ("ghost", "not_found", f"no file at {corpus / 'missing.txt'}"),
        ("late", "malformed_row", "the row's uri is empty"),
    ]
    assert {f.stage for f in failures} == {"manifest"}
    # A duplicate that resolved names the file it resolved to; one that did not, its row's URI.
    assert [f.uri for f in failures if f.code == "duplicate_id"] == [
        photo, notes, photo, str(corpus / "docs" / "report.pdf"),
    ]  # fmt: skip


def test_a_bucket_s_failures_come_in_manifest_order(corpus: Path, tmp_path: Path) -> None:
    passed: list[Failure] = []
    claims = pa.Table.from_batches(
        list(corpus_buckets.corpus_batches(resolved_items(ROWS, str(corpus)), passed.append))
    )
    items, failures = kept_claims(claims)

    assert items["item_id"].to_pylist() == ["shared", "notes.txt", "late"]
    assert failures.schema == schemas.FAILURES
    assert failures["item_id"].to_pylist() == ["shared", "notes.txt", "ghost", "ghost", "shared"]
    assert failures["code"].to_pylist() == [
        *["duplicate_id"] * 2,
        "not_found",
        *["duplicate_id"] * 2,
    ]


def test_items_from_no_manifest_row_claim_in_the_order_they_come() -> None:
    first, again = (
        Item("same", "/a", "text", "sha256:1", 1),
        Item("same", "/b", "text", "sha256:2", 1),
    )
    claims = pa.Table.from_batches(list(corpus_buckets.corpus_batches([first, again], [].append)))

    items, failures = kept_claims(claims)

    assert items["uri"].to_pylist() == ["/a"]
    assert failures["message"].to_pylist() == [_duplicate("same", 1)]
