"""PutVectors requests built a block of rows at a time are byte for byte the requests novaflow
built one row at a time (the reference below is that code as it was), whatever the rows hold:
edge values, rows the service would refuse, repeated keys, long keys, metadata to trim."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson
import pytest

from tasks import vector_store
from tasks.index.put_requests import PutOutcome, PutRequests, VectorBlock, _wire_rows
from tasks.settings import IndexSettings
from tasks.vector_store import put_vector_blocks, put_vectors
from tests.unit.index.test_put_vectors_wire import _capturing_client, _SentError

Row = tuple[str, Any, Mapping[str, Any]]

# -- the per-row requests as novaflow built them before blocks (kept verbatim) --------------


def _reference_json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _reference_storable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        items = [_reference_storable(v) for v in value]
        if any(item is None or isinstance(item, list) for item in items):
            return None
        return items
    return None


def _reference_fitted(
    metadata: Mapping[str, Any], non_filterable_keys: Collection[str]
) -> tuple[dict[str, Any], str | None]:
    kept: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for key, value in metadata.items():
        storable = _reference_storable(value)
        if not isinstance(key, str) or not 1 <= len(key) <= 63:
            reasons[str(key)[:80]] = "key must be 1-63 characters"
        elif storable is None:
            reasons[key] = "value must be a string, number, boolean or a list of those"
        else:
            kept[key] = storable
    if not reasons and len(kept) <= 50 and _reference_json_bytes(kept) <= 2048:
        return kept, None
    non_filterable = set(non_filterable_keys)

    def filterable() -> dict[str, Any]:
        return {k: v for k, v in kept.items() if k not in non_filterable}

    def drop_largest(candidates: Mapping[str, Any], reason: str) -> None:
        key = max(candidates, key=lambda k: (_reference_json_bytes(candidates[k]), k))
        del kept[key]
        reasons[key] = reason

    while len(kept) > 50:
        drop_largest(filterable() or kept, "more than 50 keys")
    while _reference_json_bytes(filterable()) > 2048:
        drop_largest(filterable(), "filterable metadata over 2048 bytes")
    while _reference_json_bytes(kept) > 40960:
        drop_largest(kept, "metadata over 40960 bytes")
    if not reasons:
        return kept, None
    dropped = tuple(reasons)
    details = "; ".join(f"{key!r}: {reason}" for key, reason in reasons.items())
    warning = (
        f"dropped metadata {list(dropped)} ({details}); declare large keys in "
        "IndexSettings.non_filterable_keys when creating an index"
    )
    return kept, warning


def _reference_problem(key: str, vector: Any, metric: str) -> str | None:
    if not 1 <= len(key) <= 1024:
        return "vector key must be 1-1024 characters"
    values = np.asarray(vector)
    if values.dtype != np.float32:
        values = values.astype(np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        return "vector must be one-dimensional with no NaN or Infinity"
    if metric == "cosine" and not values.astype(np.float32, copy=False).any():
        return "a cosine index refuses an all-zero vector"
    return None


def _reference_wire(vector: np.ndarray) -> tuple[np.ndarray, int]:
    values = vector.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = 8 - np.floor(np.log10(np.abs(values)))
        compact = (shift >= 0) & (shift <= 22)
    scale = (10.0 ** np.arange(23))[np.where(compact, shift, 0.0).astype(np.intp)]
    wire = np.where(compact, np.round(values * scale) / scale, values)
    count = int(np.count_nonzero(compact))
    return wire, 18 * count + 26 * (values.size - count)


def _reference_put(
    rows: Iterable[Row], settings: IndexSettings, requests: list[list[bytes]]
) -> PutOutcome:
    non_filterable = frozenset(settings.non_filterable_keys)
    budget = 20 * 1024 * 1024 - 64 * 1024
    batch: dict[str, bytes] = {}
    batch_bytes = 0
    sizes: list[int] = []
    warnings: list[str] = []
    trimmed = 0
    rejected: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            requests.append(list(batch.values()))
            sizes.append(len(batch))
            batch, batch_bytes = {}, 0

    for key, vector, metadata in rows:
        problem = _reference_problem(key, vector, settings.metric)
        if problem is not None:
            rejected.append((key, problem))
            continue
        fitted, warning = _reference_fitted(metadata, non_filterable)
        if warning is not None:
            trimmed += 1
            if len(warnings) < 100:
                warnings.append(f"{key}: {warning}")
        wire, row_bytes = _reference_wire(np.asarray(vector, dtype=np.float32))
        key_json, metadata_json = json.dumps(key), json.dumps(fitted)
        row_bytes += len(key_json) + len(metadata_json) + 64
        if key not in batch and (len(batch) >= 500 or batch_bytes + row_bytes > budget):
            flush()
        batch[key] = b"".join(
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
        batch_bytes += row_bytes
    flush()
    return PutOutcome(
        sum(sizes), len(sizes), tuple(sizes), trimmed, tuple(warnings), tuple(rejected)
    )


# -- rows with everything the requests must get right ---------------------------------------


def _edge_vectors(rng: np.random.Generator, count: int, dimension: int) -> np.ndarray:
    """Random float32 vectors over 40 decades, both signs, with zeros, denormals, values
    below 1e-14 and above 1e9 in every row (some of them in rows under 12 wide)."""
    scales = 10.0 ** rng.integers(-20, 20, size=(count, dimension))
    vectors = (rng.standard_normal((count, dimension)) * scales).astype(np.float32)
    edges = np.asarray(
        [0.0, -0.0, 1e-45, -1e-40, 1e-15, 9.99e-15, 1e-14, 999999999.0, 1e9, -3.4e38, 1e10, -1.5],
        dtype=np.float32,
    )
    placed = min(len(edges), dimension)
    for row in vectors:
        row[rng.choice(dimension, size=placed, replace=False)] = rng.permutation(edges)[:placed]
    return vectors


def _metadata(rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Realistic metadata, and every so often metadata that has to be trimmed or escaped."""
    metadata: dict[str, Any] = {
        "item_id": f"corpus/note-{n:05d}.txt",
        "source_uri": f"s3://corpus/notes/note-{n:05d}.txt",
        "modality": "text",
        "segment": n % 3,
        "score": float(rng.standard_normal()),
        "title": "Café ☕ naïve",
    }
    kind = n % 11
    if kind == 1:
        metadata["summary"] = "é" * 1200  # filterable and over 2 KB once in UTF-8
    elif kind == 2:
        metadata.update({f"k{i:02d}": i for i in range(60)})  # more than 50 keys
    elif kind == 3:
        metadata.update({"none": None, "nested": {"a": 1}, "nan": float("nan"), "": "empty"})
    elif kind == 4:
        metadata["source_uri"] = "s3://c/" + "p" * 50_000  # the whole over 40 KB
    elif kind == 5:
        metadata["emoji"] = "🦊" * 100  # surrogate pairs in ASCII-escaped JSON
    elif kind == 6:
        metadata["flags"] = [np.bool_(True), np.int64(3), np.float32(0.5), "x"]
    elif kind == 7:
        metadata["note"] = "x" * (2048 - 200)  # close to the filterable limit
    return metadata


