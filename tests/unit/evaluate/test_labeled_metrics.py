"""Labeled metrics against an oracle: ir_measures (trec_eval through pytrec_eval-terrier) run on the
TREC run and qrels files we write must give exactly our per-query figures and means."""

from __future__ import annotations

import io
import itertools
import math
import random
from collections.abc import Mapping, Sequence

import ir_measures
import pytest
from ir_measures import RR, R, nDCG

from tasks.evaluate.labeled_metrics import (
    LabeledReport,
    evaluate_labeled,
    metric_names,
    query_metrics,
    scored_ranking,
    trec_id,
    trec_qrels_text,
    trec_run_text,
)
from tasks.evaluate.qrels import LabeledQuery

ORACLE_MEASURES = {"recall": R, "mrr": RR, "ndcg": nDCG, "precision": ir_measures.P}


def labeled(
    query_id: str, judgements: Mapping[str, int], query_type: str = "text→text"
) -> LabeledQuery:
    return LabeledQuery(query_id, query_type, tuple(judgements.items()), row=1, text="q")


def parse_run(text: str) -> dict[str, list[tuple[str, int, float, str]]]:
    """Run lines by query: (docid, rank, score, run name), in file order."""
    by_query: dict[str, list[tuple[str, int, float, str]]] = {}
    for line in text.splitlines():
        qid, q0, doc, rank, score, name = line.split()
        assert q0 == "Q0"
        by_query.setdefault(qid, []).append((doc, int(rank), float(score), name))
    return by_query


def assert_matches_oracle(queries: Sequence[LabeledQuery], report: LabeledReport) -> None:
    """Recompute every metric from the TREC text alone and compare, per query and on average."""
    run_text, qrels_text = trec_run_text(report), trec_qrels_text(queries)
    for lines in parse_run(run_text).values():
        assert [rank for _, rank, _, _ in lines] == list(range(1, len(lines) + 1))
        scores = [score for _, _, score, _ in lines]
        assert all(a > b for a, b in itertools.pairwise(scores)), "tied scores"
        assert len({doc for doc, _, _, _ in lines}) == len(lines), "a docid twice"
    measures = {
        f"{name}@{k}": ORACLE_MEASURES[name] @ k for name in ORACLE_MEASURES for k in report.ks
    }
    qrels = list(ir_measures.read_trec_qrels(io.StringIO(qrels_text)))
    run = list(ir_measures.read_trec_run(io.StringIO(run_text)))
    oracle: dict[tuple[str, str], float] = {}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels, run):
        oracle[(metric.query_id, str(metric.measure))] = metric.value
    for result in report.per_query:
        for name, measure in measures.items():
            expected = oracle[(trec_id(result.query_id), str(measure))]
            assert result.metrics[name] == pytest.approx(expected, abs=1e-12), (
                result.query_id,
                name,
                result.ranking,
            )
    aggregate = ir_measures.calc_aggregate(list(measures.values()), qrels, run)
    overall = report.overall()
    for name, measure in measures.items():
        assert overall[name] == pytest.approx(aggregate[measure], abs=1e-12), name


def test_a_hand_computed_graded_query() -> None:
    grades = {"a": 2, "b": 1, "z": 3}  # z is never returned

    metrics = query_metrics(["c", "a", "d", "b"], grades, ks=(1, 3, 10))

    ideal = 3 + 2 / 1.584962500721156 + 1 / 2
    assert metrics == pytest.approx(
        {
            "recall@1": 0.0,
            "recall@3": 1 / 3,
            "recall@10": 2 / 3,
            "mrr@1": 0.0,
            "mrr@3": 0.5,
            "mrr@10": 0.5,
            "ndcg@1": 0.0,
            "ndcg@3": (2 / 1.584962500721156) / ideal,
            "ndcg@10": (2 / 1.584962500721156 + 1 / 2.321928094887362) / ideal,
            "precision@1": 0.0,
            "precision@3": 1 / 3,
            "precision@10": 2 / 10,
        }
    )


def test_item_level_keeps_each_item_once_at_its_best_rank() -> None:
    ranking = ["pdf/m#page=3", "pdf/m#page=1", "text/a#chunk=0", "pdf/m#page=2", "images/c"]

    assert scored_ranking(ranking, "item") == ("pdf/m", "text/a", "images/c")
    assert scored_ranking([*ranking, "images/c"], "unit") == tuple(ranking)


def test_several_units_of_one_item_count_once_and_move_the_next_item_up() -> None:
    queries = [labeled("q", {"text/b": 1})]
    rankings = {"q": ["text/a#chunk=0", "text/a#chunk=1", "text/a#chunk=2", "text/b#chunk=4"]}

    report = evaluate_labeled(queries, rankings, ks=(1, 2, 5))

    result = report.per_query[0]
    assert result.ranking == ("text/a", "text/b")
    assert result.metrics["mrr@5"] == 0.5  # rank 2 of the items, not rank 4 of the units
    assert result.metrics["recall@2"] == 1.0
    assert result.metrics["precision@5"] == 1 / 5
    assert trec_run_text(report) == "q Q0 text/a 1 2 vector\nq Q0 text/b 2 1 vector\n"
    assert_matches_oracle(queries, report)


