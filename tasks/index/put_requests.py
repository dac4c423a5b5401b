"""The bodies of PutVectors requests: each vector's entry (key, float32 data, metadata fitted to
the service's limits) as JSON, and a load's entries cut into requests of at most 500 vectors
and 20 MiB (``shared/reference/aws-apis.md`` §2.3-§2.5).

Entries are built a block of rows at a time: the vectors of a block are judged and rounded by
a dozen numpy passes over one (rows × dimension) array instead of as many calls per vector.
Rows that do not come as float32 vectors of one length are built one at a time; both ways
give the same bytes, so where a row goes never shows in a request.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson  # a dependency of Prefect's: numpy arrays to JSON in C, without Python floats

MAX_BATCH_VECTORS = 500
MAX_REQUEST_BYTES = 20 * 1024 * 1024
REQUEST_HEADROOM_BYTES = 64 * 1024  # the JSON envelope, and margin for estimates
MAX_METADATA_KEYS = 50
MAX_KEY_CHARS = 63
MAX_FILTERABLE_BYTES = 2 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_VECTOR_KEY_CHARS = 1024
MAX_KEPT_WARNINGS = 100
BLOCK_ROWS = 32
"""Rows judged and rounded together: their float64 working arrays (256 KB at 1,024-d) stay in
the CPU's cache across the passes, which a whole 500-row batch's would not."""
# Bytes of one float in botocore's JSON (", " separators) after ``wire_floats``: at most 9
# significant digits, so ≤ 16 characters plus separator below 1e9; a raw float64 repr ≤ 24.
COMPACT_FLOAT_BYTES, RAW_FLOAT_BYTES = 18, 26
_POWERS_OF_TEN = 10.0 ** np.arange(23)  # exact doubles, as np.power(10.0, n) gives them
_BAD_KEY = f"vector key must be 1-{MAX_VECTOR_KEY_CHARS} characters"
_NOT_FINITE = "vector must be one-dimensional with no NaN or Infinity"
_ALL_ZERO = "a cosine index refuses an all-zero vector"


@dataclass(frozen=True)
class FittedMetadata:
    """Metadata that fits the service's limits: ``metadata`` to send, the ``dropped_keys`` that
    did not fit (or had a key or value the service refuses), and a ``warning`` saying which and
    why (None when nothing was dropped)."""

    metadata: dict[str, Any]
    dropped_keys: tuple[str, ...]
    warning: str | None


@dataclass(frozen=True)
class PutOutcome:
    """What ``put_vectors`` did: ``vectors_written`` in ``batches`` requests (their sizes in
    ``batch_sizes``); ``vectors_with_dropped_metadata`` counts vectors whose metadata was
    trimmed, ``warnings`` says why (the first 100); ``rejected`` lists ``(key, reason)`` of rows
    not written because the service would refuse the vector itself."""

    vectors_written: int
    batches: int
    batch_sizes: tuple[int, ...]
    vectors_with_dropped_metadata: int
    warnings: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VectorBlock:
    """Rows to put, as a checkpoint holds them: ``keys[i]`` names the float32 vector
    ``vectors[i]`` (a rows × dimension array) with the metadata ``metadata[i]``."""

    keys: Sequence[str]
    vectors: np.ndarray
    metadata: Sequence[Mapping[str, Any]]

    def __post_init__(self) -> None:
        if self.vectors.dtype != np.float32 or self.vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-D float32 array, got {self.vectors.dtype}")
        if not len(self.keys) == len(self.vectors) == len(self.metadata):
            raise ValueError(
                f"{len(self.keys)} keys, {len(self.vectors)} vectors and "
                f"{len(self.metadata)} metadata: one each per row"
            )


class PutRequests:
    """The PutVectors requests of one load, cut as its rows arrive: ``send`` gets each
    request's entries (JSON, in order) once the next row does not fit, ``outcome()`` sends the
    last and says what was done. A key repeated within a request is sent once, last row
    wins; rows the service would refuse are reported, not sent (see ``put_vectors``)."""

    def __init__(
        self,
        send: Callable[[list[bytes]], None],
        metric: str,
        non_filterable_keys: Collection[str],
    ) -> None:
        self._send = send
        self._metric = metric
        self._non_filterable = frozenset(non_filterable_keys)
        self._batch: dict[str, bytes] = {}
        self._batch_bytes = 0
        self._sizes: list[int] = []
        self._warnings: list[str] = []
        self._trimmed = 0
        self._rejected: list[tuple[str, str]] = []

    def add_rows(self, rows: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]]) -> None:
        """Add ``(key, vector, metadata)`` rows, in order."""
        for block in _row_blocks(rows):
            first = block[0][1]
            shape = first.shape if type(first) is np.ndarray else None
            if (
                shape is not None
                and len(shape) == 1
                and all(
                    type(vector) is np.ndarray
                    and vector.dtype == np.float32
                    and vector.shape == shape
                    for _, vector, _ in block
                )
            ):
                keys, vectors, metadata = zip(*block, strict=True)
                self._add_block_rows(keys, np.stack(vectors), metadata)
            else:
                for key, vector, metadata in block:
                    self._add_row(key, vector, metadata)

    def add_block(self, block: VectorBlock) -> None:
        """Add ``block``'s rows, in order."""
        for start in range(0, len(block.keys), BLOCK_ROWS):
            end = start + BLOCK_ROWS
            self._add_block_rows(
                block.keys[start:end], block.vectors[start:end], block.metadata[start:end]
            )

    def outcome(self) -> PutOutcome:
        """Send what is left; what was sent and what was not."""
        self._flush()
        return PutOutcome(
            vectors_written=sum(self._sizes),
            batches=len(self._sizes),
            batch_sizes=tuple(self._sizes),
            vectors_with_dropped_metadata=self._trimmed,
            warnings=tuple(self._warnings),
            rejected=tuple(self._rejected),
        )

    def _add_row(self, key: str, vector: np.ndarray, metadata: Mapping[str, Any]) -> None:
        problem = vector_problem(key, vector, self._metric)
        if problem is not None:
            self._rejected.append((key, problem))
            return
        metadata_json = self._fitted(key, metadata)
        wire, wire_bytes = wire_floats(np.asarray(vector, dtype=np.float32))
        self._place(key, wire, wire_bytes, metadata_json)

    def _add_block_rows(
        self, keys: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]
    ) -> None:
        """The rows of a few float32 vectors of one length (``vectors``: rows × dimension),
        each judged and placed as ``_add_row`` would."""
        finite = np.isfinite(vectors).all(axis=1).tolist()
        cosine = self._metric == "cosine"
        nonzero = vectors.any(axis=1).tolist() if cosine else []
        wire, wire_bytes = _wire_rows(vectors)
        bounds = wire_bytes.tolist()
        for row, key in enumerate(keys):
            problem = _key_problem(key)
            if problem is None and not finite[row]:
                problem = _NOT_FINITE
            if problem is None and cosine and not nonzero[row]:
                problem = _ALL_ZERO
            if problem is not None:
                self._rejected.append((key, problem))
                continue
            self._place(key, wire[row], bounds[row], self._fitted(key, metadata[row]))

    def _fitted(self, key: str, metadata: Mapping[str, Any]) -> str:
        metadata_json, warning = _fitted_json(metadata, self._non_filterable)
        if warning is not None:
            self._trimmed += 1
            if len(self._warnings) < MAX_KEPT_WARNINGS:
                self._warnings.append(f"{key}: {warning}")
        return metadata_json

    def _place(self, key: str, wire: np.ndarray, wire_bytes: int, metadata_json: str) -> None:
        # JSON as botocore writes it, with ", " separators and ASCII escapes; measured that way.
        key_json = json.dumps(key)
        row_bytes = wire_bytes + len(key_json) + len(metadata_json) + 64
        if key not in self._batch and (
            len(self._batch) >= MAX_BATCH_VECTORS
            or self._batch_bytes + row_bytes > MAX_REQUEST_BYTES - REQUEST_HEADROOM_BYTES
        ):
            self._flush()
        self._batch[key] = b"".join(
            (
                b'{"key": ',
                key_json.encode("ascii"),
                b', "data": {"float32": ',
                orjson.dumps(wire, option=orjson.OPT_SERIALIZE_NUMPY),
                b'}, "metadata": ',
                metadata_json.encode("ascii"),
                b"}",
            )
        )
        self._batch_bytes += row_bytes

    def _flush(self) -> None:
        if self._batch:
            self._send(list(self._batch.values()))
            self._sizes.append(len(self._batch))
            self._batch, self._batch_bytes = {}, 0


