"""The evaluation stage: the live index measured against exact search over its checkpoints, the
labeled queries' rankings scored in each retrieval mode, and what a smaller Matryoshka dimension
would cost.

Each function returns the JSON-ready section of the report it measured (see
:mod:`tasks.report.evaluation.document`), or None when there is nothing to measure.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from tasks.aws_clients import s3_client, s3vectors_client
from tasks.evaluate.dimensions import dimension_labeled, dimension_recall
from tasks.evaluate.exact_search import embedding_matrix, exact_top_k
from tasks.evaluate.index_recall import (
    QuerySample,
    measured_recall,
    query_outcomes,
    sample_queries,
)
from tasks.evaluate.indexed_vectors import held_keys, indexed_vector_batches
from tasks.evaluate.labeled_modes import (
    ModeRefusedError,
    ModeSearch,
    labeled_modes,
    text_modes_unavailable,
    trec_file_names,
    trec_files,
    trec_names_json,
)
from tasks.evaluate.qrels import LabeledQuery, item_of, read_qrels
from tasks.local_copies import local_source
from tasks.media.images import PreparationError
from tasks.pacing import Pacer
from tasks.query_vectors import held_modalities, query_payload, query_vector
from tasks.service_errors import error_message
from tasks.settings import NovaflowSettings
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore
from tasks.vector_store import MAX_TOP_K, RetrievalMode, query, text_search_status

logger = logging.getLogger(__name__)

QueryIndex = Callable[[np.ndarray, int], tuple[list[tuple[str, float]], float]]
PacedSearch = Callable[[np.ndarray | None, str | None, int], tuple[list[dict[str, Any]], float]]
# Labeled rankings are read this deep, so that several units of one item (pages of a PDF,
# segments of a video) still leave enough distinct items for the largest cutoff.
_LABELED_DEPTH_PER_CUTOFF = 10


@dataclass(frozen=True)
class LabeledSection:
    """The labeled evaluation: its report section, the vector mode's TREC run and qrels texts
    (``labeled.run``, ``labeled.qrels``) that let trec_eval, ranx or ir-measures recompute it,
    and ``trec_files``: every mode's run and qrels by file name (those two included)."""

    section: dict[str, Any]
    trec_run: str
    trec_qrels: str
    dimension_rows: dict[int, dict[str, float]]
    trec_files: Mapping[str, str] = field(default_factory=dict)


def paced_search(
    settings: NovaflowSettings, metadata_filter: Mapping[str, Any] | None = None
) -> PacedSearch:
    """``(vector, text, top_k) -> (hits, seconds)`` against the live index (a vector, a text or
    both: see ``tasks.vector_store.query``), paced under ``evaluation.queries_per_second`` like
    every other call novaflow makes, whatever the mode."""
    client = s3vectors_client()
    pacer = Pacer(settings.evaluation.queries_per_second)

    def search(
        vector: np.ndarray | None, text: str | None, top_k: int
    ) -> tuple[list[dict[str, Any]], float]:
        pacer.acquire()
        started = time.perf_counter()
        hits = query(
            client, settings.index, vector, min(top_k, MAX_TOP_K), metadata_filter, text=text
        )
        return hits, time.perf_counter() - started

    return search


def paced_index_queries(
    settings: NovaflowSettings, metadata_filter: Mapping[str, Any] | None = None
) -> QueryIndex:
    """``(vector, top_k) -> (results, seconds)`` against the live index in vector mode, paced
    under ``evaluation.queries_per_second``."""
    search = paced_search(settings, metadata_filter)

    def query_index(vector: np.ndarray, top_k: int) -> tuple[list[tuple[str, float]], float]:
        hits, seconds = search(vector, None, top_k)
        return [(hit["key"], float(hit["distance"])) for hit in hits], seconds

    return query_index


