"""Resolving local rows into Items: ids, fingerprints, the corpus root, and one specific Failure
for every way a row can be wrong."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from tasks.corpus import local as corpus_local
from tasks.corpus.resolve import (
    ManifestRow,
    crawled_rows,
    manifest_directory,
    manifest_rows,
    resolved_items,
)
from tasks.demo.sample_media import sample_image
from tasks.records import Failure, Item

RUNNING_AS_ROOT = os.geteuid() == 0


def tiny_pdf() -> bytes:
    document = pymupdf.open()
    document.new_page()
    return document.tobytes()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A corpus directory with a sibling directory outside it that holds a secret."""
    root = tmp_path / "corpus"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.pdf").write_bytes(tiny_pdf())
    (root / "notes.txt").write_text("Meeting notes: ship the index on Friday.\n")
    (root / "photo.png").write_bytes(sample_image(3, "png"))
    (root / "empty.txt").write_bytes(b"")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the index\n")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    return root


def resolved(rows: list[ManifestRow], root: Path | str | None) -> list[Item | Failure]:
    return list(resolved_items(rows, None if root is None else str(root)))


def only(rows: list[ManifestRow], root: Path | str | None) -> Item | Failure:
    (result,) = resolved(rows, root)
    return result


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_manifest_resolves_to_items(corpus: Path) -> None:
    manifest = corpus / "manifest.jsonl"
    entries: list[dict[str, Any]] = [
        {"uri": "docs/report.pdf", "metadata": {"year": 2024, "team": "search"}},
        {"uri": "notes.txt", "id": "notes", "encoding": "UTF8"},
        {"uri": str(corpus / "photo.png"), "modality": "IMAGE"},
    ]
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))

    items = list(resolved_items(manifest_rows(str(manifest)), manifest_directory(str(manifest))))

    real = corpus.resolve()
    assert items == [
        Item(
            item_id="docs/report.pdf",
            uri=str(real / "docs" / "report.pdf"),
            modality="pdf",
            fingerprint=sha256_of(corpus / "docs" / "report.pdf"),
            size_bytes=(corpus / "docs" / "report.pdf").stat().st_size,
            metadata_json='{"team":"search","year":2024}',
        ),
        Item(
            item_id="notes",
            uri=str(real / "notes.txt"),
            modality="text",
            fingerprint=sha256_of(corpus / "notes.txt"),
            size_bytes=41,
            encoding="utf-8",
        ),
        Item(
            item_id="photo.png",
            uri=str(real / "photo.png"),
            modality="image",
            fingerprint=sha256_of(corpus / "photo.png"),
            size_bytes=(corpus / "photo.png").stat().st_size,
        ),
    ]


@pytest.mark.parametrize(
    ("row", "code", "message"),
    [
        (ManifestRow(1, "notes.txt", item_id="a#b"), "malformed_row", "id 'a#b' contains '#'"),
        (ManifestRow(1, "notes.txt", item_id=""), "malformed_row", "id '' is empty"),
        (
            ManifestRow(1, "notes.txt", item_id="x" * 901),
            "malformed_row",
            "is 901 characters long: ids must be 1–900 characters",
        ),
        (ManifestRow(1, ""), "malformed_row", "the row's uri is empty"),
        (ManifestRow(1, "https://example.com/a.txt"), "malformed_row", "unsupported URI"),
        (
            ManifestRow(1, "notes.txt", encoding="klingon"),
            "malformed_row",
            "encoding 'klingon' is not a known text encoding",
        ),
        (
            ManifestRow(1, "notes.txt", encoding="base64"),
            "malformed_row",
            "encoding 'base64' is not a known text encoding",
        ),
        (
            ManifestRow(1, "notes.txt", metadata_json="[1, 2]"),
            "bad_metadata",
            "metadata must be a JSON object, got array",
        ),
        (
            ManifestRow(1, "notes.txt", metadata_json="{'a': 1}"),
            "bad_metadata",
            "metadata is not valid JSON: Expecting property name",
        ),
        (
            ManifestRow(1, "notes.txt", metadata_json='{"score": NaN}'),
            "bad_metadata",
            "NaN is not a JSON value",
        ),
        (
            ManifestRow(1, "notes.txt", modality="hologram"),
            "unknown_modality",
            "modality 'hologram' is not one of text, pdf, image, audio, video",
        ),
        (ManifestRow(1, "missing.pdf"), "not_found", "no file at {root}/missing.pdf"),
        (ManifestRow(1, "empty.txt"), "empty_file", "{root}/empty.txt is empty (0 bytes)"),
        (
            ManifestRow(1, "blob.bin"),
            "unsupported_type",
            "cannot tell what {root}/blob.bin holds: extension .bin is not a known media type "
            "and its first bytes match no known format; declare its 'modality'",
        ),
        (ManifestRow(1, "docs"), "unsupported_type", "{root}/docs is a directory, not a file"),
    ],
)
def test_each_bad_row_gets_its_own_code_and_message(
    corpus: Path, row: ManifestRow, code: str, message: str
) -> None:
    failure = only([row], corpus)

    assert isinstance(failure, Failure)
    assert (failure.stage, failure.code, failure.uri) == ("manifest", code, row.uri)
    assert message.format(root=corpus.resolve()) in failure.message


