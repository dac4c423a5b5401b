"""How much of the exact answer the live index returns: recall@k per modality, latency, and the
queries it does worst on, against exact search over the checkpoints the index was loaded from.

No AWS here: the index is reached through an injected ``QueryIndex`` callable (the caller wraps
``QueryVectors`` and times it). Queries are vectors sampled from the checkpoints, spread evenly
across modalities (``sample_queries``).

Figures, for each k of ``ks``, over a query's ``k_eff = min(k, exact neighbours available)``:

- recall@k: |returned[:k] ∩ exact[:k]| / k_eff;
- tie-aware recall@k: as recall, but a returned key also counts when the distance the index
  reports for it is at most the k-th exact distance + ``tie_tolerance`` (two vectors at the same
  distance are equally right), capped at 1;
- short results: queries for which the index returned fewer than k_eff results.

A query with no exact neighbour at all (the data holds only itself) has recall 1 at every k.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.evaluate.exact_search import ExactNeighbours, embedding_matrix

DEFAULT_KS: tuple[int, ...] = (1, 10, 100)
DEFAULT_TIE_TOLERANCE = 1e-5
DEFAULT_WORST_QUERIES = 10
UNKNOWN_MODALITY = "unknown"

QueryIndex = Callable[[np.ndarray, int], tuple[Sequence[tuple[str, float]], float]]
"""``(vector, top_k) -> (results, seconds)``: the index's ``(key, distance)`` results for one
query vector, nearest first, and how long the query took."""

_MODALITY_PATTERN = r'"modality"\s*:\s*"(?P<modality>[^"\\]*)"'


@dataclass(frozen=True)
class QueryOutcome:
    """One query: its exact neighbours (nearest first) and what the index returned for it."""

    query_key: str | None
    modality: str
    exact_keys: tuple[str, ...]
    exact_distances: tuple[float, ...]
    returned: tuple[tuple[str, float], ...]
    latency_seconds: float


@dataclass(frozen=True)
class RecallFigures:
    """Mean recall and tie-aware recall per k over ``queries`` queries (None when there are
    none), and how many of them came back short at each k."""

    queries: int
    recall: Mapping[int, float | None]
    tie_aware_recall: Mapping[int, float | None]
    short_results: Mapping[int, int]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``report.json``; k is a string key."""
        figures = ("recall", "tie_aware_recall", "short_results")
        return {"queries": self.queries} | {name: _by_k(getattr(self, name)) for name in figures}


@dataclass(frozen=True)
class LatencyFigures:
    """Query latency percentiles in milliseconds (None without queries), and every sample."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    samples_ms: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``report.json``."""
        percentiles = {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}
        return percentiles | {"samples": list(self.samples_ms)}


@dataclass(frozen=True)
class MissedNeighbour:
    """An exact neighbour within the largest k that the index did not return.

    ``distance_gap`` is its exact distance minus the distance of the last result the index
    returned (within that k): below zero, the index returned something farther instead (a real
    miss when below −tie_tolerance, a tie near zero); above zero, it lies beyond everything
    returned, which happens when the results came back short. None when nothing came back.
    """

    key: str
    exact_rank: int  # 1-based
    exact_distance: float
    distance_gap: float | None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``report.json``."""
        return asdict(self)


@dataclass(frozen=True)
class QueryDetail:
    """One query's recall and tie-aware recall per k, and the neighbours it missed at the
    largest k, nearest first."""

    query_key: str | None
    modality: str
    recall: Mapping[int, float]
    tie_aware_recall: Mapping[int, float]
    missed: tuple[MissedNeighbour, ...]

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``report.json``; k is a string key."""
        return {
            "query_key": self.query_key,
            "modality": self.modality,
            "recall": _by_k(self.recall),
            "tie_aware_recall": _by_k(self.tie_aware_recall),
            "missed": [neighbour.to_json() for neighbour in self.missed],
        }


