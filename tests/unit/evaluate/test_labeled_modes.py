"""Labeled queries in each retrieval mode: which queries each mode runs, what it is asked with,
why a mode does not run, the side-by-side JSON, and each mode's TREC files against ir-measures."""

from __future__ import annotations

import io
import random
from collections.abc import Mapping, Sequence

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, R, nDCG

from tasks.evaluate.labeled_metrics import evaluate_labeled
from tasks.evaluate.labeled_modes import (
    FILE_QUERIES_SKIPPED,
    NO_TEXT_QUERIES,
    ModeRefusedError,
    ModeReports,
    labeled_modes,
    text_modes_unavailable,
    trec_file_names,
    trec_files,
    trec_names_json,
)
from tasks.evaluate.qrels import LabeledQuery
from tasks.vector_store import RetrievalMode

ORACLE = {"recall": R, "mrr": RR, "ndcg": nDCG, "precision": ir_measures.P}
KS = (1, 5, 10)


def text_query(
    query_id: str, grades: Mapping[str, int], query_type: str = "text→text"
) -> LabeledQuery:
    return LabeledQuery(
        query_id, query_type, tuple(grades.items()), row=1, text=f"about {query_id}"
    )


def file_query(query_id: str, grades: Mapping[str, int]) -> LabeledQuery:
    return LabeledQuery(
        query_id, "image→image", tuple(grades.items()), row=1, file=f"{query_id}.png"
    )


class FakeIndex:
    """Answers from a fixed ranking per (mode, query): the query is named by its text when it
    has one and the mode searches text, else by its vector's position. Records every call's
    mode, inputs and depth."""

    def __init__(self, rankings: Mapping[tuple[str, str], Sequence[str]]) -> None:
        self.rankings = rankings
        self.calls: list[tuple[str, bool, str | None, int]] = []
        self.refuse: set[str] = set()

    def __call__(
        self, mode: RetrievalMode, vector: np.ndarray | None, text: str | None, top_k: int
    ) -> list[str]:
        self.calls.append((mode, vector is not None, text, top_k))
        if mode in self.refuse:
            raise ModeRefusedError(f"the index refused a {mode} query: BUILDING")
        query_id = text.removeprefix("about ") if text else str(int(vector[0]))  # type: ignore[index]
        return list(self.rankings.get((mode, query_id), ()))


def vectors_for(queries: Sequence[LabeledQuery]) -> list[np.ndarray]:
    """A vector per query whose first value says which query it is (for file queries)."""
    return [np.full(4, float(position), dtype=np.float32) for position in range(len(queries))]


def sample() -> tuple[list[LabeledQuery], list[np.ndarray], FakeIndex]:
    queries = [
        text_query("part", {"text/log-a": 1}, "text→text (exact word)"),
        text_query("bread", {"text/bread": 2, "text/rye": 1}),
        file_query("cat", {"image/cat": 1}),
    ]
    index = FakeIndex(
        {
            ("vector", "0"): ["text/card#chunk=0", "text/log-a#chunk=0"],
            ("vector", "1"): ["text/bread#chunk=0", "text/rye#chunk=0"],
            ("vector", "2"): ["image/cat"],
            ("text", "part"): ["text/log-a#chunk=0"],
            ("text", "bread"): ["text/rye#chunk=0", "text/bread#chunk=0"],
            ("hybrid", "part"): ["text/log-a#chunk=0", "text/card#chunk=0"],
            ("hybrid", "bread"): ["text/bread#chunk=0", "text/rye#chunk=0"],
        }
    )
    return queries, vectors_for(queries), index


def run(index: FakeIndex, queries: list[LabeledQuery], reason: str | None = None) -> ModeReports:
    return labeled_modes(
        queries, vectors_for(queries), index, depth=100, ks=KS, text_unavailable=reason
    )