def paced_mode_search(settings: NovaflowSettings) -> ModeSearch:
    """The labeled evaluation's ``ModeSearch`` against the live index, paced. A text or hybrid
    query the index refuses raises ``ModeRefusedError`` (that mode is then reported as not
    run); a vector query's error propagates, as the index recall's does."""
    search = paced_search(settings)

    def mode_search(
        mode: RetrievalMode, vector: np.ndarray | None, text: str | None, top_k: int
    ) -> list[str]:
        try:
            hits, _ = search(vector, text, top_k)
        except ClientError as err:
            if mode == "vector":
                raise
            raise ModeRefusedError(
                f"the index refused a {mode} query: {error_message(err)}"
            ) from err
        return [hit["key"] for hit in hits]

    return mode_search


def index_description(settings: NovaflowSettings, vectors: int) -> dict[str, Any]:
    """The index as the report names it: where, its dimension and metric, its mode (CLASSIC
    filters during the search, ENHANCED before it) and how many vectors it holds."""
    described: dict[str, Any] = {}
    try:
        described = s3vectors_client().get_index(
            vectorBucketName=settings.index.vector_bucket, indexName=settings.index.index
        )["index"]
    except (ClientError, BotoCoreError) as err:
        logger.warning("could not describe the index: %s", err)
    return {
        "vector_bucket": settings.index.vector_bucket,
        "index": settings.index.index,
        "dimension": int(described.get("dimension", settings.embedding.dimension)),
        "metric": str(described.get("distanceMetric", settings.index.metric)),
        "mode": str(described.get("indexMode", "CLASSIC")),
        "vectors": vectors,
    }


def evaluated_index(
    settings: NovaflowSettings, query_index: QueryIndex | None = None
) -> dict[str, Any] | None:
    """The ``index``, ``index_recall`` and ``dimensions`` sections of the report: recall@k of
    the live index against exact search over the checkpoints it was loaded from, for a seeded
    sample of its own vectors (or the query file's), per modality and overall; the same under
    ``evaluation.metadata_filter``; and recall@k of exact search at each smaller Matryoshka
    dimension against the embedded one. None when the index holds nothing yet."""
    evaluation = settings.evaluation
    store = CheckpointStore(settings.store)
    keys = held_keys(store, settings.index.vector_bucket, settings.index.index)
    if len(keys) == 0:
        return None
    ks = tuple(sorted(set(evaluation.ks)))
    metric = settings.index.metric
    config_hash = settings.embedding.config_hash()

    def vectors(columns: Sequence[str] = ("key", "embedding")) -> Iterator[pa.RecordBatch]:
        return indexed_vector_batches(
            store, keys, evaluation.block_rows, columns, config_hash=config_hash
        )

    sample = _queries(settings, vectors(("key", "embedding", "metadata_json")))
    exact = exact_top_k(
        sample.vectors, sample.keys, vectors(), max(ks), metric, block_rows=evaluation.block_rows
    )
    outcomes = query_outcomes(sample, exact, query_index or paced_index_queries(settings))
    recall = measured_recall(outcomes, ks, evaluation.tie_tolerance, evaluation.worst_queries)
    section = recall.to_json()
    section["filtered"] = None
    if evaluation.metadata_filter:
        section["filtered"] = _filtered_recall(settings, sample, vectors, ks)
    return {
        "index": index_description(settings, len(keys)),
        "index_recall": section,
        "dimensions": dimension_recall(settings, sample, exact, vectors, ks),
    }


