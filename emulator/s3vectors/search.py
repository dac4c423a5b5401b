"""QueryVectors for the S3 Vectors stand-in: nearest-neighbour search over an in-memory float32
matrix per index, metadata filtering by index mode, and paging of up to 10,000 results by 100.

Distances (⚠ AWS does not publish the formulas, ``aws-apis.md`` §2.8/§4.11); the choices:

- ``cosine``: 1 − cosine similarity, in [0, 2] (0 = same direction);
- ``euclidean``: the plain L2 distance ‖q − x‖, not squared.

Paging (⚠): a ``nextToken`` is an offset into the ranked top ``topK``, which each page recomputes;
it is bound to the index, queryVector, queryTexts, topK, filter and queryMode (any other query
with it is a ValidationException) and does not expire. Writes between pages may shift results,
as on AWS. With ``queryTexts`` the query is full-text only (no ``queryVector``) or hybrid: their
rules are in ``text_rules``, their ranking in ``text_search``; ``returnDistance`` adds a distance
only to results that matched the vector search.

Results are sorted by ascending distance, ties by key. Candidates are ranked with one float32
matrix product; the distances reported are then recomputed in float64 for the short list.

Two search modes (``SearchSettings.mode``):

- ``exact``: brute force over every vector; a filter is applied to all vectors first, so a query
  returns ``topK`` results whenever that many vectors match, whatever the index mode.
- ``approximate``: an inverted file. Seeded k-means splits the index into ``partitions`` lists,
  built lazily at query time and rebuilt when the index has grown or shrunk by more than 20% since
  the last build; vectors put since then join their nearest list when the next query runs. A
  query scans the ``probe`` lists whose centroids are nearest (more if those hold fewer than
  ``topK`` vectors), so recall against exact search is below 1. Filters follow the index mode
  (§2.4): ENHANCED pre-filters, probing further lists until ``topK`` matches are found or none are
  left; CLASSIC filters inside the probed lists and may return fewer than ``topK``. Indexes with
  fewer than 4 × ``partitions`` vectors are searched exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emulator.s3vectors.filters import (
    MAX_ENHANCED_FILTER_CONSTRAINTS,
    MetadataFilter,
    parse_filter,
)
from emulator.s3vectors.store import IndexRecord, VectorRecord
from emulator.s3vectors.text_rules import query_texts
from emulator.s3vectors.text_search import (
    Hit,
    full_text_hits,
    hybrid_hits,
    text_matches,
)
from emulator.s3vectors.validation import (
    INDEX_MODES,
    RequestMembers,
    invalid,
    page_state,
    page_token,
    vector_data,
)

MAX_TOP_K = 10_000
QUERY_PAGE_SIZE = 100
REBUILD_GROWTH_FRACTION = 0.2
EXACT_BELOW_VECTORS_PER_PARTITION = 4
KMEANS_TRAINING_VECTORS_PER_PARTITION = 256
KMEANS_ITERATIONS = 12


@dataclass(frozen=True)
class SearchSettings:
    """How QueryVectors searches: ``exact`` brute force, or ``approximate`` inverted-file search
    with ``partitions`` k-means lists of which the ``probe`` nearest are scanned (``seed`` seeds
    the clustering). A text search configuration added to an index stays BUILDING for the next
    ``text_backfill_reads`` GetIndex or QueryVectors calls on that index (0: ACTIVE at once)."""

    mode: Literal["exact", "approximate"] = "exact"
    partitions: int = 16
    probe: int = 2
    seed: int = 0
    text_backfill_reads: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "approximate"):
            raise ValueError(f"search mode must be 'exact' or 'approximate', not {self.mode!r}")
        if self.partitions < 1 or self.probe < 1:
            raise ValueError("partitions and probe must be at least 1")
        if self.text_backfill_reads < 0:
            raise ValueError("text_backfill_reads must not be negative")


@dataclass(frozen=True)
class Neighbour:
    """One query result: the vector's ``key``, its ``distance`` to the query and its metadata."""

    key: str
    distance: float
    metadata: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class Partitioning:
    """Inverted-file lists of one index: ``centroids`` (lists × dimension) from k-means over
    ``built_from_count`` vectors; the list of each row is ``IndexMatrix.partition_of``."""

    centroids: np.ndarray
    built_from_count: int


