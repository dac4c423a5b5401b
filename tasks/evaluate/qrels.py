"""Reading a user's relevance judgements (qrels): one JSON object per line, one query per line.

A line names its query by text or by file and says which ids are relevant::

    {"query_id": "q1", "text": "sourdough baking", "relevant": ["text/bread", "text/rye"]}
    {"query_id": "q2", "file": "images/cat.png", "relevant": {"images/cat": 2, "images/dog": 0}}
    {"query_id": "q3", "text": "the wiring diagram", "relevant": ["pdf/manual#page=2"],
     "type": "text→document page"}

``relevant`` is a list (every id graded 1) or an object of non-negative integer grades (0 means
judged and not relevant). An entry is an item id, which any unit of that item matches, or a unit
key (``<item_id>#page=3``, ``#chunk=2``, ``#t=15.0-30.0``…), which only that unit matches. A query
whose entries are all item ids is judged at the *item* level; one with any unit key, at the
*unit* level (see ``LabeledQuery.level`` and ``labeled_metrics`` for what each scores).

``file`` is relative to a base directory (the qrels file's, by default) or absolute; ``type``
labels the query for per-type means and is derived when absent, as ``"<query modality>→<target
modality>"``: ``text`` for a text query, ``image``/``audio``/``video`` from a file's suffix, and
the target from the caller's ``modality_of`` over the relevant entries (several are joined with
``+``, none known gives ``unknown``).

Rows are checked one by one: a bad row becomes a ``QrelsError`` naming its line, its query id
when known and what is wrong, and the other rows still load. Ids the index does not know
(``known`` says) are an error for a row when none of its relevant (grade ≥ 1) entries is known,
since such a query could only ever score 0 (a typo or the wrong id scheme); otherwise they are a
warning and stay in the judgements, counting as relevant results the index never returns.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs

Level = Literal["item", "unit"]

TEXT_QUERY_MAX_CHARS = 8192
"""Nova's inline text limit: a longer text query cannot be embedded as one query."""

QUERY_FILE_MODALITIES: Mapping[str, str] = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp3", ".wav", ".ogg", ".flac", ".m4a"), "audio"),
    **dict.fromkeys((".mp4", ".mov", ".mkv", ".webm", ".avi"), "video"),
}
"""The modality of a query file, by its lower-cased suffix."""

_FIELDS = frozenset({"query_id", "text", "file", "relevant", "type"})


def item_of(id_or_key: str) -> str:
    """The item id of a unit key (the part before the first ``#``); an item id is its own."""
    return id_or_key.split("#", 1)[0]


@dataclass(frozen=True)
class LabeledQuery:
    """One judged query: what to search with, and how relevant each judged id is.

    Exactly one of ``text`` and ``file`` is set; ``file`` is resolved against the base
    directory (a local absolute path, an ``s3://`` URI, or a path in the reader's filesystem).
    ``judgements`` are ``(id or unit key, grade)`` in the order of the line; ``row`` is the
    1-based line number.
    """

    query_id: str
    query_type: str
    judgements: tuple[tuple[str, int], ...]
    row: int
    text: str | None = None
    file: str | None = None

    @property
    def modality(self) -> str:
        """``text`` for a text query, else the file's modality (``image``, ``audio``, ``video``)."""
        if self.file is None:
            return "text"
        return QUERY_FILE_MODALITIES[Path(self.file).suffix.lower()]

    @property
    def level(self) -> Level:
        """``unit`` when any judged entry is a unit key (has a ``#``), else ``item``.

        At the unit level an entry without ``#`` matches only the unit whose key is exactly that
        id, i.e. an item embedded whole (an image).
        """
        return "unit" if any("#" in entry for entry, _ in self.judgements) else "item"

    @property
    def grades(self) -> dict[str, int]:
        """Judged id → grade (a fresh dict)."""
        return dict(self.judgements)

    @property
    def relevant(self) -> frozenset[str]:
        """The ids judged relevant (grade ≥ 1); empty when every judgement is 0."""
        return frozenset(entry for entry, grade in self.judgements if grade >= 1)


@dataclass(frozen=True)
class QrelsIssue:
    """A problem in one row: its 1-based line, its query id if it had one, and what is wrong."""

    row: int
    query_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (query {self.query_id!r})" if self.query_id else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class QrelsError(QrelsIssue):
    """A row that was not loaded, and why."""


@dataclass(frozen=True)
class QrelsWarning(QrelsIssue):
    """Something odd in a row that was loaded all the same (the message says what it means)."""