@pytest.mark.parametrize(
    "uri",
    [
        "../outside/secret.txt",
        "docs/../../outside/secret.txt",
        "../../../../../../etc/passwd",
        "{tmp}/outside/secret.txt",
        "escape.txt",  # a link inside the root to a file outside it
        "file://{tmp}/outside/secret.txt",
    ],
)
def test_paths_that_leave_the_root_are_refused(corpus: Path, uri: str) -> None:
    given = uri.format(tmp=corpus.parent)

    failure = only([ManifestRow(1, given)], corpus)

    assert isinstance(failure, Failure)
    assert failure.code == "outside_root"
    assert failure.uri == given
    assert f"outside the corpus root {corpus.resolve()}" in failure.message


def test_a_link_that_stays_inside_the_root_is_followed(corpus: Path) -> None:
    (corpus / "latest.pdf").symlink_to(corpus / "docs" / "report.pdf")

    item = only([ManifestRow(1, "latest.pdf")], corpus)

    # The id is the name the corpus gives it; the uri and content are the target's.
    assert isinstance(item, Item)
    assert item.item_id == "latest.pdf"
    assert item.uri == str((corpus / "docs" / "report.pdf").resolve())
    assert item.fingerprint == sha256_of(corpus / "docs" / "report.pdf")


def test_rows_repeating_an_id_each_resolve_and_say_where_they_claimed_it(corpus: Path) -> None:
    # Which of them keeps the id is the plan's to decide (tests/unit/plan/test_claims.py).
    rows = [
        ManifestRow(1, "notes.txt", item_id="shared"),
        ManifestRow(2, "photo.png", item_id="shared"),
        ManifestRow(3, "notes.txt"),
        ManifestRow(4, "./docs/../notes.txt"),  # derives the same id, "notes.txt"
        ManifestRow(5, "missing.txt", item_id="shared"),  # claims its id, then fails
        ManifestRow(6, "missing.txt"),  # a derived id is claimed once its path resolves …
        ManifestRow(7, "../elsewhere.txt"),  # … so one that does not claims nothing
        ManifestRow(8, "", item_id="shared"),  # refused before it claims anything
    ]

    results = resolved(rows, corpus)

    assert [
        (type(result).__name__, result.item_id, getattr(result, "code", None)) for result in results
    ] == [
        ("Item", "shared", None),
        ("Item", "shared", None),
        ("Item", "notes.txt", None),
        ("Item", "notes.txt", None),
        ("Failure", "shared", "not_found"),
        ("Failure", "missing.txt", "not_found"),
        ("Failure", "", "outside_root"),
        ("Failure", "shared", "malformed_row"),
    ]
    claims = [
        result.position if isinstance(result, Item) else result.claimed_at for result in results
    ]
    assert claims == [1, 2, 3, 4, 5, 6, 0, 0]


