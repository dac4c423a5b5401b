"""The dimension trade-off: what a smaller Matryoshka dimension would cost, computed exactly from
the checkpoints (each vector cut to its first values and renormalised), without re-embedding.

``dimension_recall`` gives recall@k of exact search at each smaller dimension against exact
search at the embedded one; ``dimension_labeled`` the labeled metrics of exact search at each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.evaluate.exact_search import ExactNeighbours, embedding_matrix, exact_top_k
from tasks.evaluate.index_recall import QueryOutcome, QuerySample, measured_recall
from tasks.evaluate.indexed_vectors import held_keys, indexed_vector_batches
from tasks.evaluate.labeled_metrics import evaluate_labeled
from tasks.evaluate.qrels import LabeledQuery
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore


def prefix_batches(batches: Iterable[pa.RecordBatch], dimension: int) -> Iterator[pa.RecordBatch]:
    """``batches`` with each embedding cut to its first ``dimension`` values and renormalised:
    the vector a Matryoshka-trained model gives at that dimension."""
    for batch in batches:
        cut = renormalised(embedding_matrix(batch.column("embedding"))[:, :dimension])
        column = pa.FixedSizeListArray.from_arrays(pa.array(cut.reshape(-1)), dimension)
        yield pa.RecordBatch.from_arrays([batch.column("key"), column], ["key", "embedding"])


def renormalised(matrix: np.ndarray) -> np.ndarray:
    """Each row of ``matrix`` scaled to unit length (a zero row stays zero), as float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0).astype(np.float32)


def smaller_dimensions(settings: NovaflowSettings) -> list[int]:
    """The dimensions to try below the embedded one, ascending."""
    embedded = settings.embedding.dimension
    return sorted({d for d in settings.evaluation.dimensions if 0 < d < embedded})


def dimension_recall(
    settings: NovaflowSettings,
    sample: QuerySample,
    exact: ExactNeighbours,
    vectors: Callable[[], Iterator[pa.RecordBatch]],
    ks: tuple[int, ...],
) -> dict[str, Any] | None:
    """Recall@k of exact search at each smaller dimension against exact search at the embedded
    one, computed from the checkpoints alone: what a cheaper index would cost. None when there
    is no smaller dimension to try."""
    dimensions = smaller_dimensions(settings)
    if not dimensions:
        return None
    embedded = settings.embedding.dimension
    rows = [{"dimension": embedded, "recall": {str(k): 1.0 for k in ks}, "labeled": None}]
    for dimension in dimensions:
        queries = renormalised(sample.vectors[:, :dimension])
        smaller = exact_top_k(
            queries, sample.keys, prefix_batches(vectors(), dimension), max(ks),
            settings.index.metric, block_rows=settings.evaluation.block_rows,
        )  # fmt: skip
        outcomes = [
            QueryOutcome(
                query_key=sample.keys[row],
                modality=sample.modalities[row],
                exact_keys=exact.keys[row],
                exact_distances=tuple(
                    float(d) for d in exact.distances[row, : len(exact.keys[row])]
                ),
                returned=tuple(smaller.neighbours(row)),
                latency_seconds=0.0,
            )
            for row in range(len(sample))
        ]
        # Distances at another dimension are not comparable: plain recall only.
        figures = measured_recall(outcomes, ks, 0.0, 0).to_json()["overall"]["recall"]
        rows.append({"dimension": dimension, "recall": figures, "labeled": None})
    rows.sort(key=lambda row: row["dimension"])
    return {"embedded_dimension": embedded, "rows": rows}


def dimension_labeled(
    settings: NovaflowSettings,
    queries: Sequence[LabeledQuery],
    vectors: Sequence[np.ndarray],
    depth: int,
    ks: tuple[int, ...],
) -> dict[int, dict[str, float]]:
    """The labeled metrics from exact search at the embedded dimension and at each smaller one,
    keyed by dimension: the labeled side of the dimension trade-off (vector mode only)."""
    if not queries or not smaller_dimensions(settings):
        return {}
    store = CheckpointStore(settings.store)
    keys = held_keys(store, settings.index.vector_bucket, settings.index.index)
    matrix = np.vstack(vectors).astype(np.float32)
    rows: dict[int, dict[str, float]] = {}
    for dimension in [*smaller_dimensions(settings), settings.embedding.dimension]:
        blocks = indexed_vector_batches(
            store, keys, settings.evaluation.block_rows,
            config_hash=settings.embedding.config_hash(),
        )  # fmt: skip
        exact = exact_top_k(
            renormalised(matrix[:, :dimension]), [None] * len(queries),
            prefix_batches(blocks, dimension), depth, settings.index.metric,
            block_rows=settings.evaluation.block_rows,
        )  # fmt: skip
        rankings = {query.query_id: list(exact.keys[row]) for row, query in enumerate(queries)}
        rows[dimension] = evaluate_labeled(queries, rankings, ks=ks).overall()
    return rows