@dataclass(frozen=True)
class LabeledQueries:
    """What a qrels file held: the rows that loaded, in file order, and the ones that did not."""

    queries: tuple[LabeledQuery, ...]
    errors: tuple[QrelsError, ...]
    warnings: tuple[QrelsWarning, ...]

    @property
    def ok(self) -> bool:
        """True when every row loaded (there may still be warnings)."""
        return not self.errors


class _RowError(Exception):
    """Raised inside a row's checks; becomes that row's QrelsError."""


def parse_qrels(
    text: str,
    *,
    known: Callable[[str], bool],
    modality_of: Callable[[str], str | None],
    base_dir: str,
    file_exists: Callable[[str], bool],
) -> LabeledQueries:
    """Parse qrels JSONL ``text``; pure but for the three callables it is given.

    ``known(id_or_key)`` says whether the index (or corpus) has that item or unit,
    ``modality_of(id_or_key)`` gives its modality (None when unknown) to derive query types,
    and ``file_exists(resolved_path)`` checks a query file resolved against ``base_dir``.
    Blank lines are skipped; every other line is loaded or reported.
    """
    queries: list[LabeledQuery] = []
    errors: list[QrelsError] = []
    warnings: list[QrelsWarning] = []
    first_row: dict[str, int] = {}
    # Only "\n" ends a row: str.splitlines would also split at U+2028, which JSON allows raw.
    for row, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        query_id: str | None = None
        row_warnings: list[str] = []
        try:
            record = _json_object(line)
            query_id = _query_id(record)
            if query_id in first_row:
                raise _RowError(f"duplicate query_id (first on row {first_row[query_id]})")
            first_row[query_id] = row
            query = _query(
                record, row, query_id, known, modality_of, base_dir, file_exists, row_warnings
            )
        except _RowError as error:
            errors.append(QrelsError(row, query_id, str(error)))
            continue
        queries.append(query)
        warnings.extend(QrelsWarning(row, query_id, message) for message in row_warnings)
    return LabeledQueries(tuple(queries), tuple(errors), tuple(warnings))


def read_qrels(
    path: str,
    *,
    known: Callable[[str], bool],
    modality_of: Callable[[str], str | None],
    filesystem: pafs.FileSystem | None = None,
    base_dir: str | None = None,
) -> LabeledQueries:
    """Read and parse the qrels file at ``path`` (UTF-8, a BOM allowed).

    Without ``filesystem``, ``path`` is a local path or a URI such as ``s3://bucket/qrels.jsonl``;
    with one, a path in that filesystem. Query files resolve against ``base_dir`` (default: the
    qrels file's directory, as a URI when ``path`` was one); an absolute file or a URI is kept.
    A missing or undecodable qrels file raises; row problems are returned, not raised.
    """
    if filesystem is None:
        uri = path if "://" in path else Path(path).expanduser().resolve().as_posix()
        filesystem, fs_path = pafs.FileSystem.from_uri(uri)
        default_base = posixpath.dirname(uri if "://" in path else fs_path)
    else:
        fs_path = path
        default_base = posixpath.dirname(fs_path)
    with filesystem.open_input_stream(fs_path) as stream:
        raw = stream.read()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from error

    def file_exists(resolved: str) -> bool:
        if "://" in resolved:
            target_fs, target = pafs.FileSystem.from_uri(resolved)
        else:
            target_fs, target = filesystem, resolved
        return target_fs.get_file_info(target).type == pafs.FileType.File

    return parse_qrels(
        content,
        known=known,
        modality_of=modality_of,
        base_dir=default_base if base_dir is None else base_dir,
        file_exists=file_exists,
    )


# -- one row -----------------------------------------------------------------------------------


