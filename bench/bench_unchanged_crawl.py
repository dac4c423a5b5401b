"""The crawl of an unchanged local directory with the last crawl's record against without it,
side by side in one process.

A scheduled run over a local corpus that did not change should not read the corpus: with the
record of the last crawl (``tasks.corpus.known_files``) a crawl takes the fingerprint of every
file whose status is unchanged and opens none of them. This bench writes N files of S bytes
each, waits until they are old enough to be recorded (``RACY_SECONDS``: files changed just
before a crawl are hashed again next time, by design), then resolves the directory three ways,
in turn, in this process: without a store (every file read, as before records existed), with a
store that has no record yet (every file read, and the record written), and again with the
store (the record used). For each it prints the CPU seconds, the bytes this process read
(``rchar`` of ``/proc/self/io``: every ``read``, page cache included) and the files hashed, and
the ratios of the third to the first.

Run: ``.venv/bin/python bench/bench_unchanged_crawl.py [--files 10000] [--file-kib 64]``
(~1 minute on 2 cores, 640 MB written to a temporary directory that is removed after), or
``--smoke`` (200 files of 4 KiB). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.corpus import known_files  # noqa: E402
from tasks.corpus import local as corpus_local  # noqa: E402
from tasks.corpus.source import CorpusSource, corpus_items  # noqa: E402
from tasks.records import Item  # noqa: E402
from tasks.store import CheckpointStore  # noqa: E402

FILES_PER_FOLDER = 500


@dataclass(frozen=True)
class Crawl:
    label: str
    cpu_seconds: float
    bytes_read: int
    files_hashed: int
    items: int


def read_bytes() -> int:
    """Bytes this process has read so far (``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def written_corpus(root: Path, files: int, size: int) -> Path:
    """``files`` text files of ``size`` bytes each (seeded), in folders of 500."""
    rng = np.random.default_rng(0)
    for index in range(files):
        folder = root / f"folder-{index // FILES_PER_FOLDER:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        letters = rng.integers(ord("a"), ord("z") + 1, size=size, dtype=np.uint8)
        (folder / f"doc-{index:06d}.txt").write_bytes(letters.tobytes())
    return root


def measured(label: str, crawl: Callable[[], list[object]], hashed: list[int]) -> Crawl:
    hashed[0] = 0
    before_bytes, before_cpu = read_bytes(), time.process_time()
    results = crawl()
    cpu, bytes_read = time.process_time() - before_cpu, read_bytes() - before_bytes
    items = sum(isinstance(result, Item) for result in results)
    return Crawl(label, cpu, bytes_read, hashed[0], items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--file-kib", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="200 files of 4 KiB")
    args = parser.parse_args()
    files, size = (200, 4 * 1024) if args.smoke else (args.files, args.file_kib * 1024)

    hashed = [0]
    hashing = corpus_local._sha256_and_head

    def counted(handle, size_bytes):  # type: ignore[no-untyped-def]
        hashed[0] += 1
        return hashing(handle, size_bytes)

    corpus_local._sha256_and_head = counted  # type: ignore[assignment]

    with tempfile.TemporaryDirectory(prefix="novaflow-bench-crawl-") as scratch:
        corpus = written_corpus(Path(scratch) / "corpus", files, size)
        store = CheckpointStore(str(Path(scratch) / "store"))
        # A file changed less than RACY_SECONDS before a crawl is not recorded (by design):
        # the corpus must be that old before the crawl that records it.
        time.sleep(known_files.RACY_SECONDS + 0.5)
        source = CorpusSource(corpus=str(corpus))
        crawls = [
            measured("no record (every file read)", lambda: list(corpus_items(source)), hashed),
            measured(
                "first crawl (record written)",
                lambda: list(corpus_items(source, store=store)),
                hashed,
            ),
            measured(
                "unchanged, with the record",
                lambda: list(corpus_items(source, store=store)),
                hashed,
            ),
        ]

    print(
        f"Crawl of an unchanged local directory: {files} files of {size // 1024} KiB "
        f"({files * size / 1e6:,.0f} MB)"
    )
    print(f"{'crawl':32} {'items':>7} {'CPU s':>7} {'MB read':>9} {'files hashed':>13}")
    for crawl in crawls:
        print(
            f"{crawl.label:32} {crawl.items:7d} {crawl.cpu_seconds:7.2f} "
            f"{crawl.bytes_read / 1e6:9.1f} {crawl.files_hashed:13d}"
        )
    without, _, recorded = crawls
    print(
        f"with the record / without: CPU {recorded.cpu_seconds / without.cpu_seconds:.3f}, "
        f"bytes read {recorded.bytes_read / max(1, without.bytes_read):.4f}, "
        f"files hashed {recorded.files_hashed} of {without.files_hashed}"
    )


if __name__ == "__main__":
    main()