class IndexMatrix:
    """The vectors of one index in memory: row ``i`` of ``rows`` is the vector put under
    ``keys[i]``, ``norms[i]`` its L2 norm, ``metadata[i]`` its metadata and ``partition_of[i]``
    its inverted-file list (-1 until assigned). Deleting a row moves the last row into its place.
    ``text_indexes`` caches the BM25 index of each searchable key until the next change."""

    def __init__(self, dimension: int, records: Iterable[VectorRecord] = ()) -> None:
        self.dimension = dimension
        self.keys: list[str] = []
        self.metadata: list[Mapping[str, Any]] = []
        self.row_of: dict[str, int] = {}
        self.partitioning: Partitioning | None = None
        self.text_indexes: dict[tuple[str, str | None], object] = {}
        self._rows = np.empty((0, dimension), dtype=np.float32)
        self._norms = np.empty(0, dtype=np.float32)
        self._partition_of = np.empty(0, dtype=np.int32)
        self.upsert(list(records))

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        return len(self.keys)

    @property
    def rows(self) -> np.ndarray:
        """The (count × dimension) float32 matrix of stored vectors (a view; do not modify)."""
        return self._rows[: self.count]

    @property
    def norms(self) -> np.ndarray:
        """The L2 norm of each row."""
        return self._norms[: self.count]

    @property
    def partition_of(self) -> np.ndarray:
        """The inverted-file list of each row, -1 for rows put since the lists were built."""
        return self._partition_of[: self.count]

    def get(self, key: str) -> VectorRecord | None:
        """The vector stored under ``key``, or None."""
        row = self.row_of.get(key)
        if row is None:
            return None
        return VectorRecord(key, self._rows[row].copy(), self.metadata[row])

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Hold ``records``, replacing any vector with the same key."""
        self.text_indexes.clear()
        self._reserve(self.count + len(records))
        for record in records:
            row = self.row_of.get(record.key)
            if row is None:
                row = self.count
                self.keys.append(record.key)
                self.metadata.append(record.metadata)
                self.row_of[record.key] = row
            else:
                self.metadata[row] = record.metadata
            self._rows[row] = record.data
            self._norms[row] = np.linalg.norm(record.data.astype(np.float64))
            self._partition_of[row] = -1

    def remove(self, keys: Iterable[str]) -> None:
        """Drop the vectors stored under ``keys``; absent keys are ignored."""
        self.text_indexes.clear()
        for key in keys:
            row = self.row_of.pop(key, None)
            if row is None:
                continue
            last = self.count - 1
            if row != last:
                moved_key = self.keys[last]
                self.keys[row] = moved_key
                self.metadata[row] = self.metadata[last]
                self.row_of[moved_key] = row
                self._rows[row] = self._rows[last]
                self._norms[row] = self._norms[last]
                self._partition_of[row] = self._partition_of[last]
            self.keys.pop()
            self.metadata.pop()

    def _reserve(self, needed: int) -> None:
        capacity = len(self._rows)
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 64)
        rows = np.empty((capacity, self.dimension), dtype=np.float32)
        rows[: self.count] = self.rows
        norms = np.empty(capacity, dtype=np.float32)
        norms[: self.count] = self.norms
        partition_of = np.full(capacity, -1, dtype=np.int32)
        partition_of[: self.count] = self.partition_of
        self._rows, self._norms, self._partition_of = rows, norms, partition_of


def query_vectors(
    members: RequestMembers, index: IndexRecord, matrix: IndexMatrix, settings: SearchSettings
) -> dict[str, Any]:
    """The QueryVectors response for ``members`` on ``index``: one page of at most 100
    ``vectors`` best first (nearest for a vector-only query, by BM25 for a full-text-only one,
    by RRF for a hybrid one), each with its key and, when asked and applicable, distance,
    ``scores`` and metadata; ``distanceMetric``; and a ``nextToken`` while more of the ``topK``
    results remain."""
    top_k = members.required_integer("topK", 1, MAX_TOP_K)
    texts = query_texts(members, index)
    metric = index.distance_metric
    query = None
    if members.present("queryVector"):
        query = vector_data(
            members.raw("queryVector"),
            index.dimension,
            metric,
            "Invalid query vector",
            "queryVector",
        )
    elif not texts:
        raise invalid(
            "queryVector is required: a request must include queryVector, queryTexts, or both",
            "queryVector",
        )
    query_mode = members.choice("queryMode", INDEX_MODES)
    if query_mode == "CLASSIC" and index.index_mode == "ENHANCED":
        raise invalid("queryMode CLASSIC cannot be used on an ENHANCED index", "queryMode")
    enhanced = (query_mode or index.index_mode) == "ENHANCED"
    filter_document = members.raw("filter")
    metadata_filter = None
    if filter_document is not None:
        metadata_filter = parse_filter(
            filter_document,
            non_filterable_keys=frozenset(index.non_filterable_keys),
            allow_starts_with=enhanced,
            max_constraints=MAX_ENHANCED_FILTER_CONSTRAINTS if enhanced else None,
        )
    with_metadata, with_distance = members.flag("returnMetadata"), members.flag("returnDistance")
    with_scores = members.flag("returnScores")
    # What must repeat for a nextToken to continue the same ranked list.
    same_query = [
        index.id,
        None if query is None else query.tobytes().hex(),
        [[text.metadata_key, text.text] for text in texts],
        top_k,
        filter_document,
        query_mode,
    ]
    fingerprint = hashlib.sha256(json.dumps(same_query, sort_keys=True).encode()).hexdigest()
    state = page_state(members, "QueryVectors") or {"query": fingerprint, "offset": 0}
    offset = state.get("offset")
    if state.get("query") != fingerprint or not isinstance(offset, int):
        raise invalid(
            "nextToken belongs to another query: repeat the same queryVector, queryTexts, topK, "
            "filter and queryMode with it",
            "nextToken",
        )
    nearest: list[Neighbour] = []
    if query is not None:
        nearest = nearest_neighbours(
            matrix,
            query,
            metric=metric,
            top_k=top_k,
            metadata_filter=metadata_filter,
            prefilter=enhanced,
            settings=settings,
        )
    matches = [text_matches(matrix, text, metadata_filter) for text in texts]
    if not texts:
        hits = [Hit(n.key, n.metadata, distance=n.distance) for n in nearest]
    elif query is None:
        hits = full_text_hits(matrix, matches, top_k)
    else:
        hits = hybrid_hits(matrix, [(n.key, n.distance) for n in nearest], matches, top_k)
    vectors = [
        hit.to_document(
            with_distance=with_distance,
            with_metadata=with_metadata,
            with_scores=with_scores,
            full_text=bool(texts),
        )
        for hit in hits[offset : offset + QUERY_PAGE_SIZE]
    ]
    output: dict[str, Any] = {"vectors": vectors, "distanceMetric": metric}
    if offset + QUERY_PAGE_SIZE < len(hits):
        next_state = {"query": fingerprint, "offset": offset + QUERY_PAGE_SIZE}
        output["nextToken"] = page_token("QueryVectors", next_state)
    return output


def nearest_neighbours(
    matrix: IndexMatrix,
    query: np.ndarray,
    *,
    metric: str,
    top_k: int,
    metadata_filter: MetadataFilter | None,
    prefilter: bool,
    settings: SearchSettings,
) -> list[Neighbour]:
    """The up to ``top_k`` vectors of ``matrix`` nearest to ``query`` (float32, non-zero for
    cosine) that satisfy ``metadata_filter``, nearest first.

    ``prefilter`` is true for ENHANCED queries (filter before the vector search) and false for
    CLASSIC ones (filter inside the probed lists); it matters only in approximate mode.
    """
    if matrix.count == 0:
        return []
    approximate = settings.mode == "approximate" and (
        matrix.count >= EXACT_BELOW_VECTORS_PER_PARTITION * settings.partitions
    )
    if approximate:
        rows = _probed_rows(matrix, query, metric, top_k, metadata_filter, prefilter, settings)
    elif metadata_filter is not None:
        rows = _matching_rows(matrix, np.arange(matrix.count), metadata_filter)
    else:
        rows = None
    return _closest(matrix, query, metric, rows, top_k)


def _matching_rows(
    matrix: IndexMatrix, rows: np.ndarray, metadata_filter: MetadataFilter
) -> np.ndarray:
    metadata = matrix.metadata
    keep = [row for row in rows.tolist() if metadata_filter.matches(metadata[row])]
    return np.asarray(keep, dtype=np.int64)


def _ranking_scores(rows: np.ndarray, norms: np.ndarray, query: np.ndarray, metric: str) -> Any:
    """Scores that order rows like their distance to ``query`` (smaller is nearer)."""
    products = rows @ query
    if metric == "cosine":
        return -products / np.maximum(norms, np.finfo(np.float32).tiny)
    return norms.astype(np.float32) ** 2 - 2 * products


def _distances(rows: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    rows64 = rows.astype(np.float64)
    query64 = query.astype(np.float64)
    if metric == "cosine":
        similarity = rows64 @ query64 / (np.linalg.norm(rows64, axis=1) * np.linalg.norm(query64))
        return np.clip(1.0 - similarity, 0.0, 2.0)
    return np.linalg.norm(rows64 - query64, axis=1)


def _closest(
    matrix: IndexMatrix, query: np.ndarray, metric: str, rows: np.ndarray | None, top_k: int
) -> list[Neighbour]:
    if rows is None:
        scores = _ranking_scores(matrix.rows, matrix.norms, query, metric)
        rows = np.arange(matrix.count)
    elif len(rows) == 0:
        return []
    else:
        scores = _ranking_scores(matrix.rows[rows], matrix.norms[rows], query, metric)
    # float32 ranking can misorder near-ties, so a margin of extra candidates is re-ranked exactly.
    shortlist_size = min(len(rows), 2 * top_k + 8)
    if shortlist_size < len(rows):
        shortlist = rows[np.argpartition(scores, shortlist_size - 1)[:shortlist_size]]
    else:
        shortlist = rows
    distances = _distances(matrix.rows[shortlist], query, metric)
    ranked = sorted(
        zip(distances.tolist(), shortlist.tolist(), strict=True),
        key=lambda pair: (pair[0], matrix.keys[pair[1]]),
    )[:top_k]
    return [Neighbour(matrix.keys[row], distance, matrix.metadata[row]) for distance, row in ranked]


def _probed_rows(
    matrix: IndexMatrix,
    query: np.ndarray,
    metric: str,
    top_k: int,
    metadata_filter: MetadataFilter | None,
    prefilter: bool,
    settings: SearchSettings,
) -> np.ndarray:
    partitioning = _current_partitioning(matrix, metric, settings)
    partition_of = matrix.partition_of
    centroids = partitioning.centroids
    centroid_norms = np.linalg.norm(centroids, axis=1)
    centroid_scores = _ranking_scores(centroids, centroid_norms, query, metric)
    list_order = np.argsort(centroid_scores, kind="stable")
    if metadata_filter is not None and prefilter:
        candidates = _matching_rows(matrix, np.arange(matrix.count), metadata_filter)
        candidate_lists = partition_of[candidates]
    else:
        candidates = np.arange(matrix.count)
        candidate_lists = partition_of
    sizes = np.bincount(candidate_lists, minlength=len(centroids))[list_order]
    # Probe at least `probe` lists, and more while they hold fewer than top_k candidates.
    enough = np.nonzero(np.cumsum(sizes) >= top_k)[0]
    lists_needed = int(enough[0]) + 1 if len(enough) else len(list_order)
    probed = list_order[: max(settings.probe, lists_needed)]
    rows = candidates[np.isin(candidate_lists, probed)]
    if metadata_filter is not None and not prefilter:
        rows = _matching_rows(matrix, rows, metadata_filter)
    return rows


def _current_partitioning(
    matrix: IndexMatrix, metric: str, settings: SearchSettings
) -> Partitioning:
    """The index's lists, rebuilt if it changed size by more than 20% since they were built;
    vectors put since the build join their nearest list."""
    partitioning = matrix.partitioning
    if (
        partitioning is None
        or abs(matrix.count - partitioning.built_from_count)
        > REBUILD_GROWTH_FRACTION * partitioning.built_from_count
    ):
        rng = np.random.default_rng(settings.seed)
        training_size = min(
            matrix.count, KMEANS_TRAINING_VECTORS_PER_PARTITION * settings.partitions
        )
        training_rows = np.sort(rng.choice(matrix.count, size=training_size, replace=False))
        training = matrix.rows[training_rows]
        if metric == "cosine":  # cosine indexes are clustered by direction
            training = training / matrix.norms[training_rows, None]
        centroids = kmeans_centroids(training, settings.partitions, rng)
        partitioning = Partitioning(centroids, matrix.count)
        matrix.partitioning = partitioning
        matrix.partition_of[:] = _nearest_lists(matrix.rows, centroids, metric)
        return partitioning
    unassigned = np.nonzero(matrix.partition_of < 0)[0]
    if len(unassigned):
        lists = _nearest_lists(matrix.rows[unassigned], partitioning.centroids, metric)
        matrix.partition_of[unassigned] = lists
    return partitioning


def _nearest_lists(rows: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
    """For each row, the list whose centroid is nearest under the index's metric."""
    products = rows @ centroids.T
    centroid_norms = np.linalg.norm(centroids, axis=1)
    if metric == "cosine":  # a row's own norm does not change which centroid is most similar
        scores = -products / np.maximum(centroid_norms, np.finfo(np.float32).tiny)
    else:
        scores = centroid_norms**2 - 2 * products
    return np.argmin(scores, axis=1).astype(np.int32)