def _row_blocks(
    rows: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]],
) -> Iterator[list[tuple[str, np.ndarray, Mapping[str, Any]]]]:
    block: list[tuple[str, np.ndarray, Mapping[str, Any]]] = []
    try:
        for row in rows:
            block.append(row)
            if len(block) == BLOCK_ROWS:
                yield block
                block = []
    except Exception:
        # Rows read before ``rows`` failed are added first, sending what they fill, as when
        # rows were added one by one.
        if block:
            yield block
        raise
    if block:
        yield block


def fitted_metadata(
    metadata: Mapping[str, Any], non_filterable_keys: Collection[str]
) -> FittedMetadata:
    """``metadata`` trimmed to what PutVectors accepts, never refused whole.

    Keys outside 1-63 characters and values that are not strings, finite numbers, booleans or
    flat lists of those are dropped. Then, while there are more than 50 keys or the filterable
    part is over 2 KB, the filterable key with the largest value goes; while the whole is over
    40 KB, the key with the largest value goes whichever kind it is (filterable metadata is at
    most 2 KB by then, so this drops the large non-filterable values that cause it). Sizes are
    UTF-8 bytes of compact JSON, as the service measures them.
    """
    kept, reasons = _storable_items(metadata)
    # The filterable part is part of the whole: a whole within the smallest limit drops nothing
    # (the common case, settled with one measurement).
    if not reasons and len(kept) <= MAX_METADATA_KEYS and _json_bytes(kept) <= MAX_FILTERABLE_BYTES:
        return FittedMetadata(kept, (), None)
    return _trimmed(kept, reasons, non_filterable_keys)