def _json_object(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise _RowError(f"not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise _RowError(f"expected a JSON object, got {type(record).__name__}")
    return record


def _query_id(record: Mapping[str, Any]) -> str:
    query_id = record.get("query_id")
    if query_id is None:
        raise _RowError("missing query_id")
    if not isinstance(query_id, str) or not query_id.strip():
        raise _RowError(f"query_id must be a non-empty string, got {query_id!r}")
    return query_id


def _query(
    record: Mapping[str, Any],
    row: int,
    query_id: str,
    known: Callable[[str], bool],
    modality_of: Callable[[str], str | None],
    base_dir: str,
    file_exists: Callable[[str], bool],
    warnings: list[str],
) -> LabeledQuery:
    text, file = _query_input(record, base_dir, file_exists)
    judgements = _judgements(record.get("relevant"))
    _check_level(judgements, modality_of)
    _check_known(judgements, known, warnings)
    if not any(grade >= 1 for _, grade in judgements):
        warnings.append("no entry has grade ≥ 1: the query scores 0 on every metric")
    unexpected = sorted(set(record) - _FIELDS)
    if unexpected:
        warnings.append(f"ignored unknown fields {unexpected}")
    query_modality = "text" if file is None else QUERY_FILE_MODALITIES[Path(file).suffix.lower()]
    query_type = record.get("type")
    if query_type is None:
        query_type = f"{query_modality}→{_target_modality(judgements, modality_of)}"
    elif not isinstance(query_type, str) or not query_type.strip():
        raise _RowError(f"type must be a non-empty string, got {query_type!r}")
    return LabeledQuery(query_id, query_type, judgements, row, text=text, file=file)


def _query_input(
    record: Mapping[str, Any], base_dir: str, file_exists: Callable[[str], bool]
) -> tuple[str | None, str | None]:
    text, file = record.get("text"), record.get("file")
    if text is None and file is None:
        raise _RowError("give text or file: the query has neither")
    if text is not None and file is not None:
        raise _RowError("give text or file, not both")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise _RowError(f"text must be a non-empty string, got {text!r}")
        if len(text) > TEXT_QUERY_MAX_CHARS:
            raise _RowError(
                f"text has {len(text):,} characters, over the {TEXT_QUERY_MAX_CHARS:,} "
                "a query can embed"
            )
        return text, None
    if not isinstance(file, str) or not file.strip():
        raise _RowError(f"file must be a non-empty path, got {file!r}")
    suffix = Path(file).suffix.lower()
    if suffix not in QUERY_FILE_MODALITIES:
        raise _RowError(
            f"query file {file!r} is not an image, audio or video file "
            f"(suffixes: {' '.join(QUERY_FILE_MODALITIES)})"
        )
    resolved = _resolve(file, base_dir)
    if not file_exists(resolved):
        raise _RowError(f"query file not found: {resolved}")
    return None, resolved


def _resolve(file: str, base_dir: str) -> str:
    if "://" in file or posixpath.isabs(file):
        return file
    if "://" in base_dir:
        scheme, rest = base_dir.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, file))}"
    return posixpath.normpath(posixpath.join(base_dir, file))


def _judgements(relevant: object) -> tuple[tuple[str, int], ...]:
    if relevant is None:
        raise _RowError("missing relevant")
    if isinstance(relevant, list):
        pairs = [(entry, 1) for entry in relevant]
    elif isinstance(relevant, dict):
        pairs = list(relevant.items())
    else:
        raise _RowError(
            "relevant must be a list of ids or an object of id → grade, "
            f"got {type(relevant).__name__}"
        )
    if not pairs:
        raise _RowError("relevant is empty")
    seen: set[str] = set()
    for entry, grade in pairs:
        if not isinstance(entry, str) or not entry.strip():
            raise _RowError(f"relevant ids must be non-empty strings, got {entry!r}")
        if entry in seen:
            raise _RowError(f"relevant lists {entry!r} twice")
        seen.add(entry)
        # bool is an int in Python, but true/false is no grade.
        if isinstance(grade, bool) or not isinstance(grade, int):
            raise _RowError(f"grade of {entry!r} must be an integer ≥ 0, got {grade!r}")
        if grade < 0:
            raise _RowError(f"grade of {entry!r} is negative ({grade}); use 0 for not relevant")
    return tuple(pairs)


def _check_level(
    judgements: tuple[tuple[str, int], ...], modality_of: Callable[[str], str | None]
) -> None:
    # In a unit-level query an entry without '#' can only match a unit keyed by the bare item id,
    # which only images have: a whole PDF, text or clip named there would silently never match.
    if not any("#" in entry for entry, _ in judgements):
        return
    whole = [
        entry
        for entry, _ in judgements
        if "#" not in entry and modality_of(entry) not in (None, "image")
    ]
    if whole:
        raise _RowError(
            f"mixes item ids {whole} with unit keys: judge either whole items or units "
            "(e.g. 'pdf/manual#page=2') in one query"
        )


def _check_known(
    judgements: tuple[tuple[str, int], ...], known: Callable[[str], bool], warnings: list[str]
) -> None:
    unknown = [entry for entry, _ in judgements if not known(entry)]
    if not unknown:
        return
    relevant = [entry for entry, grade in judgements if grade >= 1]
    if relevant and all(entry in unknown for entry in relevant):
        raise _RowError(f"none of the relevant ids is in the index: {relevant}")
    warnings.append(
        f"ids not in the index: {unknown}; they stay judged, so recall counts them as missed"
    )


def _target_modality(
    judgements: tuple[tuple[str, int], ...], modality_of: Callable[[str], str | None]
) -> str:
    targets = [entry for entry, grade in judgements if grade >= 1] or [e for e, _ in judgements]
    modalities = sorted({m for m in map(modality_of, targets) if m is not None})
    return "+".join(modalities) or "unknown"