def _rows(seed: int, count: int, dimension: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    vectors = _edge_vectors(rng, count, dimension)
    vectors[3, 5] = np.nan
    vectors[4, 0] = np.inf
    vectors[5, -1] = -np.inf
    vectors[6] = 0.0
    vectors[7] = -0.0
    keys = [f"corpus/note-{n:05d}.txt#chunk=0" for n in range(count)]
    keys[8] = "k" * 1025
    keys[9] = "k" * 1024
    keys[10] = ""
    for repeated in (22, 23, 40, 510, 530, 600):  # a key seen earlier, mostly in one batch
        if repeated < count:
            keys[repeated] = keys[repeated - 2]
    if count > 700:
        keys[700] = keys[4]  # the key of a refused row
    return [(keys[n], vectors[n], _metadata(rng, n)) for n in range(count)]


def _blocks(rows: list[Row], size: int) -> Iterator[VectorBlock]:
    for start in range(0, len(rows), size):
        keys, vectors, metadata = zip(*rows[start : start + size], strict=True)
        yield VectorBlock(list(keys), np.stack(vectors), list(metadata))


def _requests(sent: list[list[bytes]], settings: IndexSettings) -> PutRequests:
    return PutRequests(sent.append, settings.metric, settings.non_filterable_keys)


def _new_rows(rows: Iterable[Row], settings: IndexSettings) -> tuple[list[list[bytes]], Any]:
    sent: list[list[bytes]] = []
    requests = _requests(sent, settings)
    requests.add_rows(rows)
    return sent, requests.outcome()


def _new_blocks(
    blocks: Iterable[VectorBlock], settings: IndexSettings
) -> tuple[list[list[bytes]], Any]:
    sent: list[list[bytes]] = []
    requests = _requests(sent, settings)
    for block in blocks:
        requests.add_block(block)
    return sent, requests.outcome()


def _reference(rows: Iterable[Row], settings: IndexSettings) -> tuple[list[list[bytes]], Any]:
    sent: list[list[bytes]] = []
    return sent, _reference_put(rows, settings, sent)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(("seed", "dimension"), [(0, 1024), (1, 7), (2, 256)])
def test_block_and_row_requests_are_the_reference_bytes(
    metric: str, seed: int, dimension: int
) -> None:
    settings = IndexSettings(metric=metric)
    rows = _rows(seed, 1_100, dimension)
    expected, outcome = _reference(rows, settings)
    assert outcome.rejected  # the refused rows are there to be refused
    assert outcome.vectors_with_dropped_metadata > 0
    assert outcome.batch_sizes[0] == 500
    assert (_new_rows(rows, settings)) == (expected, outcome)
    for size in (500, 33, 1):
        assert _new_blocks(_blocks(rows, size), settings) == (expected, outcome), size


def test_an_all_zero_row_is_refused_on_a_cosine_index_only() -> None:
    rows = _rows(3, 40, 16)
    for metric in ("cosine", "euclidean"):
        _, outcome = _new_blocks(_blocks(rows, 40), IndexSettings(metric=metric))
        zero_refused = any(key == rows[6][0] for key, _ in outcome.rejected)
        assert zero_refused == (metric == "cosine")
        refused = {key for key, _ in outcome.rejected}
        assert {rows[3][0], rows[4][0], rows[5][0], "k" * 1025, ""} <= refused
        assert "k" * 1024 not in refused


def test_requests_are_cut_at_the_same_byte_budget() -> None:
    # ~120 KB of escaped JSON a row: requests fill the 20 MiB budget long before 500 rows.
    rng = np.random.default_rng(4)
    vectors = _edge_vectors(rng, 400, 1024)
    settings = IndexSettings()
    rows = [(f"h{n % 350}", vectors[n], {"source_uri": "é" * 20_000, "n": n}) for n in range(400)]
    expected, outcome = _reference(rows, settings)
    assert len(outcome.batch_sizes) > 2
    assert max(outcome.batch_sizes) < 500
    assert _new_rows(rows, settings) == (expected, outcome)
    assert _new_blocks(_blocks(rows, 500), settings) == (expected, outcome)


def test_a_key_repeated_in_a_full_batch_replaces_its_entry_without_a_new_request() -> None:
    vectors = _edge_vectors(np.random.default_rng(10), 503, 4)
    rows: list[Row] = [(f"k{n}", vectors[n], {"n": n}) for n in range(500)]
    rows += [
        ("k0", vectors[500], {"n": "again"}),
        ("k1", vectors[501], {}),
        ("k500", vectors[502], {}),
    ]
    settings = IndexSettings()
    expected, outcome = _reference(rows, settings)
    assert outcome.batch_sizes == (500, 1)
    assert _new_rows(rows, settings) == (expected, outcome)
    assert _new_blocks(_blocks(rows, 501), settings) == (expected, outcome)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_request_filled_to_the_last_byte_of_the_budget_is_cut_where_it_was() -> None:
    # Each row counts 65,536 bytes (18 for its one float, 7 its key, 65,447 its metadata, 64
    # more): 319 of them are exactly the 20 MiB less 64 KiB a request may hold.
    text = "é" * 10_904 + "x" * 5
    rows: list[Row] = [
        (f"k{n:04d}", np.asarray([0.5], np.float32), {"source_uri": text}) for n in range(700)
    ]
    settings = IndexSettings()
    expected, outcome = _reference(rows, settings)
    assert outcome.batch_sizes == (319, 319, 62)
    assert _new_rows(rows, settings) == (expected, outcome)
    assert _new_blocks(_blocks(rows, 500), settings) == (expected, outcome)


@pytest.mark.parametrize("seed", range(3))
def test_rows_rounded_together_are_each_rounded_as_alone(seed: int) -> None:
    vectors = _edge_vectors(np.random.default_rng(seed), 64, 300)
    vectors[0, :3] = [np.nan, np.inf, -np.inf]
    wire, bounds = _wire_rows(vectors)
    for row, vector in enumerate(vectors):
        alone, bound = _reference_wire(vector)
        assert wire[row].tobytes() == alone.tobytes()
        assert bounds[row] == bound


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_rows_of_other_kinds_of_vectors_are_built_as_before() -> None:
    rng = np.random.default_rng(5)
    base = _edge_vectors(rng, 6, 8)
    wide = np.ascontiguousarray(_edge_vectors(rng, 2, 16))
    rows: list[Row] = [
        ("f32", base[0], {}),
        ("f64", base[1].astype(np.float64), {}),
        ("f64-overflows-float32", np.full(8, 1e39), {}),
        ("f64-underflows-to-zero", np.full(8, 1e-50), {}),
        ("list", [float(x) for x in base[2]], {}),
        ("ints", np.arange(1, 9), {}),
        ("two-d", base[3:5], {}),
        ("strided", wide[0][::2], {}),
        ("other-length", wide[1], {}),
        ("f16", base[5].astype(np.float16), {}),
        ("empty", np.zeros(0, np.float32), {}),
    ]
    float32_only: list[Row] = [
        ("a", base[0], {}),
        ("strided", wide[0][::2], {}),
        ("b", base[4], {}),
    ]
    no_floats: list[Row] = [
        ("e1", np.zeros(0, np.float32), {}),
        ("e2", np.zeros(0, np.float32), {}),
    ]
    for metric in ("cosine", "euclidean"):
        settings = IndexSettings(metric=metric)
        for case in (rows, rows[::-1], float32_only, no_floats):
            assert _new_rows(case, settings) == _reference(case, settings)


def test_rows_that_fail_midway_send_what_they_sent_before() -> None:
    rows = _rows(6, 700, 8)

    def failing() -> Iterator[Row]:
        yield from rows[:650]
        raise OSError("the source went away")

    expected: list[list[bytes]] = []
    with pytest.raises(OSError, match="went away"):
        _reference_put(failing(), IndexSettings(), expected)
    sent: list[list[bytes]] = []
    requests = _requests(sent, IndexSettings())
    with pytest.raises(OSError, match="went away"):
        requests.add_rows(failing())
    assert len(expected) == 1
    assert sent == expected


def test_metadata_the_service_cannot_measure_fails_after_the_same_requests() -> None:
    # A lone surrogate cannot be UTF-8: measuring it raised, and still does, at the same row.
    rows = _rows(7, 600, 8)
    rows[550] = (rows[550][0], rows[550][1], {"bad": "\ud800"})
    expected: list[list[bytes]] = []
    with pytest.raises(UnicodeEncodeError):
        _reference_put(rows, IndexSettings(), expected)
    for build in (
        lambda requests: requests.add_rows(rows),
        lambda requests: [requests.add_block(b) for b in _blocks(rows, 500)],
    ):
        sent: list[list[bytes]] = []
        with pytest.raises(UnicodeEncodeError):
            build(_requests(sent, IndexSettings()))
        assert sent == expected


def test_a_block_must_hold_float32_rows_one_per_key() -> None:
    with pytest.raises(ValueError, match="float32"):
        VectorBlock(["a"], np.zeros((1, 4)), [{}])
    with pytest.raises(ValueError, match="float32"):
        VectorBlock(["a"], np.zeros(4, np.float32), [{}])
    with pytest.raises(ValueError, match="one each per row"):
        VectorBlock(["a", "b"], np.zeros((1, 4), np.float32), [{}])


def test_put_vectors_and_put_vector_blocks_send_the_reference_bodies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = IndexSettings()
    rows = _rows(8, 1_100, 64)
    expected, outcome = _reference(rows, settings)
    sent: list[list[bytes]] = []
    monkeypatch.setattr(vector_store, "_put", lambda client, pacer, where, v: sent.append(v))
    assert put_vectors(None, settings, iter(rows), None) == outcome  # type: ignore[arg-type]
    assert sent == expected
    sent.clear()
    blocks = _blocks(rows, 500)
    assert put_vector_blocks(None, settings, blocks, None) == outcome  # type: ignore[arg-type]
    assert sent == expected


def test_the_sent_body_is_the_reference_body() -> None:
    settings = IndexSettings(vector_bucket="wire-tests", index="wire")
    rows = _rows(9, 300, 32)
    (entries,), _ = _reference(rows, settings)
    bodies: list[bytes] = []
    with pytest.raises(_SentError):
        put_vector_blocks(_capturing_client(bodies), settings, _blocks(rows, 500), _Pacer())
    members = [b'"vectorBucketName": "wire-tests"', b'"indexName": "wire"']
    vectors = b"[" + b", ".join(entries) + b"]"
    assert bodies == [b"{" + b", ".join([*members, b'"vectors": ' + vectors]) + b"}"]


class _Pacer:
    def acquire(self, vectors: int) -> None:
        pass

    def record_success(self) -> None:
        pass
