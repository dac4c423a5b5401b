"""Labeled retrieval metrics against a user's qrels, and TREC files that recompute the same figures.

For each judged query the index returns a ranking of unit keys, best first. What is scored is the
query's *scored ranking* (``scored_ranking``):

- **item level** (every judged entry is an item id): each key becomes its item id (the part
  before the first ``#``) and only an item's first, best-ranked occurrence is kept, so three
  pages of one PDF take one rank, not three, and the items after them move up;
- **unit level** (some judged entry is a unit key): keys are kept as they are; a key returned
  twice keeps its first rank.

The metrics, at each cut-off ``k`` over the first ``k`` entries of the scored ranking, with
"relevant" meaning a judged grade ≥ 1 and gain = the grade (trec_eval's definitions):

- ``recall@k``: relevant entries in the top ``k`` / all relevant judged entries;
- ``mrr@k``: 1 / rank of the first relevant entry in the top ``k`` (0 when there is none);
- ``ndcg@k``: DCG of the top ``k`` (gain / log2(rank + 1)) / the same over the ``k`` highest
  judged grades;
- ``precision@k``: relevant entries in the top ``k`` / ``k``, also when fewer than ``k`` came back.

A query with no relevant judgement (all grades 0) scores 0 on every metric and counts in every
mean (``queries_without_relevant`` says how many). trec_eval, ir_measures and ranx do the same
with the qrels file written here, which lists such a query's grade-0 lines. A query whose
ranking came back empty has no line in the run file: ir_measures still counts it (as 0),
trec_eval does with ``-c``, and ranx with ``evaluate(..., make_comparable=True)``.

``trec_run_text`` writes the scored ranking itself (item ids or unit keys, each once) with
scores that strictly decrease with rank (n, n-1, …, 1), so a tool that sorts by score keeps our
order exactly and never breaks a tie its own way; ``trec_qrels_text`` writes the judgements.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.evaluate.qrels import LabeledQuery, Level, item_of

METRICS = ("recall", "mrr", "ndcg", "precision")
DEFAULT_KS = (1, 5, 10)
DEFAULT_MODE = "vector"


def scored_ranking(ranking: Sequence[str], level: Level) -> tuple[str, ...]:
    """The ids a ranking of unit keys is scored on: item ids, each item once at its best rank
    (``level="item"``), or the keys themselves, each once (``level="unit"``)."""
    seen: set[str] = set()
    scored: list[str] = []
    for key in ranking:
        doc = item_of(key) if level == "item" else key
        if doc not in seen:
            seen.add(doc)
            scored.append(doc)
    return tuple(scored)


def metric_names(ks: Sequence[int]) -> tuple[str, ...]:
    """The metric names reported for cut-offs ``ks``: ``recall@1``, …, ``precision@10``."""
    return tuple(f"{metric}@{k}" for metric in METRICS for k in ks)


def query_metrics(
    scored: Sequence[str], grades: Mapping[str, int], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Every metric at every ``k`` for one query: ``scored`` is its scored ranking (distinct
    ids, best first) and ``grades`` its judgements (id → grade; unjudged ids are grade 0)."""
    relevant_total = sum(1 for grade in grades.values() if grade >= 1)
    ideal = sorted((grade for grade in grades.values() if grade > 0), reverse=True)
    gains = [grades.get(doc, 0) for doc in scored]
    first_relevant = next((rank for rank, gain in enumerate(gains, 1) if gain >= 1), None)
    values: dict[str, float] = {}
    for k in ks:
        hits = sum(1 for gain in gains[:k] if gain >= 1)
        ideal_dcg = _dcg(ideal[:k])
        values[f"recall@{k}"] = hits / relevant_total if relevant_total else 0.0
        values[f"mrr@{k}"] = (
            1.0 / first_relevant if first_relevant is not None and first_relevant <= k else 0.0
        )
        values[f"ndcg@{k}"] = _dcg(gains[:k]) / ideal_dcg if ideal_dcg > 0 else 0.0
        values[f"precision@{k}"] = hits / k
    return {name: values[name] for name in metric_names(ks)}


def _dcg(gains: Sequence[int]) -> float:
    return math.fsum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1) if gain)


@dataclass(frozen=True)
class QueryResult:
    """One query's scores: ``ranking`` is its scored ranking (what the run file lists)."""

    query_id: str
    query_type: str
    level: Level
    metrics: dict[str, float]
    ranking: tuple[str, ...]
    has_relevant: bool

    def to_json(self) -> dict[str, Any]:
        """``{"query_id", "type", "metrics", "ranking"}``."""
        return {
            "query_id": self.query_id,
            "type": self.query_type,
            "metrics": dict(self.metrics),
            "ranking": list(self.ranking),
        }