def evaluated_labeled(
    settings: NovaflowSettings,
    search: ModeSearch | None = None,
    text_status: Callable[[], str | None] | None = None,
) -> LabeledSection | None:
    """The ``labeled`` section: each labeled query embedded with the retrieval purpose matching
    the index and asked in each available mode (vector; text and hybrid when the index's
    searchable text is ACTIVE, for the queries with text), each mode's rankings scored against
    the judgements (recall, MRR, nDCG, precision at each cutoff, per query type and overall),
    and the vector mode's from exact search at each smaller Matryoshka dimension. Bad rows are
    reported row by row; the rest run. None without a qrels file.

    ``search`` and ``text_status`` (the status of the index's searchable text, see
    ``tasks.vector_store.text_search_status``) stand in for the live index in tests.

    The section keeps the vector mode's figures where they always were (``queries``,
    ``per_query``, ``trec_run``…) and adds every mode side by side: ``modes`` (mode → its
    counts, ``overall`` and ``by_query_type`` means), ``modes_unavailable`` (mode → why it did
    not run), ``common`` (each mode's means over the queries all modes ran) and
    ``trec_files`` (mode → its ``run`` and ``qrels`` file names)."""
    evaluation = settings.evaluation
    if evaluation.qrels is None:
        return None
    store = CheckpointStore(settings.store)
    # Judged ids are looked up partition by partition: the state is never read whole.
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index).lookup()

    def modality_of(id_or_key: str) -> str | None:
        """The modality of the held item ``id_or_key`` is, or is a unit of."""
        entry = state.get(item_of(id_or_key))
        return entry.modality if entry is not None and entry.keys else None

    def known(id_or_key: str) -> bool:
        """Whether the index holds the item, or the unit, ``id_or_key`` names."""
        entry = state.get(item_of(id_or_key))
        if entry is None or not entry.keys:
            return False
        return id_or_key == entry.item_id or id_or_key in entry.keys

    labeled = read_qrels(
        evaluation.qrels,
        known=known,
        modality_of=modality_of,
    )
    errors = [_issue_json(error) for error in labeled.errors]
    held = held_modalities(store, settings.index.vector_bucket, settings.index.index)
    ks = tuple(sorted(set(evaluation.labeled_ks)))
    depth = min(MAX_TOP_K, max(ks) * _LABELED_DEPTH_PER_CUTOFF)
    queries: list[LabeledQuery] = []
    vectors: list[np.ndarray] = []
    for labeled_query in labeled.queries:
        try:
            payload = query_payload(
                labeled_query.text,
                _local_query_file(labeled_query.file) if labeled_query.file else None,
                settings.embedding.max_image_side_px,
            )
            vector = query_vector(payload, settings.embedding, held)
        except (PreparationError, ClientError, OSError, ValueError) as err:
            message = error_message(err) if isinstance(err, ClientError) else str(err)
            errors.append(
                {
                    "row": labeled_query.row,
                    "query_id": labeled_query.query_id,
                    "message": f"the query could not be embedded: {message}",
                }
            )
            continue
        queries.append(labeled_query)
        vectors.append(vector)
    modes = labeled_modes(
        queries,
        vectors,
        search or paced_mode_search(settings),
        depth=depth,
        ks=ks,
        text_unavailable=_text_unavailable(settings, text_status),
    )
    report = modes.reports[0]
    body = report.to_json()
    run_name, qrels_name = trec_file_names(report.mode)
    section = {
        "qrels": evaluation.qrels,
        "queries": report.queries,
        "ks": list(ks),
        "queries_without_relevant": report.queries_without_relevant,
        "errors": errors,
        "warnings": [_issue_json(warning) for warning in labeled.warnings],
        **modes.to_json(),
        "per_query": body["per_query"],
        "trec_run": run_name,
        "trec_qrels": qrels_name,
        "trec_files": trec_names_json(modes),
    }
    files = trec_files(modes, queries)
    dimension_rows = dimension_labeled(settings, queries, vectors, depth, ks)
    return LabeledSection(section, files[run_name], files[qrels_name], dimension_rows, files)


def _text_unavailable(
    settings: NovaflowSettings, text_status: Callable[[], str | None] | None
) -> str | None:
    """Why text and hybrid cannot run on the index, or None when they can."""
    try:
        status = (
            text_status()
            if text_status is not None
            else text_search_status(s3vectors_client(), settings.index)
        )
    except (ClientError, BotoCoreError) as err:
        message = error_message(err) if isinstance(err, ClientError) else str(err)
        return f"the index's searchable-text status could not be read: {message}"
    return text_modes_unavailable(status, settings.index.searchable_text)