@dataclass(frozen=True)
class IndexRecall:
    """The index's recall against exact search: overall, per modality (sorted by name), its
    latency, and the worst queries (lowest recall at the largest k first, then by key; only
    queries that missed something there)."""

    queries: int
    ks: tuple[int, ...]
    tie_tolerance: float
    overall: RecallFigures
    by_modality: Mapping[str, RecallFigures]
    latency: LatencyFigures
    worst_queries: tuple[QueryDetail, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``index_recall`` section of ``report.json`` as a plain dict."""
        return {
            "queries": self.queries,
            "ks": list(self.ks),
            "tie_tolerance": self.tie_tolerance,
            "overall": self.overall.to_json(),
            "by_modality": {name: figures.to_json() for name, figures in self.by_modality.items()},
            "latency_ms": self.latency.to_json(),
            "worst_queries": [detail.to_json() for detail in self.worst_queries],
        }


@dataclass(frozen=True, eq=False)
class QuerySample:
    """Query vectors: ``keys[i]`` (None for a query that is not in the index),
    ``modalities[i]`` and row ``i`` of ``vectors`` (float32) belong together; sampled ones are
    sorted by modality then key. ``available`` counts the rows seen per modality."""

    keys: tuple[str | None, ...]
    modalities: tuple[str, ...]
    vectors: np.ndarray
    available: Mapping[str, int]

    def __len__(self) -> int:
        return len(self.keys)


def measured_recall(
    outcomes: Sequence[QueryOutcome],
    ks: Sequence[int] = DEFAULT_KS,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    worst_queries: int = DEFAULT_WORST_QUERIES,
) -> IndexRecall:
    """Recall, tie-aware recall and short results per k over ``outcomes``, overall and per
    modality; latency percentiles; and up to ``worst_queries`` worst queries in detail."""
    ks = _checked_ks(ks)
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must not be negative, not {tie_tolerance}")
    details = [_query_detail(outcome, ks, tie_tolerance) for outcome in outcomes]
    pairs = list(zip(outcomes, details, strict=True))
    by_modality = {
        modality: _figures([pair for pair in pairs if pair[0].modality == modality], ks)
        for modality in sorted({outcome.modality for outcome in outcomes})
    }
    largest = ks[-1]
    worst = sorted(
        (detail for detail in details if detail.recall[largest] < 1.0),
        key=lambda detail: (detail.recall[largest], detail.query_key or ""),
    )
    return IndexRecall(
        queries=len(outcomes),
        ks=ks,
        tie_tolerance=tie_tolerance,
        overall=_figures(pairs, ks),
        by_modality=by_modality,
        latency=_latency([outcome.latency_seconds for outcome in outcomes]),
        worst_queries=tuple(worst[:worst_queries]),
    )


def query_outcomes(
    sample: QuerySample,
    exact: ExactNeighbours,
    query_index: QueryIndex,
    top_k: int | None = None,
) -> list[QueryOutcome]:
    """Query the index once per sampled vector (``sample`` row i is ``exact`` query i) for
    ``top_k`` results (default ``exact.k``).

    A sampled vector is in the index under its own key, and exact search leaves it out: so the
    index is asked for one more result and the query's own key is dropped from what it returns.
    """
    if len(sample) != len(exact):
        raise ValueError(f"{len(sample)} sampled queries but {len(exact)} exact answers")
    wanted = exact.k if top_k is None else top_k
    outcomes = []
    for row, key in enumerate(sample.keys):
        results, seconds = query_index(sample.vectors[row], wanted + 1)
        returned = tuple((name, float(distance)) for name, distance in results if name != key)
        exact_keys = exact.keys[row]
        distances = tuple(exact.distances[row, : len(exact_keys)].tolist())
        outcomes.append(
            QueryOutcome(
                key, sample.modalities[row], exact_keys, distances, returned[:wanted], seconds
            )
        )
    return outcomes


def batch_modalities(batch: pa.RecordBatch) -> pa.Array:
    """Each row's modality: the batch's ``modality`` column if it has one, else the
    ``"modality"`` field of the JSON object in ``metadata_json`` (``"unknown"`` if absent)."""
    names = batch.schema.names
    if "modality" in names:
        return pc.fill_null(batch.column("modality").cast(pa.string()), UNKNOWN_MODALITY)
    if "metadata_json" not in names:
        raise ValueError("a batch needs a modality or a metadata_json column")
    metadata = batch.column("metadata_json")
    found = pc.struct_field(pc.extract_regex(metadata, _MODALITY_PATTERN), [0])
    # The pattern reads a flat object: where "modality" occurs more than once (nested, or also
    # as a value), the row's JSON is parsed instead.
    unclear = pc.greater(pc.count_substring(metadata, '"modality"'), 1)
    rows = np.flatnonzero(unclear.to_numpy(zero_copy_only=False))
    if rows.size:
        values = found.to_pylist()
        for row in rows.tolist():
            parsed = json.loads(metadata[row].as_py())
            modality = parsed.get("modality") if isinstance(parsed, dict) else None
            values[row] = modality if isinstance(modality, str) else None
        found = pa.array(values, pa.string())
    return pc.fill_null(found, UNKNOWN_MODALITY)


def sample_queries(
    batches: Iterable[pa.RecordBatch], sample_size: int, seed: int = 0
) -> QuerySample:
    """Up to ``sample_size`` rows of ``batches`` (``key``, ``embedding`` and a ``modality`` or
    ``metadata_json`` column) spread evenly across modalities: each gets an equal share, and
    what a small modality cannot fill goes to the others. Within a modality every row is
    equally likely; the same ``seed`` and rows give the same sample however they are batched.

    Each row draws a random priority and each modality keeps the ``sample_size`` rows of
    smallest priority seen so far, so memory holds at most ``sample_size`` vectors per modality.
    """
    if sample_size < 0:
        raise ValueError(f"sample_size must not be negative, not {sample_size}")
    rng = np.random.default_rng(seed)
    reservoirs: dict[str, _Reservoir] = {}
    dimension = 0
    for batch in batches:
        priorities = rng.random(batch.num_rows)
        dimension = batch.schema.field("embedding").type.list_size
        encoded = batch_modalities(batch).dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        for code, modality in enumerate(encoded.dictionary.to_pylist()):
            rows = np.flatnonzero(codes == code)
            reservoir = reservoirs.setdefault(modality, _Reservoir(sample_size))
            reservoir.offer(batch, rows, priorities[rows])
    quotas = _even_quotas({name: r.seen for name, r in reservoirs.items()}, sample_size)
    chosen = sorted(
        (
            (modality, key, vector)
            for modality, quota in quotas.items()
            for key, vector in reservoirs[modality].smallest(quota)
        ),
        key=lambda entry: entry[:2],
    )
    return QuerySample(
        keys=tuple(key for _, key, _ in chosen),
        modalities=tuple(modality for modality, _, _ in chosen),
        vectors=np.array([vector for *_, vector in chosen], np.float32).reshape(-1, dimension),
        available={name: reservoirs[name].seen for name in sorted(reservoirs)},
    )


class _Reservoir:
    """The ``capacity`` rows of smallest priority offered so far (bottom-k sampling: any
    prefix of them by priority is itself a uniform sample), in a heap keyed by −priority."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.seen = 0
        self._heap: list[tuple[float, str, np.ndarray]] = []

    def offer(self, batch: pa.RecordBatch, rows: np.ndarray, priorities: np.ndarray) -> None:
        self.seen += len(rows)
        if len(self._heap) >= self.capacity:
            below = priorities < (-self._heap[0][0] if self._heap else -np.inf)
            rows, priorities = rows[below], priorities[below]
        if not len(rows):
            return
        taken = batch.select(["key", "embedding"]).take(pa.array(rows))
        vectors = embedding_matrix(taken.column("embedding"))
        keys = taken.column("key").to_pylist()
        for priority, key, vector in zip(priorities.tolist(), keys, vectors, strict=True):
            entry = (-priority, key, vector.copy())
            if len(self._heap) < self.capacity:
                heapq.heappush(self._heap, entry)
            elif priority < -self._heap[0][0]:
                heapq.heapreplace(self._heap, entry)

    def smallest(self, count: int) -> list[tuple[str, np.ndarray]]:
        ordered = sorted(self._heap, key=lambda entry: -entry[0])
        return [(key, vector) for _, key, vector in ordered[:count]]


def _even_quotas(available: Mapping[str, int], total: int) -> dict[str, int]:
    """Equal shares of ``total`` per modality; a modality with fewer rows than its share takes
    them all and the rest is shared among the others (smallest first, then by name)."""
    quotas: dict[str, int] = {}
    left = total
    order = sorted(available, key=lambda name: (available[name], name))
    for position, name in enumerate(order):
        share = left // (len(order) - position)
        quotas[name] = min(available[name], share)
        left -= quotas[name]
    return {name: quotas[name] for name in sorted(quotas)}


def _checked_ks(ks: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(sorted(set(ks)))
    if not checked or checked[0] < 1:
        raise ValueError(f"ks must be positive integers, not {list(ks)}")
    return checked


def _query_detail(outcome: QueryOutcome, ks: tuple[int, ...], tolerance: float) -> QueryDetail:
    figures = {k: _recall_at(outcome, k, tolerance) for k in ks}
    recall = {k: found for k, (found, _) in figures.items()}
    tie_aware = {k: found for k, (_, found) in figures.items()}
    largest = ks[-1]
    returned = outcome.returned[:largest]
    returned_keys = {key for key, _ in returned}
    last = returned[-1][1] if returned else None
    exact = zip(outcome.exact_keys[:largest], outcome.exact_distances[:largest], strict=True)
    missed = tuple(
        MissedNeighbour(key, rank, distance, None if last is None else distance - last)
        for rank, (key, distance) in enumerate(exact, start=1)
        if key not in returned_keys
    )
    return QueryDetail(outcome.query_key, outcome.modality, recall, tie_aware, missed)


def _recall_at(outcome: QueryOutcome, k: int, tolerance: float) -> tuple[float, float]:
    """Recall@k and tie-aware recall@k of one query."""
    available = min(k, len(outcome.exact_keys))
    if available == 0:
        return 1.0, 1.0
    exact = set(outcome.exact_keys[:available])
    limit = outcome.exact_distances[available - 1] + tolerance
    distinct: dict[str, float] = {}
    for key, distance in outcome.returned[:k]:
        distinct.setdefault(key, distance)  # a key returned twice counts once, as first seen
    hits = sum(1 for key in distinct if key in exact)
    ties = sum(1 for key, distance in distinct.items() if key in exact or distance <= limit)
    return hits / available, min(ties / available, 1.0)


def _figures(
    rows: Sequence[tuple[QueryOutcome, QueryDetail]], ks: tuple[int, ...]
) -> RecallFigures:
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return RecallFigures(
        queries=len(rows),
        recall={k: mean([detail.recall[k] for _, detail in rows]) for k in ks},
        tie_aware_recall={k: mean([detail.tie_aware_recall[k] for _, detail in rows]) for k in ks},
        short_results={
            k: sum(len(out.returned) < min(k, len(out.exact_keys)) for out, _ in rows) for k in ks
        },
    )


def _latency(seconds: Sequence[float]) -> LatencyFigures:
    samples = [1000.0 * value for value in seconds]
    if not samples:
        return LatencyFigures(None, None, None, ())
    p50, p95, p99 = (float(value) for value in np.percentile(samples, [50, 95, 99]))
    return LatencyFigures(p50, p95, p99, tuple(samples))


def _by_k(values: Mapping[int, Any]) -> dict[str, Any]:
    return {str(k): value for k, value in values.items()}
