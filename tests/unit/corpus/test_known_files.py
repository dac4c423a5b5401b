"""A crawl of a local directory keeps a record of what it found, so that the next crawl with the
same store reads only the files that changed: the items must be exactly what reading every
file gives, and a change of any kind must be seen."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.corpus import known_files
from tasks.corpus import local as corpus_local
from tasks.corpus.known_files import KNOWN_FILES, KnownFiles, status_signature
from tasks.corpus.source import CorpusSource, corpus_items
from tasks.records import Failure, Item
from tasks.store import CheckpointStore

HOUR_NS = 3600 * 1_000_000_000


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files a crawl reads (hashes), collected as it runs."""
    seen: list[str] = []
    hashed = corpus_local._sha256_and_head

    def counted(handle: object, size: int) -> tuple[str, bytes]:
        seen.append(handle.name)  # type: ignore[attr-defined]
        return hashed(handle, size)  # type: ignore[arg-type]

    monkeypatch.setattr(corpus_local, "_sha256_and_head", counted)
    return seen


@pytest.fixture
def trusted_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written by the test itself count as old enough to be recorded."""
    monkeypatch.setattr(known_files, "RACY_SECONDS", -3600)


def crawl(directory: Path, store: CheckpointStore | None) -> list[Item | Failure]:
    return list(corpus_items(CorpusSource(corpus=str(directory)), store=store))


def record_of(store: CheckpointStore, directory: Path) -> list[str]:
    """The relative paths the store's record of ``directory`` holds, in order."""
    path = store.known_files_path(os.path.realpath(directory))
    return pq.read_table(path, filesystem=store.filesystem)["relative"].to_pylist()


def text_corpus(root: Path, count: int) -> Path:
    for index in range(count):
        folder = root / f"part-{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc-{index:03d}.txt").write_text(f"document {index}\n")
    return root


def test_a_crawl_with_a_record_resolves_exactly_as_reading_every_file(
    tree: Path,
    tmp_path: Path,
    reads: list[str],
    trusted_now: None,
) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    unrecorded = crawl(tree, None)
    first = crawl(tree, store)
    reads.clear()
    second = crawl(tree, store)

    assert first == unrecorded
    assert second == unrecorded
    assert [(f.code, f.uri) for f in second if isinstance(f, Failure)] == [
        (f.code, f.uri) for f in unrecorded if isinstance(f, Failure)
    ]
    # Read again: the targets of two links (a link is resolved and read the general way) and
    # a file of no known type (not an item, so not recorded). No other item's file.
    assert sorted(os.path.relpath(path, tree) for path in reads) == [
        "blob.bin",
        "docs/a.txt",
        "notes.txt",
    ]
    # Every item's file once (two items reach theirs through links).
    assert record_of(store, tree) == sorted(
        {
            os.path.relpath(item.uri, os.path.realpath(tree))
            for item in second
            if isinstance(item, Item)
        }
    )


def test_an_unchanged_corpus_is_not_read_again(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 30)
    store = CheckpointStore(str(tmp_path / "store"))
    first = crawl(root, store)
    assert len(reads) == 30
    reads.clear()

    assert crawl(root, store) == first
    assert reads == []
    assert crawl(root, store) == first  # a record kept from recalled files serves again
    assert reads == []


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_read_again(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 6)
    store = CheckpointStore(str(tmp_path / "store"))
    before = {item.item_id: item for item in crawl(root, store) if isinstance(item, Item)}
    changed = root / "part-1" / "doc-001.txt"
    status = changed.stat()
    changed.write_text("document X\n")  # same size
    os.utime(changed, ns=(status.st_atime_ns, status.st_mtime_ns))  # mtime set back; not ctime
    reads.clear()

    after = {item.item_id: item for item in crawl(root, store) if isinstance(item, Item)}

    assert reads == [str(changed)]
    assert after["part-1/doc-001.txt"].fingerprint != before["part-1/doc-001.txt"].fingerprint
    assert {k: v for k, v in after.items() if k != "part-1/doc-001.txt"} == {
        k: v for k, v in before.items() if k != "part-1/doc-001.txt"
    }


