"""A local crawl resolves its files without resolving their paths (see ``CrawledFile``): every
result must be exactly what resolving the same paths from a manifest gives."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from tasks.corpus import local as corpus_local
from tasks.corpus import resolve as corpus_resolve
from tasks.corpus.local import CrawledFile, LocalRoot, crawled_local_file, local_file
from tasks.corpus.resolve import ManifestRow, crawled_rows, resolved_items
from tasks.records import Failure, Item, metadata_json


def as_manifest(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    """The same rows as a manifest of their absolute paths gives them: resolved the general way."""
    return [ManifestRow(position=row.position, uri=row.uri) for row in rows]


def general_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths resolution hands to the general :func:`local_file`, collected as it runs."""
    seen: list[str] = []

    def spying_local_file(given_path: str, root: LocalRoot | None) -> object:
        seen.append(given_path)
        return local_file(given_path, root)

    monkeypatch.setattr(corpus_resolve, "local_file", spying_local_file)
    return seen


def test_a_crawl_resolves_exactly_as_a_manifest_of_its_paths(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = list(crawled_rows(str(tree)))
    expected = list(resolved_items(as_manifest(rows), str(tree)))
    general = general_paths(monkeypatch)

    results = list(resolved_items(rows, str(tree)))

    assert results == expected
    links = {"escape.txt", "latest.txt", "relative-link.txt", "linked-docs", "linked-outside"}
    # Only links take the general path (the non-UTF-8 name is refused before any path work).
    assert sorted(general) == sorted(str(tree / name) for name in [*links, "dangling.txt"])
    assert {row.uri for row in rows if not isinstance(row, CrawledFile)} == set(general)
    by_id = {result.item_id: result for result in results}
    assert isinstance(by_id["docs/deep/deeper/leaf.md"], Item)
    assert by_id["docs/deep/deeper/leaf.md"].uri == str(tree.resolve() / "docs/deep/deeper/leaf.md")
    codes = {
        result.uri.removeprefix(f"{tree}/"): (result.code, result.item_id)
        for result in results
        if isinstance(result, Failure)
    }
    assert codes == {
        "blob.bin": ("unsupported_type", "blob.bin"),
        "caf\\udce9.txt": ("malformed_row", ""),
        "c#sharp.txt": ("malformed_row", ""),
        "dangling.txt": ("not_found", "dangling.txt"),
        "empty.txt": ("empty_file", "empty.txt"),
        "escape.txt": ("outside_root", "escape.txt"),
        "linked-docs": ("unsupported_type", "linked-docs"),
        "linked-outside": ("outside_root", "linked-outside"),
        "pipe": ("unsupported_type", "pipe"),
    }


def test_a_root_reached_through_a_symlink_resolves_to_real_paths(tree: Path) -> None:
    alias = tree.parent / "alias"
    alias.symlink_to(tree, target_is_directory=True)
    rows = list(crawled_rows(str(alias)))

    results = list(resolved_items(rows, str(alias)))

    assert results == list(resolved_items(as_manifest(rows), str(alias)))
    assert any(isinstance(row, CrawledFile) for row in rows)
    (notes,) = [result for result in results if result.item_id == "notes.txt"]
    assert isinstance(notes, Item)
    assert notes.uri == str(tree.resolve() / "notes.txt")


def test_a_crawl_resolved_against_another_root_takes_the_general_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = list(crawled_rows(str(tree / "docs")))
    expected = list(resolved_items(as_manifest(rows), str(tree)))
    general = general_paths(monkeypatch)

    results = list(resolved_items(rows, str(tree)))

    assert results == expected
    assert [result.item_id for result in results] == [
        "docs/Report.PDF",
        "docs/a.txt",
        "docs/deep/deeper/leaf.md",
    ]
    assert general == [row.uri for row in rows]


def test_a_file_replaced_after_the_crawl_is_resolved_as_it_now_is(tree: Path) -> None:
    rows = list(crawled_rows(str(tree)))
    (tree / "notes.txt").unlink()
    (tree / "notes.txt").symlink_to(tree.parent / "outside" / "secret.txt")
    (tree / "docs" / "a.txt").unlink()
    (tree / "docs" / "a.txt").write_text("a new file in its place\n")
    (tree / "weird..txt").unlink()

    results = list(resolved_items(rows, str(tree)))

    assert results == list(resolved_items(as_manifest(rows), str(tree)))
    codes = {result.item_id: result.code for result in results if isinstance(result, Failure)}
    assert codes["notes.txt"] == "outside_root"
    assert codes["weird..txt"] == "not_found"
    (replaced,) = [result for result in results if result.item_id == "docs/a.txt"]
    assert isinstance(replaced, Item)
    assert replaced.size_bytes == len("a new file in its place\n")


def test_a_directory_replaced_by_a_link_after_the_crawl_is_resolved_through_it(tree: Path) -> None:
    rows = list(crawled_rows(str(tree)))
    (tree / "docs").rename(tree.parent / "moved-docs")
    (tree / "docs").symlink_to(tree.parent / "moved-docs", target_is_directory=True)

    results = list(resolved_items(rows, str(tree)))

    assert results == list(resolved_items(as_manifest(rows), str(tree)))
    codes = {result.item_id: result.code for result in results if isinstance(result, Failure)}
    assert codes["docs/a.txt"] == "outside_root"


def test_a_file_the_system_refuses_to_open_is_unreadable_on_either_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs even as root, where chmod cannot make a file unreadable: the OS refusal is simulated.
    refused = str((tree / "notes.txt").resolve())
    real_open = open

    def refusing_open(file: object, *args: object, **kwargs: object) -> object:
        if file == refused:
            raise PermissionError(13, "Permission denied", file)
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(corpus_local, "open", refusing_open, raising=False)
    rows = list(crawled_rows(str(tree)))

    results = list(resolved_items(rows, str(tree)))

    assert results == list(resolved_items(as_manifest(rows), str(tree)))
    (failure,) = [result for result in results if result.item_id == "notes.txt"]
    assert isinstance(failure, Failure)
    assert (failure.code, failure.message) == ("unreadable", f"permission denied reading {refused}")


def test_a_crawled_file_under_the_filesystem_root_keeps_one_slash(tmp_path: Path) -> None:
    file = tmp_path.resolve() / "notes.txt"
    file.write_text("notes\n")
    root = LocalRoot(path="/", real="/")
    relative = str(file).lstrip("/")
    row = CrawledFile(1, str(file), top="/", relative=relative)

    crawled = crawled_local_file(row, root)

    assert crawled is not None
    assert crawled[0] == local_file(str(file), root)
    assert crawled[1].st_size == len("notes\n")


def test_crawled_rows_keep_their_manifest_fields(tree: Path) -> None:
    rows = list(crawled_rows(str(tree)))

    assert [row.position for row in rows] == list(range(1, len(rows) + 1))
    assert all(
        (row.item_id, row.modality, row.metadata_json, row.encoding) == (None,) * 4 for row in rows
    )
    files = [row for row in rows if isinstance(row, CrawledFile)]
    assert all(row.uri == f"{tree}/{row.relative}" and row.top == str(tree) for row in files)


@pytest.mark.parametrize("metadata", [None, {}, {"b": 1, "a": [1, 2]}, {"é": "ü"}])
def test_canonical_metadata_json_is_sorted_compact_json(metadata: dict[str, object] | None) -> None:
    expected = json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":"))

    assert metadata_json(metadata) == expected