def test_a_derived_id_that_cannot_be_a_key_asks_for_an_explicit_id(corpus: Path) -> None:
    (corpus / "c#sharp.txt").write_text("notes on C#\n")

    failure = only([ManifestRow(1, "c#sharp.txt")], corpus)
    item = only([ManifestRow(1, "c#sharp.txt", item_id="c-sharp")], corpus)

    assert isinstance(failure, Failure)
    assert (failure.code, failure.item_id) == ("malformed_row", "")
    assert failure.message == (
        "the id derived from its path, 'c#sharp.txt', contains '#', which is reserved to "
        "separate an item id from its unit; give the row an explicit 'id'"
    )
    assert isinstance(item, Item)
    assert item.item_id == "c-sharp"


def test_names_the_checkpoints_could_not_store_are_refused(corpus: Path) -> None:
    # A file name that is not UTF-8 (Linux allows any bytes) and a path with a NUL in it.
    with open(os.fsencode(corpus) + b"/caf\xe9.txt", "wb") as handle:
        handle.write(b"latin-1 name\n")
    crawled = [row for row in crawled_rows(str(corpus)) if "caf" in row.uri]

    bad_name, nul = resolved([*crawled, ManifestRow(2, "notes\x00.txt")], corpus)

    assert isinstance(bad_name, Failure)
    assert (bad_name.code, bad_name.uri) == ("malformed_row", f"{corpus}/caf\\udce9.txt")
    assert bad_name.message == f"uri '{corpus}/caf\\udce9.txt' is not valid UTF-8 text"
    assert isinstance(nul, Failure)
    assert (nul.code, nul.message) == (
        "malformed_row",
        "path 'notes\\x00.txt' contains a NUL character",
    )
    for text in (bad_name.uri, bad_name.item_id, bad_name.message, nul.message):
        text.encode("utf-8")  # storable in the failures file


def test_failures_passed_in_are_passed_through_in_order(corpus: Path) -> None:
    upstream = Failure("", "", "manifest", "malformed_row", "line 2: invalid JSON")
    rows: list[ManifestRow | Failure] = [ManifestRow(1, "notes.txt"), upstream]

    results = list(resolved_items(rows, str(corpus)))

    assert isinstance(results[0], Item)
    assert results[1] is upstream


def test_without_a_root_only_absolute_paths_resolve(corpus: Path) -> None:
    absolute = str(corpus / "notes.txt")

    item, failure = resolved([ManifestRow(1, absolute), ManifestRow(2, "notes.txt")], None)

    assert isinstance(item, Item)
    assert item.item_id == absolute.lstrip("/")
    assert isinstance(failure, Failure)
    assert failure.code == "malformed_row"
    assert failure.message == "relative path 'notes.txt' but no corpus root to resolve it against"


def test_a_root_that_is_not_a_directory_stops_the_run(corpus: Path) -> None:
    with pytest.raises(FileNotFoundError, match="corpus root is not a directory"):
        resolved([ManifestRow(1, "notes.txt")], corpus / "no-such-dir")


def test_a_declared_modality_wins_over_inference(corpus: Path) -> None:
    item = only([ManifestRow(1, "blob.bin", modality="audio")], corpus)

    assert isinstance(item, Item)
    assert item.modality == "audio"


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_unreadable(corpus: Path) -> None:
    locked = corpus / "locked.txt"
    locked.write_text("private\n")
    locked.chmod(0)
    try:
        failure = only([ManifestRow(1, "locked.txt")], corpus)
    finally:
        locked.chmod(0o644)

    assert isinstance(failure, Failure)
    assert (failure.code, failure.item_id) == ("unreadable", "locked.txt")
    assert failure.message == f"permission denied reading {locked.resolve()}"


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="root lists directories whatever their permissions")
def test_a_directory_the_crawl_cannot_list_is_reported(corpus: Path) -> None:
    locked = corpus / "locked"
    locked.mkdir()
    (locked / "inside.txt").write_text("private\n")
    locked.chmod(0)
    try:
        results = list(resolved_items(crawled_rows(str(corpus)), str(corpus)))
    finally:
        locked.chmod(0o755)

    (failure,) = [r for r in results if isinstance(r, Failure) and r.item_id == "locked"]
    assert failure.code == "unreadable"
    assert "cannot list directory" in failure.message


