"""What the last crawl of a local directory learned of each file, so that a crawl does not read
an unchanged file again.

An item's fingerprint is the sha256 of its bytes, so a crawl that hashes every file reads every
byte of the corpus on every run: for a scheduled re-embedding of a large, mostly unchanged
corpus, that is most of what the run does. Instead, a crawl records each file it hashed, by
its path below the crawled directory: the file's status (size, mtime and ctime in ns, inode,
device), its fingerprint and the modality it was found to hold. The record is one Parquet file
per crawled directory in the checkpoint store, in crawl order. The next crawl of the directory
reads it in step with its listing (both sorted by relative path, so it is a merge, a batch at a
time, never held whole) and takes the fingerprint of a file whose status is the same instead of
reading the file.

As git's index and rsync's quick check do, this trusts that a file whose size, times and inode
are all unchanged holds the same bytes. A rewrite that sets mtime back is still seen: ctime
cannot be set back (``touch -d`` sets it to now). A file written within a timestamp tick of its
hashing could be changed again without its times moving (filesystems with coarse timestamps),
so a file changed less than ``RACY_SECONDS`` before the crawl started is not recorded, and is
hashed again next time. A record that cannot be read is ignored (every file is then hashed).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

from tasks.records import Modality
from tasks.store import CheckpointStore

log = logging.getLogger(__name__)

RACY_SECONDS = 2
"""A file changed this recently when the crawl started is hashed again next time: the coarsest
timestamps in common use (FAT) tick every 2 seconds."""

BATCH_ROWS = 8_192

KNOWN_FILES = pa.schema(
    [
        pa.field("relative", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
    ]
)
"""A crawl's record: per file hashed, its path below the crawled directory ('/'-separated, in
crawl order), its :func:`status_signature`, its ``sha256:<hex>`` fingerprint and modality."""

Result = TypeVar("Result")


def status_signature(status: os.stat_result) -> str:
    """What must stay the same for a file's bytes to be taken as unchanged."""
    return (
        f"{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}:"
        f"{status.st_ino}:{status.st_dev}"
    )


@dataclass(frozen=True)
class KnownFile:
    """A file as the last crawl found it, its status unchanged since."""

    relative: str
    status: str
    fingerprint: str
    modality: Modality


class KnownFiles:
    """The last crawl's record of a directory, read in step with this crawl, and this crawl's,
    written as it goes.

    ``recall``, ``keep`` and ``learn`` must be asked in crawl order (ascending relative path);
    a path that is not after the last one recorded is not recorded, so the record written is
    always in that order. ``recalled`` counts the files taken from the record."""

    def __init__(
        self,
        previous: Iterator[pa.RecordBatch],
        write: Callable[[pa.RecordBatch], object],
        started_ns: int,
    ) -> None:
        self._previous = previous
        self._write = write
        self._trusted_before = started_ns - RACY_SECONDS * 1_000_000_000
        self._batch: list[list[str]] = [[], [], [], []]
        self._at = 0
        self._exhausted = False
        self._learned: list[list[str]] = [[], [], [], []]
        self._last_learned = ""
        self.recalled = 0

    def recall(self, relative: str, status: os.stat_result) -> KnownFile | None:
        """The file at ``relative`` as the last crawl found it, or None: not recorded, or its
        status differs (it changed, or was replaced), or it is not a regular file now."""
        while True:
            relatives = self._batch[0]
            if self._at >= len(relatives):
                if not self._next_batch():
                    return None
                continue
            if relatives[self._at] < relative:
                self._at += 1
                continue
            if relatives[self._at] > relative:
                return None
            at, self._at = self._at, self._at + 1
            _, statuses, fingerprints, modalities = self._batch
            if not stat.S_ISREG(status.st_mode) or statuses[at] != status_signature(status):
                return None
            self.recalled += 1
            modality: Modality = modalities[at]  # type: ignore[assignment]  # an Item's, recorded
            return KnownFile(relative, statuses[at], fingerprints[at], modality)

    def keep(self, known: KnownFile) -> None:
        """Record a recalled file again, as it was (see :meth:`learn`)."""
        self._add(known.relative, known.status, known.fingerprint, known.modality)

    def learn(self, relative: str, status: os.stat_result, fingerprint: str, modality: str) -> None:
        """Record what this crawl found of the file at ``relative`` (with the status it had
        before it was read), unless it changed too recently to be trusted next time."""
        if not stat.S_ISREG(status.st_mode):
            return
        if max(status.st_mtime_ns, status.st_ctime_ns) >= self._trusted_before:
            return
        self._add(relative, status_signature(status), fingerprint, modality)

    def _add(self, relative: str, status: str, fingerprint: str, modality: str) -> None:
        if relative <= self._last_learned:
            return
        self._last_learned = relative
        for column, value in zip(
            self._learned, (relative, status, fingerprint, modality), strict=True
        ):
            column.append(value)
        if len(self._learned[0]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write what was learned since the last flush."""
        if self._learned[0]:
            self._write(pa.RecordBatch.from_arrays(self._learned, schema=KNOWN_FILES))
            self._learned = [[], [], [], []]

    def _next_batch(self) -> bool:
        if self._exhausted:
            return False
        batch = next(self._previous, None)
        if batch is None:
            self._exhausted = True
            self._batch = [[], [], [], []]
            return False
        self._batch = [batch.column(name).to_pylist() for name in KNOWN_FILES.names]
        self._at = 0
        return True


def remembered_crawl(
    store: CheckpointStore, directory: str, crawl: Callable[[KnownFiles], Iterator[Result]]
) -> Iterator[Result]:
    """What ``crawl`` yields, given the record of the last crawl of ``directory`` kept in
    ``store``; the record of this crawl replaces it when ``crawl`` is exhausted (not when it
    is stopped or fails: the last one then stays)."""
    path = store.known_files_path(os.path.realpath(os.path.abspath(directory)))
    previous = _recorded_batches(store, path)
    try:
        with store.table_writer(path, KNOWN_FILES) as writer:
            known = KnownFiles(previous, writer.write_batch, time.time_ns())
            yield from crawl(known)
            # The last record is read to its end or closed before this one replaces it.
            previous.close()
            known.flush()
    finally:
        previous.close()
    log.info("%d files unchanged since the last crawl: not read again", known.recalled)


def _recorded_batches(store: CheckpointStore, path: str) -> Iterator[pa.RecordBatch]:
    if not store.exists(path):
        return
    try:
        yield from store.batches(path, KNOWN_FILES.names, BATCH_ROWS)
    except (OSError, pa.ArrowException, KeyError, ValueError) as error:
        # Only a cache: without it every file is hashed, as on a first crawl.
        log.warning("ignoring the last crawl's record %s, which cannot be read: %s", path, error)