def test_oracle_on_graded_short_empty_and_unjudged_rankings() -> None:
    queries = [
        labeled("graded", {"a": 3, "b": 2, "c": 1, "d": 0}),
        labeled("short", {"a": 1, "b": 1}),  # 1 result for k up to 10
        labeled("empty", {"a": 1}),  # nothing came back: no run line
        labeled("none-relevant", {"a": 0, "b": 0}, "image→image"),
        labeled("units", {"p#page=2": 2, "p#page=5": 1, "img": 1}, "text→pdf"),
    ]
    rankings = {
        "graded": ["d", "c", "x", "a", "b"],
        "short": ["b"],
        "empty": [],
        "none-relevant": ["a", "b", "c"],
        "units": ["p#page=1", "img", "p#page=5", "p#page=5", "p#page=2"],
    }

    report = evaluate_labeled(queries, rankings)

    assert report.queries_without_relevant == 1
    assert set(report.per_query[3].metrics.values()) == {0.0}
    assert set(report.per_query[2].metrics.values()) == {0.0}
    assert report.per_query[4].ranking == ("p#page=1", "img", "p#page=5", "p#page=2")
    assert report.per_query[1].metrics["precision@10"] == 0.1
    assert_matches_oracle(queries, report)


def test_ids_with_spaces_and_percent_signs_stay_one_trec_column() -> None:
    queries = [labeled("q 1", {"docs/my file.txt": 1, "docs/100%": 2})]
    rankings = {"q 1": ["docs/100%#chunk=0", "docs/my file.txt#chunk=3"]}

    report = evaluate_labeled(queries, rankings)

    assert trec_id("docs/my file.txt") == "docs/my%20file.txt"
    assert trec_id("docs/100%") == "docs/100%25"
    assert trec_id("a\u3000b") == "a%E3%80%80b"
    assert trec_qrels_text(queries) == "q%201 0 docs/my%20file.txt 1\nq%201 0 docs/100%25 2\n"
    assert_matches_oracle(queries, report)


def random_case(rng: random.Random) -> tuple[list[LabeledQuery], dict[str, list[str]]]:
    """A small corpus of items with 0-4 units each, and queries judged at either level."""
    units: dict[str, list[str]] = {}
    for number in range(rng.randint(3, 12)):
        item = f"item{number}"
        parts = rng.randint(0, 4)
        units[item] = [item] if parts == 0 else [f"{item}#chunk={j}" for j in range(parts)]
    keys = [key for item_keys in units.values() for key in item_keys]
    queries, rankings = [], {}
    for number in range(rng.randint(1, 6)):
        if rng.random() < 0.5:
            judged = rng.sample(sorted(units), rng.randint(1, len(units)))
        else:
            judged = rng.sample(keys, rng.randint(1, len(keys)))
            if not any("#" in key for key in judged):
                judged.append(f"item{number}#chunk=9")  # a unit key nobody returns
        grades = {entry: rng.choice((0, 0, 1, 1, 2, 3)) for entry in judged}
        query_id = f"q{number}"
        queries.append(labeled(query_id, grades, rng.choice(("text→text", "image→image"))))
        ranking = rng.sample(keys, rng.randint(0, len(keys)))
        if ranking and rng.random() < 0.2:
            ranking.insert(rng.randint(0, len(ranking)), rng.choice(ranking))
        rankings[query_id] = ranking
    return queries, rankings


@pytest.mark.parametrize("seed", range(50))
def test_random_cases_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    queries, rankings = random_case(rng)
    ks = tuple(sorted(rng.sample((1, 2, 3, 5, 10, 20, 50), 3)))

    report = evaluate_labeled(queries, rankings, ks=ks, mode="hybrid")

    run_lines = parse_run(trec_run_text(report)).values()
    assert {name for lines in run_lines for _, _, _, name in lines} <= {"hybrid"}
    assert_matches_oracle(queries, report)


def test_to_json_groups_by_query_type_and_lists_every_query() -> None:
    queries = [
        labeled("q1", {"a": 1}),
        labeled("q2", {"b": 1}),
        labeled("q3", {"c": 0}, "image→image"),
    ]
    rankings = {"q1": ["a#chunk=0"], "q2": ["x", "b"], "q3": ["c"]}

    report = evaluate_labeled(queries, rankings, ks=(1, 5))
    document = report.to_json()

    names = list(metric_names((1, 5)))
    assert names == [
        "recall@1",
        "recall@5",
        "mrr@1",
        "mrr@5",
        "ndcg@1",
        "ndcg@5",
        "precision@1",
        "precision@5",
    ]
    assert document["mode"] == "vector"
    assert document["queries"] == 3
    assert document["ks"] == [1, 5]
    assert document["queries_without_relevant"] == 1
    assert list(document["overall"]) == names
    assert document["overall"]["mrr@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    q2_ndcg = 1 / math.log2(3)  # b at rank 2
    text_means = [0.5, 1.0, 0.5, 0.75, 0.5, (1 + q2_ndcg) / 2, 0.5, 0.2]
    assert document["by_query_type"] == {
        "image→image": {"queries": 1, "metrics": dict.fromkeys(names, 0.0)},
        "text→text": {
            "queries": 2,
            "metrics": pytest.approx(dict(zip(names, text_means, strict=True))),
        },
    }
    assert document["per_query"][0] == {
        "query_id": "q1",
        "type": "text→text",
        "metrics": report.per_query[0].metrics,
        "ranking": ["a"],
    }


def test_an_empty_report_has_no_means() -> None:
    report = evaluate_labeled([], {})

    assert report.to_json()["overall"] == {}
    assert trec_run_text(report) == ""


@pytest.mark.parametrize(
    ("rankings", "ks", "mode", "message"),
    [
        ({}, (1,), "vector", r"missing \['q'\]"),
        ({"q": [], "r": []}, (1,), "vector", r"extra \['r'\]"),
        ({"q": []}, (), "vector", "ks must be"),
        ({"q": []}, (0, 5), "vector", "ks must be"),
        ({"q": []}, (1,), "my mode", "mode must be"),
        ({"q": []}, (1,), "", "mode must be"),
    ],
)
def test_bad_arguments_raise(
    rankings: dict[str, list[str]], ks: tuple[int, ...], mode: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_labeled([labeled("q", {"a": 1})], rankings, ks=ks, mode=mode)