def test_a_file_the_system_refuses_to_open_is_unreadable(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs even as root, where chmod cannot make a file unreadable: the OS refusal is simulated.
    refused = str((corpus / "notes.txt").resolve())

    def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if file == refused:
            raise PermissionError(13, "Permission denied", file)
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(corpus_local, "open", refusing_open, raising=False)

    failure = only([ManifestRow(1, "notes.txt")], corpus)

    assert isinstance(failure, Failure)
    assert (failure.code, failure.message) == ("unreadable", f"permission denied reading {refused}")


def test_resolving_is_lazy(corpus: Path) -> None:
    pulled = 0

    def hundred_thousand_rows() -> Iterator[ManifestRow]:
        nonlocal pulled
        for position in range(1, 100_001):
            pulled += 1
            yield ManifestRow(position, "notes.txt", item_id=f"notes-{position}")

    first = list(islice(resolved_items(hundred_thousand_rows(), str(corpus)), 3))

    assert [item.item_id for item in first] == ["notes-1", "notes-2", "notes-3"]
    assert pulled == 3


def test_the_fingerprint_follows_the_content_only(corpus: Path) -> None:
    big = corpus / "big.txt"
    content = b"line of text\n" * 250_000  # over 3 MiB: hashed in several chunks
    big.write_bytes(content)
    first = only([ManifestRow(1, "big.txt")], corpus)
    os.utime(big, (1_000_000, 1_000_000))
    touched = only([ManifestRow(1, "big.txt")], corpus)
    (corpus / "copy.txt").write_bytes(content)
    copied = only([ManifestRow(1, "copy.txt")], corpus)
    big.write_bytes(content[:-1] + b"!")
    changed = only([ManifestRow(1, "big.txt")], corpus)

    assert isinstance(first, Item)
    assert isinstance(touched, Item)
    assert isinstance(copied, Item)
    assert isinstance(changed, Item)
    assert first.fingerprint == "sha256:" + hashlib.sha256(content).hexdigest()
    assert touched.fingerprint == first.fingerprint == copied.fingerprint
    assert changed.fingerprint != first.fingerprint
    assert changed.size_bytes == first.size_bytes == len(content)


def test_a_crawl_lists_every_visible_file_in_path_order(corpus: Path) -> None:
    (corpus / "docs" / "a").mkdir()
    (corpus / "docs" / "a" / "deep.md").write_text("# deep\n")
    (corpus / "docs" / "a.txt").write_text("a\n")
    (corpus / ".git").mkdir()
    (corpus / ".git" / "config").write_text("[core]\n")
    (corpus / "docs" / ".draft.txt").write_text("hidden\n")
    (corpus / "linked-docs").symlink_to(corpus / "docs", target_is_directory=True)

    rows = list(crawled_rows(str(corpus)))
    results = list(resolved_items(rows, str(corpus)))

    assert [row.position for row in rows] == list(range(1, len(rows) + 1))
    ids = [result.item_id for result in results]
    assert ids == [
        "blob.bin",
        "docs/a.txt",
        "docs/a/deep.md",
        "docs/report.pdf",
        "empty.txt",
        "escape.txt",
        "linked-docs",
        "notes.txt",
        "photo.png",
    ]
    assert [row.uri for row in rows][:2] == [str(corpus / "blob.bin"), str(corpus / "docs/a.txt")]
    codes = {r.item_id: r.code for r in results if isinstance(r, Failure)}
    assert codes == {
        "blob.bin": "unsupported_type",
        "empty.txt": "empty_file",
        "escape.txt": "outside_root",
        "linked-docs": "unsupported_type",
    }
    (link_failure,) = [r for r in results if isinstance(r, Failure) and r.item_id == "linked-docs"]
    assert "is a link to a directory; crawls do not follow directory links" in link_failure.message


def test_a_crawl_of_a_missing_directory_stops_the_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="corpus directory not found"):
        list(crawled_rows(str(tmp_path / "absent")))
