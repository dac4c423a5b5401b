"""A shard's model inputs as batch inference JSONL: one line ``{"recordId", "modelInput"}`` per
unit, ``modelInput`` being exactly the body InvokeModel would be sent.

A record's id names its shard and its position in the shard (``s0000012u00007``), so results
are matched back to units by id alone, in whatever order the service writes them. A shard's
records go to ``shard-<shard>.jsonl``, continued in ``shard-<shard>.<part>.jsonl`` when a file
would pass the per-file record or byte limit. A unit whose input cannot be prepared (unreadable,
over a limit) is refused here, with the same code and message InvokeModel's path gives it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from tasks.media.pdf_pages import PageRenderer
from tasks.media.unit_inputs import unit_payloads
from tasks.nova.requests import Payload, invoke_model_body
from tasks.records import Failure, Unit
from tasks.settings import NovaflowSettings

_RECORD_ID = re.compile(r"s([0-9]{7})u([0-9]{5})")
MAX_SHARDS = 9_999_999
MAX_UNITS_PER_SHARD = 99_999


def record_id(shard: int, position: int) -> str:
    """The recordId of the unit at ``position`` (0-based) of ``shard``: alphanumeric, as the
    batch input format asks."""
    if not (0 < shard <= MAX_SHARDS and 0 <= position <= MAX_UNITS_PER_SHARD):
        raise ValueError(f"no record id for shard {shard}, position {position}")
    return f"s{shard:07d}u{position:05d}"


def record_position(identifier: str) -> tuple[int, int] | None:
    """The ``(shard, position)`` a recordId names, or None for an id novaflow did not write."""
    match = _RECORD_ID.fullmatch(identifier)
    if match is None or int(match.group(1)) == 0:
        return None
    return int(match.group(1)), int(match.group(2))


def input_file_name(shard: int, part: int) -> str:
    """The name of ``shard``'s ``part``-th input file (1-based)."""
    return f"shard-{shard:07d}.jsonl" if part == 1 else f"shard-{shard:07d}.{part}.jsonl"


@dataclass(frozen=True)
class ShardInput:
    """A shard's JSONL files in a scratch folder: ``records`` lines in ``input_bytes`` bytes,
    and the units ``refused`` before any call."""

    shard: int
    files: tuple[Path, ...]
    records: int
    input_bytes: int
    refused: tuple[Failure, ...]


def _record_body(make_payload: Callable[[], Payload], settings: NovaflowSettings) -> bytes:
    """The modelInput of a unit, as InvokeModel's path makes its body; raises its errors."""
    return orjson.dumps(invoke_model_body(make_payload(), settings.embedding))


def _refusal(unit: Unit, err: Exception) -> Failure:
    """The Failure InvokeModel's path records for an input that cannot be prepared."""
    if isinstance(err, OSError):
        code = "unreadable_source"
    else:
        code = getattr(err, "code", None) or "invalid_input"
    return Failure(unit.item_id, unit.uri, "prepare", code, str(err), unit_key=unit.key)


class _Files:
    """The shard's files, a new one started when the next line would pass a limit."""

    def __init__(self, folder: Path, shard: int, max_records: int, max_bytes: int) -> None:
        self._folder, self._shard = folder, shard
        self._max_records, self._max_bytes = max_records, max_bytes
        self.paths: list[Path] = []
        self._stream: BinaryIO | None = None
        self._records = self._bytes = 0

    def write(self, line: bytes) -> None:
        full = self._records >= self._max_records or self._bytes + len(line) > self._max_bytes
        if self._stream is None or full:
            self.close()
            path = self._folder / input_file_name(self._shard, len(self.paths) + 1)
            self.paths.append(path)
            self._stream = path.open("wb")
            self._records = self._bytes = 0
        self._stream.write(line)
        self._records += 1
        self._bytes += len(line)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def shard_input(
    units: list[Unit],
    shard: int,
    settings: NovaflowSettings,
    renderer: PageRenderer | None,
    folder: Path,
) -> ShardInput:
    """Write the batch records of ``shard``'s ``units`` into ``folder`` (``renderer`` renders
    its PDF pages; None when it has none)."""
    if len(units) > MAX_UNITS_PER_SHARD + 1:
        raise ValueError(f"shard {shard} has {len(units)} units; a batch shard holds at most "
                         f"{MAX_UNITS_PER_SHARD + 1}")  # fmt: skip
    limits = settings.batch_inference
    position = {unit.key: index for index, unit in enumerate(units)}
    by_key = {unit.key: unit for unit in units}
    files = _Files(folder, shard, limits.max_records_per_file, limits.max_file_bytes)
    refused: list[Failure] = []
    records = written = 0
    try:
        for key, _, make_payload in unit_payloads(units, settings, renderer):
            unit = by_key[key]
            try:
                body = _record_body(make_payload, settings)
            except (ValueError, OSError) as err:
                refused.append(_refusal(unit, err))
                continue
            line = b'{"recordId":"%s","modelInput":%s}\n' % (
                record_id(shard, position[key]).encode(),
                body,
            )
            if len(line) > limits.max_file_bytes:
                refused.append(Failure(
                    unit.item_id, unit.uri, "prepare", "batch_record_too_large",
                    f"the batch record is {len(line):,} bytes, over the input file limit of "
                    f"{limits.max_file_bytes:,} (batch_inference.max_file_bytes)",
                    unit_key=key,
                ))  # fmt: skip
                continue
            files.write(line)
            records += 1
            written += len(line)
    finally:
        files.close()
    return ShardInput(shard, tuple(files.paths), records, written, tuple(refused))