@dataclass(frozen=True)
class LabeledReport:
    """Labeled metrics of one retrieval ``mode`` (``vector``, ``text``, ``hybrid``…) over a
    set of judged queries; every mean is over queries, each weighing the same."""

    ks: tuple[int, ...]
    mode: str
    per_query: tuple[QueryResult, ...]

    @property
    def queries(self) -> int:
        """How many queries were scored."""
        return len(self.per_query)

    @property
    def queries_without_relevant(self) -> int:
        """Queries with no judgement of grade ≥ 1: they score 0 and count in the means."""
        return sum(1 for result in self.per_query if not result.has_relevant)

    def overall(self) -> dict[str, float]:
        """The mean of each metric over all queries (empty when there is no query)."""
        return _mean(self.per_query, self.ks)

    def by_query_type(self) -> dict[str, dict[str, Any]]:
        """Per query type (sorted): ``{"queries": n, "metrics": {metric: mean}}``."""
        groups: dict[str, list[QueryResult]] = {}
        for result in self.per_query:
            groups.setdefault(result.query_type, []).append(result)
        return {
            query_type: {"queries": len(results), "metrics": _mean(results, self.ks)}
            for query_type, results in sorted(groups.items())
        }

    def for_queries(self, query_ids: Collection[str]) -> LabeledReport:
        """The same report over only the queries in ``query_ids`` (in this report's order):
        what puts two modes that ran different sets of queries on the same footing."""
        kept = tuple(result for result in self.per_query if result.query_id in query_ids)
        return LabeledReport(ks=self.ks, mode=self.mode, per_query=kept)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready dicts: counts, ``overall``, ``by_query_type``, ``per_query``."""
        return {
            "mode": self.mode,
            "queries": self.queries,
            "ks": list(self.ks),
            "queries_without_relevant": self.queries_without_relevant,
            "overall": self.overall(),
            "by_query_type": self.by_query_type(),
            "per_query": [result.to_json() for result in self.per_query],
        }


def _mean(results: Sequence[QueryResult], ks: Sequence[int]) -> dict[str, float]:
    if not results:
        return {}
    return {
        name: math.fsum(result.metrics[name] for result in results) / len(results)
        for name in metric_names(ks)
    }


def evaluate_labeled(
    queries: Sequence[LabeledQuery],
    rankings: Mapping[str, Sequence[str]],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    mode: str = DEFAULT_MODE,
) -> LabeledReport:
    """Score each query's ranking (``rankings[query_id]``: unit keys, best first; empty when
    nothing came back) against its judgements. Every query needs a ranking and every ranking a
    query: a mismatch is a caller's mistake and raises ``ValueError``."""
    cutoffs = _check_ks(ks)
    _check_token("mode", mode)
    query_ids = [query.query_id for query in queries]
    missing = [query_id for query_id in query_ids if query_id not in rankings]
    extra = sorted(set(rankings) - set(query_ids))
    if missing or extra:
        raise ValueError(f"rankings do not match the queries: missing {missing}, extra {extra}")
    results = []
    for query in queries:
        scored = scored_ranking(rankings[query.query_id], query.level)
        results.append(
            QueryResult(
                query_id=query.query_id,
                query_type=query.query_type,
                level=query.level,
                metrics=query_metrics(scored, query.grades, cutoffs),
                ranking=scored,
                has_relevant=bool(query.relevant),
            )
        )
    return LabeledReport(ks=cutoffs, mode=mode, per_query=tuple(results))


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    return tuple(sorted(set(ks)))


def _check_token(what: str, value: str) -> None:
    if not value or any(character.isspace() for character in value):
        raise ValueError(f"{what} must be a non-empty word without spaces, got {value!r}")


# -- TREC files --------------------------------------------------------------------------------


def trec_id(value: str) -> str:
    """``value`` as a TREC column: ``%`` and whitespace percent-encoded (their UTF-8 bytes, as in
    URLs), everything else as is, so an id with spaces stays one column and distinct ids stay
    distinct. Ids without ``%`` or whitespace are unchanged."""
    return "".join(
        "".join(f"%{byte:02X}" for byte in character.encode())
        if character == "%" or character.isspace()
        else character
        for character in value
    )


def trec_run_text(report: LabeledReport) -> str:
    """The run file of ``report``: ``qid Q0 docid rank score run_name`` per scored entry, ranks
    from 1, score = entries - rank + 1 (so strictly decreasing), run name = the report's mode."""
    lines = []
    for result in report.per_query:
        total = len(result.ranking)
        qid = trec_id(result.query_id)
        for rank, doc in enumerate(result.ranking, 1):
            lines.append(f"{qid} Q0 {trec_id(doc)} {rank} {total - rank + 1} {report.mode}")
    return "".join(f"{line}\n" for line in lines)


def trec_qrels_text(queries: Sequence[LabeledQuery]) -> str:
    """The qrels file of ``queries``: ``qid 0 docid grade`` per judgement, grade-0 lines too
    (item ids for item-level queries, unit keys for unit-level ones, as in the run file)."""
    return "".join(
        f"{trec_id(query.query_id)} 0 {trec_id(entry)} {grade}\n"
        for query in queries
        for entry, grade in query.judgements
    )