def test_a_file_replaced_by_another_of_the_same_size_and_times_is_read_again(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 3)
    store = CheckpointStore(str(tmp_path / "store"))
    crawl(root, store)
    target = root / "part-0" / "doc-000.txt"
    status = target.stat()
    replacement = tmp_path / "replacement.txt"
    replacement.write_text("document Y\n")
    os.utime(replacement, ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(replacement, target)  # a new inode at the same path
    reads.clear()

    items = {item.item_id: item for item in crawl(root, store) if isinstance(item, Item)}

    assert reads == [str(target)]
    assert items["part-0/doc-000.txt"] == crawl(root, None)[0]


def test_added_and_removed_files_are_read_and_forgotten(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 9)
    store = CheckpointStore(str(tmp_path / "store"))
    crawl(root, store)
    (root / "part-2" / "doc-002.txt").unlink()
    (root / "part-2" / "doc-002a.txt").write_text("added between two recorded files\n")
    (root / "a.txt").write_text("added before every recorded file\n")
    (root / "zz").mkdir()
    (root / "zz" / "last.txt").write_text("added after every recorded file\n")
    reads.clear()

    items = crawl(root, store)
    read = sorted(os.path.basename(path) for path in reads)

    assert items == crawl(root, None)
    assert read == ["a.txt", "doc-002a.txt", "last.txt"]
    recorded = record_of(store, root)
    assert recorded == sorted(recorded)
    assert "part-2/doc-002.txt" not in recorded
    assert {"a.txt", "part-2/doc-002a.txt", "zz/last.txt"} <= set(recorded)


def test_files_changed_just_before_the_crawl_are_not_recorded(
    tmp_path: Path, reads: list[str]
) -> None:
    root = text_corpus(tmp_path / "corpus", 4)
    store = CheckpointStore(str(tmp_path / "store"))
    crawl(root, store)  # every file was written less than RACY_SECONDS ago
    assert record_of(store, root) == []
    reads.clear()

    crawl(root, store)

    assert len(reads) == 4


def test_a_record_that_cannot_be_read_is_ignored_and_replaced(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 5)
    store = CheckpointStore(str(tmp_path / "store"))
    path = store.known_files_path(os.path.realpath(root))
    Path(path).parent.mkdir(parents=True)
    Path(path).write_bytes(b"not parquet at all")

    assert crawl(root, store) == crawl(root, None)
    assert len(record_of(store, root)) == 5
    reads.clear()
    crawl(root, store)
    assert reads == []


def test_a_crawl_stopped_part_way_leaves_the_last_record(
    tmp_path: Path, reads: list[str], trusted_now: None
) -> None:
    root = text_corpus(tmp_path / "corpus", 8)
    store = CheckpointStore(str(tmp_path / "store"))
    crawl(root, store)
    path = Path(store.known_files_path(os.path.realpath(root)))
    recorded = path.read_bytes()

    items: Iterator[Item | Failure] = corpus_items(CorpusSource(corpus=str(root)), store=store)
    next(items)
    next(items)
    items.close()  # type: ignore[attr-defined]

    assert path.read_bytes() == recorded
    assert os.listdir(path.parent) == [path.name]


def test_the_record_is_recalled_in_step_with_the_listing(tmp_path: Path) -> None:
    """Recorded paths the listing no longer has are passed over; new ones find nothing."""
    files = {name: tmp_path / name.replace("/", "_") for name in ("a.txt", "a/b.txt", "c.txt")}
    for file in files.values():
        file.write_text("x\n")
    status = {name: file.stat() for name, file in files.items()}
    recorded = pa.RecordBatch.from_pylist(
        [
            {"relative": name, "status": status_signature(status[name]),
             "fingerprint": f"fp-{name}", "modality": "text"}
            for name in ("a.txt", "a/b.txt", "c.txt")
        ],
        schema=KNOWN_FILES,
    )  # fmt: skip
    written: list[pa.RecordBatch] = []
    known = KnownFiles(
        iter([recorded.slice(0, 1), recorded.slice(1)]), written.append, time.time_ns() + HOUR_NS
    )

    assert known.recall("0-new.txt", status["a.txt"]) is None
    hit = known.recall("a/b.txt", status["a/b.txt"])
    assert hit is not None
    assert hit.fingerprint == "fp-a/b.txt"
    assert known.recall("b.txt", status["c.txt"]) is None
    assert known.recall("c.txt", status["a.txt"]) is None  # another file's status
    assert known.recall("d.txt", status["c.txt"]) is None  # past the end
    assert known.recalled == 1

    known.keep(hit)
    known.learn("b.txt", status["c.txt"], "fp-b", "text")
    known.learn("a.txt", status["a.txt"], "fp-a", "text")  # out of order: not recorded
    known.flush()
    assert pa.Table.from_batches(written)["relative"].to_pylist() == ["a/b.txt", "b.txt"]
