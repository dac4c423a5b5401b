"""Exact nearest neighbours by streaming: the ground truth that index recall is measured against.

Vectors arrive as Arrow record batches with a ``key`` and an ``embedding`` column (as in the
embeddings checkpoints, ``tasks.schemas.embeddings_schema``) and are never all in memory: each
block of at most ``block_rows`` rows is scored against every query with one float32 matrix
product and merged into a running top k per query. Peak memory is
O(queries × block_rows + queries × k), whatever the size of the data.

Distances are the S3 Vectors stand-in's (``emulator/s3vectors/search.py``):

- ``cosine``: 1 − cosine similarity, clipped to [0, 2] (a zero vector has similarity 0);
- ``euclidean``: the plain L2 distance ‖q − x‖, not squared.

How a block is searched: the float32 product only ranks. Each query keeps a threshold, its
k-th best distance so far widened by a bound on float32 rounding error, and one comparison picks
the few entries that could still enter its top k (``argpartition`` on every row would cost as
much as the product; it runs only while a top k is filling). Only those get their distance
recomputed in float64 and rounded to float32: the distances do not depend on how the data was
split into blocks, and neighbours are ordered by that float32 distance, then by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[Metric, ...] = ("cosine", "euclidean")
DEFAULT_BLOCK_ROWS = 8192
# Parquet is read through a buffer of this size, not a column chunk at a time, and decoded this
# many rows at a time: the reader holds several decoded batches, so they are kept small and
# joined into blocks.
READ_BUFFER_BYTES = 1 << 20
READ_BATCH_ROWS = 1024
_UNIT_ROUNDOFF = 2.0**-24  # of float32


@dataclass(frozen=True, eq=False)
class ExactNeighbours:
    """The exact ``k`` nearest neighbours of each query, nearest first, ties by key.

    ``keys[i]`` are the keys of query ``i``'s neighbours; there are fewer than ``k`` only when
    the data holds fewer than ``k`` vectors besides the query's own. ``distances[i, j]`` is the
    distance from query ``i`` to ``keys[i][j]`` in ``metric`` (float32), and ``+inf`` from
    ``j = len(keys[i])`` on.
    """

    keys: tuple[tuple[str, ...], ...]
    distances: np.ndarray
    k: int
    metric: Metric

    def __len__(self) -> int:
        return len(self.keys)

    def neighbours(self, query: int) -> list[tuple[str, float]]:
        """Query ``query``'s neighbours as ``(key, distance)`` pairs, nearest first."""
        keys = self.keys[query]
        return list(zip(keys, self.distances[query, : len(keys)].tolist(), strict=True))


def embedding_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The ``(rows, dimension)`` float32 matrix of a ``fixed_size_list<float32>`` column: a
    read-only view of the Arrow buffer, not a copy (a chunked column is joined first)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) and pa.types.is_float32(kind.value_type)):
        raise TypeError(f"an embedding column is fixed_size_list<float32>, not {kind}")
    if column.null_count:
        raise ValueError("the embedding column has null rows")
    dimension = kind.list_size
    values = column.values.slice(column.offset * dimension, len(column) * dimension)
    return values.to_numpy(zero_copy_only=True).reshape(len(column), dimension)


def checkpoint_blocks(
    filesystem: pafs.FileSystem,
    paths: Iterable[str],
    block_rows: int = DEFAULT_BLOCK_ROWS,
    columns: Sequence[str] = ("key", "embedding"),
) -> Iterator[pa.RecordBatch]:
    """The rows of the Parquet files at ``paths``, in that order, as record batches of
    ``block_rows`` rows (the last one shorter) holding only ``columns``.

    Files are read a few pages at a time and small files are joined into full blocks (a run
    writes a file per shard, often smaller than a block), so memory is bounded by about two
    blocks whatever the size of a file or row group.
    """
    _check_positive("block_rows", block_rows)
    batches = _parquet_batches(filesystem, paths, min(block_rows, READ_BATCH_ROWS), columns)
    yield from rechunked(batches, block_rows)