def kmeans_centroids(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``clusters`` centroids of ``points`` by k-means (k-means++ start, then Lloyd
    iterations), reproducible for the same ``rng`` state."""
    points = points.astype(np.float32)
    clusters = min(clusters, len(points))
    point_norms_squared = np.einsum("ij,ij->i", points, points)

    def squared_distances(centroid: np.ndarray) -> np.ndarray:
        distances = point_norms_squared - 2 * (points @ centroid) + centroid @ centroid
        return np.maximum(distances, 0.0).astype(np.float64)

    centroids = np.empty((clusters, points.shape[1]), dtype=np.float32)
    centroids[0] = points[rng.integers(len(points))]
    nearest_squared = squared_distances(centroids[0])
    for chosen in range(1, clusters):
        total = nearest_squared.sum()
        pick = rng.choice(len(points), p=nearest_squared / total) if total > 0 else 0
        centroids[chosen] = points[pick]
        nearest_squared = np.minimum(nearest_squared, squared_distances(centroids[chosen]))
    for _ in range(KMEANS_ITERATIONS):
        assignment = _nearest_lists(points, centroids, "euclidean")
        members = np.zeros((clusters, len(points)), dtype=np.float32)
        members[assignment, np.arange(len(points))] = 1.0
        counts = members.sum(axis=1)
        sums = members @ points
        filled = counts > 0
        # An emptied cluster keeps its previous centroid rather than collapsing to zero.
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids
