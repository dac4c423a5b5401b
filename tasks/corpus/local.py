"""Local files of the corpus: crawling a directory, keeping paths inside the root, hashing.

Part of corpus input (see :mod:`tasks.corpus.resolve`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from io import FileIO
from operator import itemgetter
from pathlib import PurePath

from tasks.corpus.known_files import KnownFiles
from tasks.corpus.manifest import ManifestRow, Rejection
from tasks.corpus.modality import SNIFF_BYTES, infer_modality, unsupported_type
from tasks.records import Item, Modality

HASH_CHUNK_BYTES = 1024 * 1024
"""Files are hashed this many bytes at a time, so memory does not grow with file size."""


@dataclass(frozen=True)
class LocalRoot:
    """A local corpus root: ``path`` absolute as given, ``real`` with symlinks resolved."""

    path: str
    real: str

    @classmethod
    def of(cls, root: str) -> LocalRoot:
        """The root at ``root``; ``FileNotFoundError`` unless it is an existing directory."""
        absolute = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(absolute):
            raise FileNotFoundError(f"corpus root is not a directory: {root}")
        return cls(path=absolute, real=os.path.realpath(absolute))

    def holds(self, real_path: str) -> bool:
        """Whether a symlink-free absolute path lies inside the root (or is the root)."""
        return os.path.commonpath([self.real, real_path]) == self.real


@dataclass(frozen=True)
class LocalFile:
    """Where a row's local path leads: ``path`` as the corpus names it (absolute, normalised),
    ``real`` after symlinks, and the id the row gets when it gives none."""

    path: str
    real: str
    derived_id: str


def local_file(given_path: str, root: LocalRoot | None) -> LocalFile | Rejection:
    """Where ``given_path`` (absolute, or relative to ``root``) leads, or why it may not be read:
    ``outside_root`` when it resolves, after symlinks, outside ``root``; ``malformed_row`` when
    it is relative and there is no root. The id it derives is its path relative to the root
    (without a root: the absolute path without its leading slash)."""
    if "\x00" in given_path:
        return Rejection("malformed_row", f"path {given_path!r} contains a NUL character")
    if root is None:
        if not os.path.isabs(given_path):
            return Rejection(
                "malformed_row",
                f"relative path {given_path!r} but no corpus root to resolve it against",
            )
        path = os.path.normpath(given_path)
        return LocalFile(path, os.path.realpath(path), PurePath(path).as_posix().lstrip("/"))
    path = os.path.normpath(os.path.join(root.path, given_path))
    # Resolved from the real root and the path as given, not from the normalised path:
    # normalising first would cancel a ".." that follows a symlink instead of following it.
    real = os.path.realpath(os.path.join(root.real, given_path))
    named_inside = os.path.commonpath([root.path, path]) == root.path
    if not root.holds(real):
        return Rejection(
            "outside_root",
            f"{given_path!r} resolves to {real}, outside the corpus root {root.real}",
            derived_id=_relative_id(path, root.path) if named_inside else None,
        )
    if named_inside:
        return LocalFile(path, real, _relative_id(path, root.path))
    # Named through another route to the same place, e.g. the root's real path.
    return LocalFile(path, real, _relative_id(real, root.real))


@dataclass(frozen=True)
class CrawledFile(ManifestRow):
    """A file a local crawl listed that was not a symlink, in directories that were not links,
    under the crawled directory ``top`` (absolute, as given); ``relative`` is its path below
    ``top``, '/'-separated. Otherwise an ordinary :class:`ManifestRow`: it resolves to the same
    Item or Failure, with less work (see :func:`crawled_local_file`)."""

    top: str = ""
    relative: str = ""


def crawled_local_file(
    row: CrawledFile, root: LocalRoot
) -> tuple[LocalFile, os.stat_result] | None:
    """What :func:`local_file` says of a crawled file, found without resolving its path, with
    the file's status; or None when :func:`local_file` must be asked: ``root`` is not the
    crawl's own directory, or the file or a directory on its way below the root is now a link,
    or gone. Below a root, a path with no link on it has the root's real path plus its relative
    path as its real path, and that relative path as its id."""
    if row.top != root.path:
        return None
    real = f"{root.real}/{row.relative}" if root.real != "/" else f"/{row.relative}"
    try:
        # One lstat per component below the root, no more: what realpath would see there, but
        # without its Python loop over every component from "/".
        slash = real.find("/", len(real) - len(row.relative))
        while slash != -1:
            if not stat.S_ISDIR(os.lstat(real[:slash]).st_mode):
                return None
            slash = real.find("/", slash + 1)
        status = os.lstat(real)
    except OSError:
        return None
    if stat.S_ISLNK(status.st_mode):
        return None
    return LocalFile(row.uri, real, row.relative), status


def local_item(
    file: LocalFile,
    item_id: str,
    declared: Modality | None,
    metadata_json: str,
    encoding: str | None,
    status: os.stat_result | None = None,
    position: int = 0,
) -> Item | Rejection:
    """The file as an Item (``uri`` its real path, ``fingerprint`` ``sha256:<hex>`` of its
    bytes, ``size_bytes`` its size), or why not: ``not_found``, ``unreadable``,
    ``empty_file`` or ``unsupported_type`` (a directory, a device, or no modality to infer).
    ``status`` is the file's status at ``file.real`` when the caller already has it;
    ``position`` the manifest row the item comes from."""
    if status is None:
        try:
            status = os.stat(file.real)
        except FileNotFoundError:
            return Rejection("not_found", f"no file at {file.real}")
        except OSError as error:
            return _unreadable(file.real, error)
    if stat.S_ISDIR(status.st_mode):
        return _directory_rejection(file)
    if not stat.S_ISREG(status.st_mode):
        # Checked before opening: opening a FIFO would block the run.
        return Rejection(
            "unsupported_type", f"{file.real} is not a regular file (a device, FIFO or socket)"
        )
    try:
        # Unbuffered: the hash reads whole chunks, and a buffer would only copy them again.
        with open(file.real, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return Rejection("empty_file", f"{file.real} is empty (0 bytes)")
            fingerprint, head = _sha256_and_head(handle, size)
    except FileNotFoundError:
        return Rejection("not_found", f"no file at {file.real}")
    except OSError as error:
        return _unreadable(file.real, error)
    modality = declared or infer_modality(file.path, head)
    if modality is None:
        return unsupported_type(file.path)
    return Item(
        item_id=item_id,
        uri=file.real,
        modality=modality,
        fingerprint=fingerprint,
        size_bytes=size,
        metadata_json=metadata_json,
        encoding=encoding,
        position=position,
    )


def crawled_item(
    file: LocalFile,
    status: os.stat_result,
    known: KnownFiles,
    item_id: str,
    metadata_json: str,
    encoding: str | None,
    position: int,
) -> Item | Rejection:
    """:func:`local_item` of a file a crawl found (``file`` and ``status`` from
    :func:`crawled_local_file`; no modality declared), with its fingerprint and modality from
    ``known`` when its status is unchanged since the last crawl, so it is not read; either way
    it is learned there for the next crawl."""
    relative = file.derived_id
    recalled = known.recall(relative, status)
    if recalled is not None:
        known.keep(recalled)
        return Item(
            item_id=item_id,
            uri=file.real,
            modality=recalled.modality,
            fingerprint=recalled.fingerprint,
            size_bytes=status.st_size,
            metadata_json=metadata_json,
            encoding=encoding,
            position=position,
        )
    item = local_item(file, item_id, None, metadata_json, encoding, status, position)
    if isinstance(item, Item):
        known.learn(relative, status, item.fingerprint, item.modality)
    return item


def crawled_local_rows(directory: str) -> Iterator[ManifestRow]:
    """Every file under ``directory`` as a row, ``position`` counting from 1 and ``uri`` its
    absolute path, in sorted path order, skipping hidden files and directories (names starting
    with "."). Links to directories are listed, not followed, so a link cycle cannot trap the
    crawl; a directory that cannot be listed is listed itself, for resolving to report. A file
    that is not a symlink comes as a :class:`CrawledFile`. Holds one directory's entries per
    level at a time.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` when ``directory`` is not a directory.
    """
    top = os.path.abspath(os.path.expanduser(directory))
    if not os.path.exists(top):
        raise FileNotFoundError(f"corpus directory not found: {directory}")
    if not os.path.isdir(top):
        raise NotADirectoryError(f"corpus is not a directory: {directory}")
    for position, (path, relative) in enumerate(_files_under(top, ""), start=1):
        if relative is None:
            yield ManifestRow(position=position, uri=path)
        else:
            yield CrawledFile(position=position, uri=path, top=top, relative=relative)


def _files_under(directory: str, prefix: str) -> Iterator[tuple[str, str | None]]:
    """``(path, relative)`` of each file under ``directory``, whose path relative to the
    crawl's top is ``prefix``: ``relative`` is None for a symlink or an unlisted directory."""
    try:
        with os.scandir(directory) as scan:
            # "name/" for directories makes this depth-first walk yield whole paths in sorted
            # order ("a.txt" before "a/b.txt"), as a sorted listing of all paths would.
            entries = sorted(
                (
                    (entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
                    for entry in scan
                    if not entry.name.startswith(".")
                ),
                key=itemgetter(0),
            )
    except PermissionError:
        yield directory, None
        return
    for sort_key, entry in entries:
        if sort_key.endswith("/"):
            yield from _files_under(entry.path, prefix + sort_key)
        elif entry.is_symlink():  # from the listing's d_type: no system call
            yield entry.path, None
        else:
            yield entry.path, prefix + sort_key


def _relative_id(path: str, start: str) -> str:
    return PurePath(os.path.relpath(path, start)).as_posix()


def _sha256_and_head(handle: FileIO, size: int) -> tuple[str, bytes]:
    """The ``sha256:<hex>`` of the file's bytes and its first ``SNIFF_BYTES``.

    Read into one buffer the file's size (at most ``HASH_CHUNK_BYTES``), not a new 1 MiB
    ``bytes`` per read: novaflow's command has glibc serve every buffer of 1 MiB or more with
    its own mmap (``flows.cli``), which made each small file's hash an mmap/munmap pair and
    doubled the plan's CPU."""
    digest = hashlib.sha256()
    buffer = bytearray(min(max(size, 1), HASH_CHUNK_BYTES))
    view = memoryview(buffer)
    head = b""
    while read := handle.readinto(buffer):
        if not head:
            head = bytes(view[: min(read, SNIFF_BYTES)])
        digest.update(view[:read])
    return f"sha256:{digest.hexdigest()}", head


def _directory_rejection(file: LocalFile) -> Rejection:
    if not os.access(file.real, os.R_OK | os.X_OK):
        return Rejection(
            "unreadable",
            f"cannot list directory {file.real} (permission denied); nothing under it was read",
        )
    if os.path.islink(file.path):
        message = f"{file.path} is a link to a directory; crawls do not follow directory links"
    else:
        message = f"{file.real} is a directory, not a file"
    return Rejection("unsupported_type", message)


def _unreadable(path: str, error: OSError) -> Rejection:
    if isinstance(error, PermissionError):
        return Rejection("unreadable", f"permission denied reading {path}")
    return Rejection("unreadable", f"cannot read {path}: {error.strerror or error}")