def rechunked(batches: Iterable[pa.RecordBatch], block_rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` cut again into record batches of ``block_rows`` rows (the last one shorter),
    in order: longer ones are sliced (no copy), shorter ones joined (copied)."""
    _check_positive("block_rows", block_rows)
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            part = batch.slice(0, block_rows - count)
            pending.append(part)
            count += part.num_rows
            batch = batch.slice(part.num_rows)
            if count == block_rows:
                yield _joined(pending)
                pending, count = [], 0
    if count:
        yield _joined(pending)


def _parquet_batches(
    filesystem: pafs.FileSystem, paths: Iterable[str], rows: int, columns: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    for path in paths:
        with filesystem.open_input_file(path) as source:
            parquet = pq.ParquetFile(source, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
            # One decoding thread: reader threads each keep memory of their own.
            yield from parquet.iter_batches(
                batch_size=rows, columns=list(columns), use_threads=False
            )


def _joined(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    # Column by column: files written apart may differ in nullability or schema metadata.
    names = parts[0].schema.names
    columns = [pa.concat_arrays([part.column(name) for part in parts]) for name in names]
    return pa.record_batch(columns, names=names)


def exact_top_k(
    queries: np.ndarray,
    query_keys: Sequence[str | None],
    blocks: Iterable[pa.RecordBatch],
    k: int,
    metric: Metric = "cosine",
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> ExactNeighbours:
    """The exact ``k`` nearest neighbours of each row of ``queries`` (``Q × dimension``) among
    the vectors of ``blocks`` (record batches with ``key`` and ``embedding`` columns).

    ``query_keys[i]`` is the key query ``i`` has in the data, or None: a query sampled from the
    index never finds itself. The batches are searched in blocks of ``block_rows`` rows (see
    ``rechunked``), which with the query count sets the memory used. Keys are taken to be
    unique in the data, as in the index.
    """
    search = _StreamingSearch(queries, query_keys, k, metric, block_rows)
    for block in rechunked(blocks, block_rows):
        search.add(block)
        del block  # before the next is read: a streaming source can then reuse its memory
    return search.result()


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


def _gamma(terms: int) -> float:
    """Higham's bound on the relative error of a float32 sum of ``terms`` products."""
    return terms * _UNIT_ROUNDOFF / (1 - terms * _UNIT_ROUNDOFF)


def _round_up_to_float32(values: np.ndarray) -> np.ndarray:
    rounded = values.astype(np.float32)
    low = rounded.astype(np.float64) < values
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return rounded


class _StreamingSearch:
    """The running state of one ``exact_top_k``: per query, its best ``k`` so far, sorted by
    (float32 distance, key); and the score buffer one block is ranked in."""

    def __init__(
        self,
        queries: np.ndarray,
        query_keys: Sequence[str | None],
        k: int,
        metric: Metric,
        block_rows: int,
    ) -> None:
        _check_positive("k", k)
        _check_positive("block_rows", block_rows)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        matrix = np.ascontiguousarray(queries, dtype=np.float32)
        if matrix.ndim != 2:
            raise ValueError(f"queries must be a (Q, dimension) matrix, not {matrix.shape}")
        if len(query_keys) != len(matrix):
            raise ValueError(f"{len(query_keys)} query keys for {len(matrix)} queries")
        self._k, self._metric, self._block_rows = k, metric, block_rows
        count, self._dimension = matrix.shape
        self._queries = matrix.astype(np.float64)
        self._norms = np.sqrt(np.einsum("ij,ij->i", self._queries, self._queries))
        if metric == "cosine":
            if count and not self._norms.all():
                raise ValueError("a zero query vector has no cosine distance")
            # ‖q̂‖ = 1, so a score's error is bounded by the dimension alone.
            self._ranking = (self._queries / self._norms[:, None]).astype(np.float32)
            self._margin_factor = 4 * _gamma(self._dimension + 4)
        else:
            self._ranking = matrix * np.float32(-2)  # exact: a power of two
            self._margin_factor = 2 * _gamma(self._dimension + 2)
        self._distances = np.full((count, k), np.inf, dtype=np.float32)
        self._keys = np.full((count, k), None, dtype=object)
        self._filled = np.zeros(count, dtype=np.int64)
        self._own_rows: dict[str, list[int]] = {}
        for row, key in enumerate(query_keys):
            if key is not None:
                self._own_rows.setdefault(key, []).append(row)
        self._own_keys = pa.array(list(self._own_rows), pa.string())
        self._buffer = np.empty(0, dtype=np.float32)

    def add(self, block: pa.RecordBatch) -> None:
        """Merge the rows of ``block`` (at most ``block_rows``) into every query's top k."""
        count = block.num_rows
        if count == 0 or len(self._queries) == 0:
            return
        keys = block.column("key")
        if keys.null_count:
            raise ValueError("the key column has null rows")
        vectors = embedding_matrix(block.column("embedding"))
        if vectors.shape[1] != self._dimension:
            raise ValueError(
                f"vectors of dimension {vectors.shape[1]} against queries of {self._dimension}"
            )
        scores, margins = self._scores(vectors)
        self._exclude_own(keys, scores)
        passed = np.flatnonzero(scores <= self._thresholds(scores, margins)[:, None])
        if passed.size == 0:
            return
        rows, columns = np.divmod(passed, count)
        distances = self._refine(rows, columns, vectors)
        entering = distances <= self._distances[rows, self._k - 1]
        rows, columns, distances = rows[entering], columns[entering], distances[entering]
        if rows.size:
            names = np.array(keys.take(pa.array(columns)).to_pylist(), dtype=object)
            self._merge(rows, distances, names)

    def _scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 scores ``(Q, rows)`` that order the block like the distance (cosine:
        −similarity; euclidean: ‖x‖² − 2q·x), and per query a bound on their error."""
        count, queries = len(vectors), len(self._queries)
        if self._buffer.size < queries * count:
            self._buffer = np.empty(queries * self._block_rows, dtype=np.float32)
        scores = self._buffer[: queries * count].reshape(queries, count)
        squared = np.einsum("ij,ij->i", vectors, vectors)
        if self._metric == "cosine":
            scale = np.zeros(count, dtype=np.float32)
            norms = np.sqrt(squared)
            np.divide(np.float32(-1), norms, out=scale, where=norms > 0)
            # Scale whichever is smaller, the block (rows × dimension) or its scores.
            if queries > self._dimension:
                np.matmul(self._ranking, (vectors * scale[:, None]).T, out=scores)
            else:
                np.matmul(self._ranking, vectors.T, out=scores)
                scores *= scale
            return scores, np.full(queries, self._margin_factor)
        np.matmul(self._ranking, vectors.T, out=scores)
        scores += squared
        largest = float(squared.max()) * (1 + 2 * _gamma(self._dimension))
        return scores, self._margin_factor * (2 * self._norms * np.sqrt(largest) + 2 * largest)

    def _exclude_own(self, keys: pa.Array, scores: np.ndarray) -> None:
        """Mark each query's own vector as never a candidate (NaN fails every comparison)."""
        if not len(self._own_keys):
            return
        present = pc.is_in(keys, value_set=self._own_keys).to_numpy(zero_copy_only=False)
        for column in np.flatnonzero(present).tolist():
            for row in self._own_rows[keys[column].as_py()]:
                scores[row, column] = np.nan

    def _score_of(self, distances: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The float64 score of a distance from query ``rows``: the inverse of ``_refine``."""
        if self._metric == "cosine":
            return distances - 1.0
        return distances * distances - self._norms[rows] ** 2

    def _thresholds(self, scores: np.ndarray, margins: np.ndarray) -> np.ndarray:
        """Per query, the float32 score above which no entry of the block can enter its top k.

        A full top k admits only what is at most its k-th distance (ties go by key), rounded
        up by one float32 step since stored distances are rounded. A top k still filling is
        bounded by the block itself: its k-th smallest score plus the error margin is an upper
        bound on the k-th distance after the merge.
        """
        k, rows = self._k, np.arange(len(scores))
        worst = self._distances[rows, np.maximum(self._filled - 1, 0)].astype(np.float64)
        worst = np.nextafter(worst, np.inf)
        limits = np.where(self._filled > 0, self._score_of(worst, rows), -np.inf)
        filling = np.flatnonzero(self._filled < k)
        if filling.size:
            if scores.shape[1] >= k:
                # NaN (a query's own vector) sorts last; a k-th that is NaN bounds nothing.
                kth = np.partition(scores[filling], k - 1, axis=1)[:, k - 1].astype(np.float64)
                kth = np.where(np.isnan(kth), np.inf, kth + margins[filling])
            else:
                kth = np.full(filling.size, np.inf)
            limits[filling] = np.maximum(limits[filling], kth)
        return _round_up_to_float32(limits + margins)

    def _refine(self, rows: np.ndarray, columns: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """The distances of the (query row, block column) pairs, computed in float64 from the
        vectors and rounded to float32.

        Products of float32 numbers are exact in float64, so the distances do not depend on
        where a vector sat in its block. One query at a time (``rows`` is sorted): a
        matrix-vector product over its gathered candidates, whose norms are taken while they
        are in cache.
        """
        products = np.empty(len(rows), dtype=np.float64)
        squared = np.empty(len(rows), dtype=np.float64)
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        stops = np.r_[starts[1:], len(rows)]
        for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
            gathered = vectors[columns[start:stop]].astype(np.float64)
            products[start:stop] = gathered @ self._queries[rows[start]]
            squared[start:stop] = np.einsum("ij,ij->i", gathered, gathered)
        if self._metric == "cosine":
            norms = np.sqrt(squared) * self._norms[rows]
            similarity = np.zeros_like(products)
            np.divide(products, norms, out=similarity, where=norms > 0)
            distances = np.clip(1.0 - similarity, 0.0, 2.0)
        else:
            # Exact float32 inputs keep the cancellation error near 1e-16 × ‖x‖².
            distances = np.sqrt(np.maximum(self._norms[rows] ** 2 + squared - 2 * products, 0.0))
        return (distances + 0.0).astype(np.float32)  # no −0.0: its bits would sort last

    def _merge(self, rows: np.ndarray, distances: np.ndarray, keys: np.ndarray) -> None:
        """Merge candidates into the top k of their queries, keeping (distance, key) order."""
        k = self._k
        touched = rows[np.r_[True, rows[1:] != rows[:-1]]]  # rows is sorted
        held = np.arange(k)[None, :] < self._filled[touched][:, None]
        held_rows = np.broadcast_to(touched[:, None], held.shape)[held]
        held_distances = self._distances[touched][held]
        # Distances are non-negative float32, whose bit patterns sort like their values: one
        # int64 orders by (row, distance). What is held is sorted already; the candidates are
        # sorted and slotted in after any held entry of equal order (ties go by key below).
        held_order = _row_distance_order(held_rows, held_distances)
        candidate_order = _row_distance_order(rows, distances)
        sorting = np.argsort(candidate_order, kind="stable")
        candidate_order = candidate_order[sorting]
        slots = np.searchsorted(held_order, candidate_order, side="right")
        slots += np.arange(len(slots))
        total = len(held_order) + len(slots)
        from_held = np.ones(total, dtype=bool)
        from_held[slots] = False
        all_rows = np.empty(total, dtype=np.int64)
        all_distances = np.empty(total, dtype=np.float32)
        all_keys = np.empty(total, dtype=object)
        all_rows[from_held], all_rows[slots] = held_rows, rows[sorting]
        all_distances[from_held], all_distances[slots] = held_distances, distances[sorting]
        all_keys[from_held], all_keys[slots] = self._keys[touched][held], keys[sorting]
        _order_ties_by_key(all_rows, all_distances, all_keys)
        starts = np.flatnonzero(np.r_[True, all_rows[1:] != all_rows[:-1]])
        counts = np.diff(np.r_[starts, total])
        ranks = np.arange(total) - np.repeat(starts, counts)
        kept = ranks < k
        self._distances[touched] = np.inf
        self._keys[touched] = None
        self._distances[all_rows[kept], ranks[kept]] = all_distances[kept]
        self._keys[all_rows[kept], ranks[kept]] = all_keys[kept]
        self._filled[touched] = np.minimum(counts, k)

    def result(self) -> ExactNeighbours:
        """The top k of every query as it stands."""
        keys = tuple(
            tuple(self._keys[row, :filled].tolist())
            for row, filled in enumerate(self._filled.tolist())
        )
        return ExactNeighbours(keys, self._distances.copy(), self._k, self._metric)


def _row_distance_order(rows: np.ndarray, distances: np.ndarray) -> np.ndarray:
    return (rows.astype(np.int64) << 32) | distances.view(np.uint32).astype(np.int64)


def _order_ties_by_key(rows: np.ndarray, distances: np.ndarray, keys: np.ndarray) -> None:
    """Sort ``keys`` within each run of equal (row, distance), in place; runs are rare."""
    tied = (rows[1:] == rows[:-1]) & (distances[1:] == distances[:-1])
    if not tied.any():
        return
    positions = np.flatnonzero(tied)
    run_starts = positions[np.r_[True, positions[1:] != positions[:-1] + 1]]
    run_ends = positions[np.r_[positions[1:] != positions[:-1] + 1, True]] + 2
    for start, stop in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        keys[start:stop] = sorted(keys[start:stop].tolist())