def test_vector_runs_every_query_and_text_modes_only_those_with_text() -> None:
    queries, _, index = sample()

    modes = run(index, queries)

    assert [report.mode for report in modes.reports] == ["vector", "text", "hybrid"]
    assert [r.query_id for r in modes.report("vector").per_query] == ["part", "bread", "cat"]
    for mode in ("text", "hybrid"):
        assert [r.query_id for r in modes.report(mode).per_query] == ["part", "bread"]
    assert modes.unavailable == ()
    assert modes.skipped == (("text", 1), ("hybrid", 1))
    assert modes.common_query_ids() == ("part", "bread")
    # Each mode is asked with what it searches by: a vector, a text, or both; 100 deep.
    asked = {(mode, with_vector, text is not None) for mode, with_vector, text, _ in index.calls}
    assert asked == {("vector", True, False), ("text", False, True), ("hybrid", True, True)}
    assert {top_k for *_, top_k in index.calls} == {100}
    assert len(index.calls) == 3 + 2 + 2


def test_the_json_puts_the_modes_side_by_side_with_common_means() -> None:
    queries, _, index = sample()

    document = run(index, queries).to_json()

    assert list(document["modes"]) == ["vector", "text", "hybrid"]
    vector, text = document["modes"]["vector"], document["modes"]["text"]
    assert vector["queries"] == 3
    assert "skipped" not in vector
    assert text["queries"] == 2
    assert text["skipped"] == {"queries": 1, "reason": FILE_QUERIES_SKIPPED}
    assert set(vector["by_query_type"]) == {"image→image", "text→text", "text→text (exact word)"}
    assert set(text["by_query_type"]) == {"text→text", "text→text (exact word)"}
    # The exact part number: vector ranks a card first, text and hybrid the log that has it.
    exact = "text→text (exact word)"
    assert vector["by_query_type"][exact]["metrics"]["mrr@10"] == 0.5
    assert text["by_query_type"][exact]["metrics"]["mrr@10"] == 1.0
    assert document["modes"]["hybrid"]["by_query_type"][exact]["metrics"]["recall@1"] == 1.0
    assert document["modes_unavailable"] == {}
    common = document["common"]
    assert common["queries"] == 2
    assert list(common["overall"]) == ["vector", "text", "hybrid"]
    assert common["overall"]["vector"]["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert vector["overall"]["mrr@10"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)


def test_text_modes_unavailable_on_the_index_are_reported_with_the_reason() -> None:
    queries, _, index = sample()

    modes = run(index, queries, reason="searchable text is off for this index")

    assert [report.mode for report in modes.reports] == ["vector"]
    document = modes.to_json()
    assert document["modes_unavailable"] == {
        "text": "searchable text is off for this index",
        "hybrid": "searchable text is off for this index",
    }
    assert document["common"] is None
    assert {mode for mode, *_ in index.calls} == {"vector"}


def test_without_any_text_query_only_vector_runs() -> None:
    queries = [file_query("cat", {"image/cat": 1})]

    modes = run(FakeIndex({("vector", "0"): ["image/cat"]}), queries)

    assert dict(modes.unavailable) == {"text": NO_TEXT_QUERIES, "hybrid": NO_TEXT_QUERIES}
    assert modes.report("vector").overall()["recall@1"] == 1.0


def test_a_mode_the_index_refuses_is_not_run_and_the_others_are() -> None:
    queries, _, index = sample()
    index.refuse = {"hybrid"}

    modes = run(index, queries)

    assert [report.mode for report in modes.reports] == ["vector", "text"]
    assert dict(modes.unavailable) == {"hybrid": "the index refused a hybrid query: BUILDING"}


def test_mismatched_vectors_are_a_callers_mistake() -> None:
    queries, _, index = sample()

    with pytest.raises(ValueError, match="3 queries but 2 vectors"):
        labeled_modes(queries, vectors_for(queries)[:2], index, depth=10, ks=KS,
                      text_unavailable=None)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "setting", "expected"),
    [
        ("ACTIVE", False, None),
        ("ACTIVE", True, None),
        (None, False, "searchable text is off for this index"),
        (None, True, "searchable text is off for this index (the next run turns it on)"),
        ("BUILDING", True, "the index's searchable text is BUILDING, not yet answering text"),
    ],
)
def test_text_modes_need_the_searchable_text_active(
    status: str | None, setting: bool, expected: str | None
) -> None:
    reason = text_modes_unavailable(status, setting)

    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(expected)