# -- helpers -------------------------------------------------------------------------------


def _local_query_file(uri: str) -> Path:
    """A query file on this machine: the file itself, or a copy of the S3 object cached under
    its ETag (so a replaced object is read again)."""
    if not uri.startswith("s3://"):
        return Path(uri)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    etag = str(s3_client().head_object(Bucket=bucket, Key=key)["ETag"])
    return local_source(uri, etag)


def _queries(settings: NovaflowSettings, rows: Iterable[pa.RecordBatch]) -> QuerySample:
    """The evaluation's query vectors: a seeded sample stratified by modality, or the rows of
    the query file (``embedding``, optional ``key`` and ``modality``)."""
    evaluation = settings.evaluation
    if evaluation.query_file is None:
        return sample_queries(rows, evaluation.sample_size, evaluation.seed)
    table = pq.read_table(evaluation.query_file)
    if "embedding" not in table.column_names:
        raise ValueError(f"{evaluation.query_file} has no `embedding` column")
    matrix = np.asarray(embedding_matrix(table.column("embedding")), dtype=np.float32)
    if matrix.shape[1] != settings.embedding.dimension:
        raise ValueError(
            f"{evaluation.query_file} holds {matrix.shape[1]}-d vectors; the index is "
            f"{settings.embedding.dimension}-d"
        )
    count = table.num_rows
    keys = table.column("key").to_pylist() if "key" in table.column_names else [None] * count
    modalities = (
        table.column("modality").to_pylist()
        if "modality" in table.column_names
        else ["query file"] * count
    )
    return QuerySample(
        keys=tuple(keys),
        modalities=tuple(modality or "query file" for modality in modalities),
        vectors=matrix,
        available={"query file": count},
    )


def _filtered_recall(
    settings: NovaflowSettings,
    sample: QuerySample,
    vectors: Callable[[Sequence[str]], Iterator[pa.RecordBatch]],
    ks: tuple[int, ...],
) -> dict[str, Any]:
    """Recall of the index asked with ``evaluation.metadata_filter``, against exact search over
    the rows that match it: where approximate search is known to lose results."""
    evaluation = settings.evaluation
    wanted = dict(evaluation.metadata_filter or {})
    matching = (
        batch.select(["key", "embedding"]).filter(_matches(batch, wanted))
        for batch in vectors(("key", "embedding", "metadata_json"))
    )
    exact = exact_top_k(
        sample.vectors, sample.keys, matching, max(ks), settings.index.metric,
        block_rows=evaluation.block_rows,
    )  # fmt: skip
    outcomes = query_outcomes(sample, exact, paced_index_queries(settings, wanted))
    recall = measured_recall(outcomes, ks, evaluation.tie_tolerance, 0).to_json()
    return {"filter": wanted, "overall": recall["overall"], "by_modality": recall["by_modality"]}


def _matches(batch: pa.RecordBatch, wanted: Mapping[str, Any]) -> pa.Array:
    """Which rows' metadata satisfies ``wanted``: each key equal to its value (or one of
    ``{"$in": [...]}``, or ``{"$eq": v}``). Other operators are refused with a clear error."""
    conditions = {}
    for key, condition in wanted.items():
        if isinstance(condition, Mapping):
            if set(condition) == {"$eq"}:
                conditions[key] = [condition["$eq"]]
            elif set(condition) == {"$in"} and isinstance(condition["$in"], list):
                conditions[key] = list(condition["$in"])
            else:
                raise ValueError(
                    f"evaluation.metadata_filter supports equality and $in on metadata keys, "
                    f"not {condition!r} on {key!r}"
                )
        else:
            conditions[key] = [condition]
    rows = [json.loads(text) for text in batch.column("metadata_json").to_pylist()]
    return pa.array(
        [all(row.get(key) in values for key, values in conditions.items()) for row in rows],
        pa.bool_(),
    )


def _issue_json(issue: Any) -> dict[str, Any]:
    return {"row": issue.row, "query_id": issue.query_id, "message": issue.message}