def _fitted_json(
    metadata: Mapping[str, Any], non_filterable_keys: Collection[str]
) -> tuple[str, str | None]:
    """The JSON of ``fitted_metadata(metadata, non_filterable_keys)``'s metadata as botocore
    writes it (", " separators, ASCII escapes), and its warning."""
    kept, reasons = _storable_items(metadata)
    if not reasons and len(kept) <= MAX_METADATA_KEYS:
        text = json.dumps(kept)
        # This text is never shorter than the compact UTF-8 the limits count (spaced
        # separators; an escape of 6 or 12 bytes for a character UTF-8 writes in 2-4), so
        # within the smallest limit it is kept unmeasured. A surrogate escape is measured: a
        # lone one fails there as it always has.
        if len(text) <= MAX_FILTERABLE_BYTES and "\\ud" not in text:
            return text, None
        if _json_bytes(kept) <= MAX_FILTERABLE_BYTES:
            return text, None
    fitted = _trimmed(kept, reasons, non_filterable_keys)
    return json.dumps(fitted.metadata), fitted.warning


def _storable_items(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The items of ``metadata`` the service can store, and why each other key cannot be."""
    kept: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for key, value in metadata.items():
        storable = _storable(value)
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
            reasons[str(key)[:80]] = f"key must be 1-{MAX_KEY_CHARS} characters"
        elif storable is None:
            reasons[key] = "value must be a string, number, boolean or a list of those"
        else:
            kept[key] = storable
    return kept, reasons


def _trimmed(
    kept: dict[str, Any], reasons: dict[str, str], non_filterable_keys: Collection[str]
) -> FittedMetadata:
    """``kept`` less the keys that do not fit, largest first (see ``fitted_metadata``); both
    dicts are changed."""
    non_filterable = set(non_filterable_keys)

    def filterable() -> dict[str, Any]:
        return {k: v for k, v in kept.items() if k not in non_filterable}

    def drop_largest(candidates: Mapping[str, Any], reason: str) -> None:
        key = max(candidates, key=lambda k: (_json_bytes(candidates[k]), k))
        del kept[key]
        reasons[key] = reason

    while len(kept) > MAX_METADATA_KEYS:
        drop_largest(filterable() or kept, f"more than {MAX_METADATA_KEYS} keys")
    while _json_bytes(filterable()) > MAX_FILTERABLE_BYTES:
        drop_largest(filterable(), f"filterable metadata over {MAX_FILTERABLE_BYTES} bytes")
    while _json_bytes(kept) > MAX_METADATA_BYTES:
        drop_largest(kept, f"metadata over {MAX_METADATA_BYTES} bytes")
    if not reasons:
        return FittedMetadata(kept, (), None)
    dropped = tuple(reasons)
    details = "; ".join(f"{key!r}: {reason}" for key, reason in reasons.items())
    warning = (
        f"dropped metadata {list(dropped)} ({details}); declare large keys in "
        "IndexSettings.non_filterable_keys when creating an index"
    )
    return FittedMetadata(kept, dropped, warning)


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _storable(value: Any) -> Any:
    """``value`` as the JSON the service stores (numpy scalars made plain), or None if none."""
    kind = type(value)  # the plain kinds of most values first, before the isinstance checks
    if kind is str or kind is bool:
        return value
    if kind is int or kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        items = [_storable(v) for v in value]
        if any(item is None or isinstance(item, list) for item in items):
            return None
        return items
    return None


def vector_problem(key: str, vector: np.ndarray, metric: str) -> str | None:
    """Why the service would refuse to store ``vector`` under ``key`` in an index of
    ``metric``, or None when it would not."""
    problem = _key_problem(key)
    if problem is not None:
        return problem
    values = np.asarray(vector)
    if values.dtype != np.float32:  # float32 is what is sent: judge that, as the service will
        values = values.astype(np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        return _NOT_FINITE
    if metric == "cosine" and not values.astype(np.float32, copy=False).any():
        return _ALL_ZERO
    return None


def _key_problem(key: str) -> str | None:
    return None if 1 <= len(key) <= MAX_VECTOR_KEY_CHARS else _BAD_KEY


def wire_floats(vector: np.ndarray) -> tuple[np.ndarray, int]:
    """``vector`` as float64 values that print short in JSON, and a bound on their JSON bytes.

    A float32 needs 9 significant digits to round-trip exactly, but its float64 value prints
    with up to 17, making requests ~60% larger (a 500 × 3,072 batch would not fit in 20 MiB).
    Rounding to 9 digits by dividing an integer by an exact power of ten gives the double
    nearest that decimal, which prints as it (shortest round-trip repr, as Python's and
    orjson's) and parses back to the same float32.
    """
    wire, bounds = _wire_rows(vector.reshape(1, -1))
    return wire[0], int(bounds[0])


def _wire_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``wire_floats`` of each row of ``vectors`` (rows × dimension): the rows' values, and
    the bound of each."""
    wire, compact = _rounded(vectors.astype(np.float64))
    compact_counts = np.count_nonzero(compact, axis=1)
    raw_counts = vectors.shape[1] - compact_counts
    return wire, COMPACT_FLOAT_BYTES * compact_counts + RAW_FLOAT_BYTES * raw_counts


def _rounded(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (float64, any shape) rounded as ``wire_floats`` says, and where they were:
    a value with 9 significant digits above 1e-14 and below 1e9. In place, over one working
    array: this is most of the CPU of building a request after the JSON itself."""
    work = np.abs(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log10(work, out=work)
        np.floor(work, out=work)
        shift = np.subtract(8.0, work, out=work)
        # Powers of ten are exact doubles only up to 1e22; outside 1e-14..1e9 (and for 0, NaN
        # and infinities, whose shift is not finite) values are sent as they are.
        compact = shift >= 0
        compact &= shift <= 22
    loose = ~compact
    np.copyto(shift, 0.0, where=loose)
    scale = _POWERS_OF_TEN.take(shift.astype(np.intp))
    np.multiply(values, scale, out=work)
    np.rint(work, out=work)
    np.divide(work, scale, out=work)
    np.copyto(work, values, where=loose)
    return work, compact