def test_each_mode_has_its_own_trec_run_and_qrels() -> None:
    queries, _, index = sample()
    modes = run(index, queries)

    files = trec_files(modes, queries)

    assert trec_file_names("vector") == ("labeled.run", "labeled.qrels")
    assert set(files) == {
        "labeled.run", "labeled.qrels", "labeled.text.run", "labeled.text.qrels",
        "labeled.hybrid.run", "labeled.hybrid.qrels",
    }  # fmt: skip
    assert trec_names_json(modes)["hybrid"] == {
        "run": "labeled.hybrid.run",
        "qrels": "labeled.hybrid.qrels",
    }
    assert {line.split()[-1] for line in files["labeled.text.run"].splitlines()} == {"text"}
    # A mode's qrels hold only the queries it ran: a tool then averages over the same ones.
    assert {line.split()[0] for line in files["labeled.text.qrels"].splitlines()} == {
        "part",
        "bread",
    }
    assert "cat" in {line.split()[0] for line in files["labeled.qrels"].splitlines()}


def assert_each_mode_matches_the_oracle(modes: ModeReports, queries: list[LabeledQuery]) -> None:
    """Every mode's figures, per query and overall, recomputed by ir-measures (trec_eval) from
    that mode's TREC run and qrels texts alone."""
    files = trec_files(modes, queries)
    for report in modes.reports:
        run_name, qrels_name = trec_file_names(report.mode)
        measures = {f"{m}@{k}": ORACLE[m] @ k for m in ORACLE for k in report.ks}
        qrels = list(ir_measures.read_trec_qrels(io.StringIO(files[qrels_name])))
        ranked = list(ir_measures.read_trec_run(io.StringIO(files[run_name])))
        per_query = {
            (found.query_id, str(found.measure)): found.value
            for found in ir_measures.iter_calc(list(measures.values()), qrels, ranked)
        }
        for result in report.per_query:
            for name, measure in measures.items():
                expected = per_query.get((result.query_id, str(measure)), 0.0)
                assert result.metrics[name] == pytest.approx(expected, abs=1e-12), (
                    report.mode, result.query_id, name,
                )  # fmt: skip
        aggregate = ir_measures.calc_aggregate(list(measures.values()), qrels, ranked)
        overall = report.overall()
        for name, measure in measures.items():
            assert overall[name] == pytest.approx(aggregate[measure], abs=1e-12), (
                report.mode,
                name,
            )


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_the_oracle_in_every_mode(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"text/d{n}" for n in range(8)] + [f"pdf/p#page={n}" for n in range(1, 4)]
    queries: list[LabeledQuery] = []
    for number in range(rng.randint(2, 10)):
        judged = rng.sample(keys[:8], rng.randint(1, 4))
        grades = {doc: rng.choice((0, 1, 2, 3)) for doc in judged}
        if rng.random() < 0.3:
            queries.append(file_query(f"f{number}", grades))
        else:
            queries.append(text_query(f"q{number}", grades))
    rankings: dict[tuple[str, str], list[str]] = {}
    for position, query in enumerate(queries):
        for mode in ("vector", "text", "hybrid"):
            name = query.query_id if query.text and mode != "vector" else str(position)
            units = [f"{key}#chunk={rng.randint(0, 2)}" for key in keys[:8]] + keys[8:]
            rankings[(mode, name)] = rng.sample(units, rng.randint(0, len(units)))

    modes = run(FakeIndex(rankings), queries)

    assert_each_mode_matches_the_oracle(modes, queries)


def test_for_queries_keeps_the_reports_order_and_means_over_the_subset() -> None:
    queries = [text_query("a", {"x": 1}), text_query("b", {"y": 1}), text_query("c", {"z": 1})]
    report = evaluate_labeled(queries, {"a": ["x"], "b": [], "c": ["z"]}, ks=(1,), mode="text")

    subset = report.for_queries({"c", "b"})

    assert [r.query_id for r in subset.per_query] == ["b", "c"]
    assert subset.mode == "text"
    assert subset.overall()["recall@1"] == 0.5
