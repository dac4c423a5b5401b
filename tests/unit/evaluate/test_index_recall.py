"""Index recall on hand-made outcomes with known answers, querying through an injected index, and
the seeded, modality-stratified query sampler."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from tasks.evaluate.exact_search import ExactNeighbours
from tasks.evaluate.index_recall import (
    QueryOutcome,
    QuerySample,
    batch_modalities,
    measured_recall,
    query_outcomes,
    sample_queries,
)

EXACT = tuple(f"n{rank:02d}" for rank in range(1, 11))  # n01 … n10
DISTANCES = tuple(0.1 * rank for rank in range(1, 11))


def outcome(
    returned: Sequence[tuple[str, float]],
    *,
    key: str | None = "q",
    modality: str = "text",
    exact: Sequence[str] = EXACT,
    distances: Sequence[float] = DISTANCES,
    latency: float = 0.01,
) -> QueryOutcome:
    return QueryOutcome(key, modality, tuple(exact), tuple(distances), tuple(returned), latency)


def perfect(count: int = 10) -> list[tuple[str, float]]:
    return list(zip(EXACT[:count], DISTANCES[:count], strict=True))


def test_perfect_results_have_recall_one_everywhere() -> None:
    recall = measured_recall([outcome(perfect())], ks=(1, 5, 10))

    assert recall.overall.recall == {1: 1.0, 5: 1.0, 10: 1.0}
    assert recall.overall.tie_aware_recall == {1: 1.0, 5: 1.0, 10: 1.0}
    assert recall.overall.short_results == {1: 0, 5: 0, 10: 0}
    assert recall.worst_queries == ()


def test_partial_results_count_what_was_found_in_the_top_k() -> None:
    # n02 and n07 are missing; two far vectors took their places at the end.
    returned = [item for item in perfect() if item[0] not in ("n02", "n07")]
    returned += [("far1", 5.0), ("far2", 6.0)]

    recall = measured_recall([outcome(returned)], ks=(1, 2, 5, 10))

    # top 2 returned: n01, n03 (one of n01, n02); top 5: n01 n03 n04 n05 n06 (four of five).
    assert recall.overall.recall == {1: 1.0, 2: 0.5, 5: 0.8, 10: 0.8}
    assert recall.overall.tie_aware_recall == recall.overall.recall


def test_short_results_are_counted_and_lower_recall() -> None:
    recall = measured_recall([outcome(perfect(4)), outcome(perfect())], ks=(1, 5, 10))

    assert recall.overall.short_results == {1: 0, 5: 1, 10: 1}
    assert recall.overall.recall == {1: 1.0, 5: pytest.approx(0.9), 10: pytest.approx(0.7)}


def test_fewer_exact_neighbours_than_k_lower_the_bar_not_the_recall() -> None:
    """A tiny index: only three vectors besides the query exist, so three results are complete."""
    small = outcome(perfect(3), exact=EXACT[:3], distances=DISTANCES[:3])
    alone = outcome([], exact=(), distances=())

    recall = measured_recall([small, alone], ks=(1, 10))

    assert recall.overall.recall == {1: 1.0, 10: 1.0}
    assert recall.overall.short_results == {1: 0, 10: 0}


def test_ties_count_only_in_the_tie_aware_figure() -> None:
    # "twin" sits at exactly n10's distance: as right as n10, but not the key exact search chose.
    returned = [*perfect(9), ("twin", DISTANCES[9])]

    recall = measured_recall([outcome(returned)], ks=(10,))

    assert recall.overall.recall == {10: 0.9}
    assert recall.overall.tie_aware_recall == {10: 1.0}
    [detail] = recall.worst_queries
    [missed] = detail.missed
    assert (missed.key, missed.exact_rank, missed.distance_gap) == ("n10", 10, 0.0)


def test_tie_tolerance_decides_how_close_counts_as_a_tie() -> None:
    returned = [*perfect(9), ("near", DISTANCES[9] + 2e-5)]

    strict = measured_recall([outcome(returned)], ks=(10,), tie_tolerance=1e-5)
    loose = measured_recall([outcome(returned)], ks=(10,), tie_tolerance=1e-4)

    exact_tie = measured_recall(
        [outcome([*perfect(9), ("twin", DISTANCES[9])])], ks=(10,), tie_tolerance=0.0
    )

    assert strict.overall.tie_aware_recall == {10: 0.9}
    assert loose.overall.tie_aware_recall == {10: 1.0}
    assert loose.tie_tolerance == 1e-4
    assert exact_tie.overall.tie_aware_recall == {10: 1.0}


def test_tie_aware_recall_is_capped_at_one_and_a_repeated_key_counts_once() -> None:
    returned = [("n01", 0.1), ("n01", 0.1), ("dup", 0.1)]

    recall = measured_recall([outcome(returned)], ks=(1, 3))

    assert recall.overall.recall == {1: 1.0, 3: pytest.approx(1 / 3)}
    assert recall.overall.tie_aware_recall == {1: 1.0, 3: pytest.approx(2 / 3)}


def test_means_per_modality_and_overall() -> None:
    half = [*perfect(5), ("x1", 9.0), ("x2", 9.0), ("x3", 9.0), ("x4", 9.0), ("x5", 9.0)]
    outcomes = [
        outcome(perfect(), key="t1", modality="text"),
        outcome(half, key="t2", modality="text"),
        outcome(perfect(), key="i1", modality="image"),
    ]

    recall = measured_recall(outcomes, ks=(10,))

    assert list(recall.by_modality) == ["image", "text"]
    assert recall.by_modality["text"].recall == {10: 0.75}
    assert recall.by_modality["text"].queries == 2
    assert recall.by_modality["image"].recall == {10: 1.0}
    assert recall.overall.recall == {10: pytest.approx(2.5 / 3)}
    assert recall.queries == 3


def test_worst_queries_lowest_recall_first_then_by_key_and_limited() -> None:
    def missing(count: int) -> list[tuple[str, float]]:
        return perfect(10 - count)

    outcomes = [
        outcome(missing(1), key="b"),
        outcome(missing(3), key="c", modality="pdf"),
        outcome(perfect(), key="perfect"),
        outcome(missing(1), key="a"),
        outcome(missing(2), key="d"),
    ]

    recall = measured_recall(outcomes, ks=(1, 10), worst_queries=3)

    assert [detail.query_key for detail in recall.worst_queries] == ["c", "d", "a"]
    worst = recall.worst_queries[0]
    assert worst.modality == "pdf"
    assert worst.recall == {1: 1.0, 10: pytest.approx(0.7)}
    assert [(m.key, m.exact_rank) for m in worst.missed] == [("n08", 8), ("n09", 9), ("n10", 10)]
    assert worst.missed[0].exact_distance == pytest.approx(0.8)
    # Gap to the last result returned (n07 at 0.7): each missed one lies beyond it.
    assert [m.distance_gap for m in worst.missed] == pytest.approx([0.1, 0.2, 0.3])


def test_a_miss_ranked_above_a_farther_result_has_a_negative_gap() -> None:
    returned = [item for item in perfect() if item[0] != "n03"] + [("far", 2.0)]

    [detail] = measured_recall([outcome(returned)], ks=(10,)).worst_queries

    [missed] = detail.missed
    assert missed.key == "n03"
    assert missed.distance_gap == pytest.approx(0.3 - 2.0)


def test_latency_percentiles_in_milliseconds() -> None:
    outcomes = [outcome(perfect(), latency=seconds / 1000) for seconds in range(1, 101)]

    latency = measured_recall(outcomes).latency

    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p95_ms == pytest.approx(95.05)
    assert latency.p99_ms == pytest.approx(99.01)
    assert latency.samples_ms == pytest.approx(tuple(float(ms) for ms in range(1, 101)))


def test_report_json_shape() -> None:
    returned = [*perfect(9), ("twin", DISTANCES[9])]
    outcomes = [
        outcome(perfect(), key="t1", latency=0.002),
        outcome(returned, key="i1", modality="image", latency=0.004),
    ]

    report = measured_recall(outcomes, ks=(1, 10)).to_json()

    assert json.loads(json.dumps(report)) == report
    assert report == {
        "queries": 2,
        "ks": [1, 10],
        "tie_tolerance": 1e-5,
        "overall": {
            "queries": 2,
            "recall": {"1": 1.0, "10": 0.95},
            "tie_aware_recall": {"1": 1.0, "10": 1.0},
            "short_results": {"1": 0, "10": 0},
        },
        "by_modality": {
            "image": {
                "queries": 1,
                "recall": {"1": 1.0, "10": 0.9},
                "tie_aware_recall": {"1": 1.0, "10": 1.0},
                "short_results": {"1": 0, "10": 0},
            },
            "text": {
                "queries": 1,
                "recall": {"1": 1.0, "10": 1.0},
                "tie_aware_recall": {"1": 1.0, "10": 1.0},
                "short_results": {"1": 0, "10": 0},
            },
        },
        "latency_ms": {
            "p50": 3.0,
            "p95": pytest.approx(3.9),
            "p99": pytest.approx(3.98),
            "samples": [2.0, 4.0],
        },
        "worst_queries": [
            {
                "query_key": "i1",
                "modality": "image",
                "recall": {"1": 1.0, "10": 0.9},
                "tie_aware_recall": {"1": 1.0, "10": 1.0},
                "missed": [
                    {"key": "n10", "exact_rank": 10, "exact_distance": 1.0, "distance_gap": 0.0}
                ],
            }
        ],
    }


def test_no_outcomes_give_empty_figures() -> None:
    recall = measured_recall([], ks=(1, 10))

    assert recall.overall.recall == {1: None, 10: None}
    assert recall.latency.p50_ms is None
    assert recall.to_json()["by_modality"] == {}


def test_rejects_bad_ks_and_tolerance() -> None:
    with pytest.raises(ValueError, match="ks"):
        measured_recall([], ks=(0, 10))
    with pytest.raises(ValueError, match="tie_tolerance"):
        measured_recall([], tie_tolerance=-1.0)


def test_query_outcomes_drop_the_query_itself_and_keep_top_k() -> None:
    sample = QuerySample(
        keys=("a", "b"),
        modalities=("text", "image"),
        vectors=np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32),
        available={"image": 1, "text": 1},
    )
    exact = ExactNeighbours(
        keys=(("x", "y"), ("z",)),
        distances=np.array([[0.1, 0.2], [0.3, np.inf]], dtype=np.float32),
        k=2,
        metric="cosine",
    )
    asked: list[tuple[list[float], int]] = []

    def index(vector: np.ndarray, top_k: int) -> tuple[list[tuple[str, float]], float]:
        asked.append((vector.tolist(), top_k))
        if vector[0] == 1.0:  # the index holds the query's own vector and returns it first
            return [("a", 0.0), ("x", 0.1), ("w", 0.15)], 0.003
        return [("z", 0.3), ("b", 0.0)], 0.005

    outcomes = query_outcomes(sample, exact, index)

    assert asked == [([1.0, 0.0], 3), ([0.0, 1.0], 3)]
    assert outcomes[0] == QueryOutcome(
        "a",
        "text",
        ("x", "y"),
        (pytest.approx(0.1), pytest.approx(0.2)),
        (("x", 0.1), ("w", 0.15)),
        0.003,
    )
    assert outcomes[1].returned == (("z", 0.3),)
    assert outcomes[1].exact_keys == ("z",)
    assert measured_recall(outcomes, ks=(2,)).overall.recall == {2: 0.75}


# -- the query sampler ---------------------------------------------------------------------------


def corpus(counts: dict[str, int], dimension: int = 4) -> tuple[list[str], list[str], np.ndarray]:
    """Keys, modalities and vectors for ``counts`` rows per modality, modalities interleaved."""
    modalities = [name for name, count in counts.items() for _ in range(count)]
    order = np.random.default_rng(0).permutation(len(modalities))
    modalities = [modalities[index] for index in order]
    keys = [f"{modality}/{index:05d}" for index, modality in enumerate(modalities)]
    vectors = np.arange(len(keys) * dimension, dtype=np.float32).reshape(len(keys), dimension)
    return keys, modalities, vectors


def batches(
    keys: list[str], modalities: list[str], vectors: np.ndarray, rows: int
) -> list[pa.RecordBatch]:
    dimension = vectors.shape[1]
    out = []
    for start in range(0, len(keys), rows):
        chunk = slice(start, start + rows)
        metadata = [
            json.dumps({"item_id": key, "modality": m})
            for key, m in zip(keys[chunk], modalities[chunk], strict=True)
        ]
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors[chunk].ravel()), dimension)
        out.append(
            pa.record_batch({"key": keys[chunk], "embedding": embedding, "metadata_json": metadata})
        )
    return out


def test_sample_is_spread_evenly_across_modalities() -> None:
    keys, modalities, vectors = corpus({"text": 1000, "image": 300, "audio": 5})

    sample = sample_queries(batches(keys, modalities, vectors, 128), 60, seed=1)

    # audio has only 5 rows: the other two share what it leaves.
    assert Counter(sample.modalities) == {"audio": 5, "image": 27, "text": 28}
    assert sample.available == {"audio": 5, "image": 300, "text": 1000}
    assert len(set(sample.keys)) == 60
    assert list(zip(sample.modalities, sample.keys, strict=True)) == sorted(
        zip(sample.modalities, sample.keys, strict=True)
    )
    rows = {key: row for row, key in enumerate(keys)}
    for key, modality, vector in zip(sample.keys, sample.modalities, sample.vectors, strict=True):
        assert modality == modalities[rows[key]]
        np.testing.assert_array_equal(vector, vectors[rows[key]])
    assert sample.vectors.dtype == np.float32
    assert sample.vectors.shape == (60, 4)


def test_same_seed_same_sample_however_batched_and_other_seeds_differ() -> None:
    keys, modalities, vectors = corpus({"text": 500, "pdf": 200})

    first = sample_queries(batches(keys, modalities, vectors, 64), 40, seed=7)
    rebatched = sample_queries(batches(keys, modalities, vectors, 333), 40, seed=7)
    other = sample_queries(batches(keys, modalities, vectors, 64), 40, seed=8)

    assert first.keys == rebatched.keys
    np.testing.assert_array_equal(first.vectors, rebatched.vectors)
    assert first.keys != other.keys


def test_sample_never_exceeds_its_size_or_the_data() -> None:
    keys, modalities, vectors = corpus({"text": 8, "image": 3})

    everything = sample_queries(batches(keys, modalities, vectors, 4), 100, seed=0)
    nothing = sample_queries(batches(keys, modalities, vectors, 4), 0, seed=0)

    assert sorted(everything.keys) == sorted(keys)
    assert len(nothing) == 0
    assert nothing.vectors.shape[0] == 0


def test_every_row_of_a_modality_is_equally_likely() -> None:
    keys, modalities, vectors = corpus({"text": 40})
    data = batches(keys, modalities, vectors, 16)

    picks = Counter(key for seed in range(400) for key in sample_queries(data, 4, seed).keys)

    # Each row is expected 40 times (4 of 40, 400 draws): all well inside 40 ± 25.
    assert set(picks) == set(keys)
    assert all(15 <= count <= 65 for count in picks.values())


def test_modality_comes_from_a_column_or_the_metadata_json() -> None:
    metadata = [
        '{"item_id": "a", "modality": "pdf", "page": 3}',
        '{"modality":"image"}',
        '{"item_id": "c"}',
        '{"extra": {"modality": "nested"}, "modality": "video"}',
        '{"kind": "modality", "modality": "audio"}',
        '{"kind": "modality"}',
    ]
    from_json = pa.record_batch({"metadata_json": metadata})
    from_column = pa.record_batch({"modality": ["text", None]})

    assert batch_modalities(from_json).to_pylist() == [
        "pdf",
        "image",
        "unknown",
        "video",
        "audio",
        "unknown",
    ]
    assert batch_modalities(from_column).to_pylist() == ["text", "unknown"]
    with pytest.raises(ValueError, match="modality"):
        batch_modalities(pa.record_batch({"key": ["a"]}))


def test_a_query_without_a_key_keeps_every_result_up_to_k() -> None:
    sample = QuerySample((None,), ("query file",), np.ones((1, 2), np.float32), {"query file": 1})
    exact = ExactNeighbours((("a", "b"),), np.array([[0.1, 0.2]], np.float32), 2, "euclidean")

    def index(vector: np.ndarray, top_k: int) -> tuple[list[tuple[str, float]], float]:
        return [("a", 0.1), ("b", 0.2), ("c", 0.3)][:top_k], 0.001

    [result] = query_outcomes(sample, exact, index)

    assert result.returned == (("a", 0.1), ("b", 0.2))
    assert result.query_key is None
