"""The index-recall part of the evaluation report: how much of the exact nearest neighbours the
vector index returns (overall, per modality, under a filter), how fast, and the worst queries."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from typing import Any

from tasks.report.evaluation.plots import BarChart, Histogram, LineChart, Marker, Plot, Series
from tasks.report.evaluation.tables import (
    MISSING,
    Cell,
    Figure,
    Row,
    Section,
    Table,
    at_k,
    count,
    fraction,
    items,
    key,
    ks_of,
    mapping,
    milliseconds,
    number,
    significant,
    text,
)

RECALL_MEANING = (
    "Recall@k: the share of a query's exact k nearest neighbours (by brute force over the same "
    "vectors) that the index returned in its top k. Tie-aware recall also counts a returned "
    "neighbour whose exact distance ties the k-th within the tie tolerance, since either order is "
    "right. Short results: queries that got fewer than k results back."
)


def index_recall_sections(report: Mapping[str, Any]) -> tuple[Section, ...]:
    """Recall (with its plots), latency and the worst queries; one note when the report has no
    index recall."""
    recall = mapping(report.get("index_recall"))
    if not recall:
        return (
            Section(
                "index-recall",
                "Index recall",
                notes=((text("This report has no index recall evaluation."),),),
            ),
        )
    return (
        _recall_section(recall),
        _latency_section(mapping(recall.get("latency_ms"))),
        _worst_queries_section(recall),
    )


def _recall_section(recall: Mapping[str, Any]) -> Section:
    overall = mapping(recall.get("overall"))
    scopes = [("overall", overall)] + [
        (str(name), mapping(scope)) for name, scope in mapping(recall.get("by_modality")).items()
    ]
    ks = ks_of(recall, overall.get("recall"), overall.get("tie_aware_recall"))
    tolerance = number(recall.get("tie_tolerance"))
    notes = [
        (
            text(f"{_whole(recall.get('queries'))} queries, k = {', '.join(map(str, ks))}; "),
            text(f"tie tolerance {MISSING if tolerance is None else f'{tolerance:g}'}."),
        ),
        (text(RECALL_MEANING),),
    ]
    figures = [
        Figure(
            Table(
                "Recall@k overall and per modality",
                _recall_columns(ks),
                tuple(Row(_recall_cells(_scope_cell(n), s, ks)) for n, s in scopes),
            ),
            (_recall_curves(scopes, ks), _recall_bars(scopes, ks)),
        )
    ]
    filtered = mapping(recall.get("filtered"))
    if filtered:
        condition = json.dumps(filtered.get("filter"), ensure_ascii=False, sort_keys=True)
        scope = mapping(filtered.get("overall"))
        table = Table(
            "Recall@k with a metadata filter",
            ("filter", *_recall_columns(ks)[1:]),
            (Row(_recall_cells(key(condition), scope, ks)),),
        )
        figures.append(Figure(table))
    return Section("index-recall", "Index recall", tuple(notes), tuple(figures))


def _scope_cell(name: str) -> Cell:
    return text(name) if name == "overall" else key(name)


def _recall_columns(ks: tuple[int, ...]) -> tuple[str, ...]:
    return (
        "scope",
        "queries",
        *(f"recall@{k}" for k in ks),
        *(f"tie-aware@{k}" for k in ks),
        *(f"short@{k}" for k in ks),
    )


def _recall_cells(first: Cell, scope: Mapping[str, Any], ks: tuple[int, ...]) -> tuple[Cell, ...]:
    return (
        first,
        count(scope.get("queries")),
        *(fraction(at_k(scope.get("recall"), k)) for k in ks),
        *(fraction(at_k(scope.get("tie_aware_recall"), k)) for k in ks),
        *(count(at_k(scope.get("short_results"), k)) for k in ks),
    )


def _recall_curves(scopes: list[tuple[str, Mapping[str, Any]]], ks: tuple[int, ...]) -> LineChart:
    series: list[Series] = []
    for color, (name, scope) in enumerate(scopes):
        for field, dashed, suffix in (
            ("recall", False, ""),
            ("tie_aware_recall", True, " tie-aware"),
        ):
            values = tuple(at_k(scope.get(field), k) for k in ks)
            series.append(Series(f"{name}{suffix}", values, color, dashed))
    return LineChart(
        "plot-recall-curves",
        "Recall@k (dashed: tie-aware)",
        "k (log scale)",
        "recall",
        tuple(math.log10(k) if k > 0 else 0.0 for k in ks),
        tuple(str(k) for k in ks),
        tuple(series),
        (0.0, 1.0),
    )


def _recall_bars(scopes: list[tuple[str, Mapping[str, Any]]], ks: tuple[int, ...]) -> BarChart:
    return BarChart(
        "plot-recall-by-modality",
        "Recall@k per modality",
        "recall",
        tuple(name for name, _ in scopes),
        tuple(
            Series(f"recall@{k}", tuple(at_k(s.get("recall"), k) for _, s in scopes), color)
            for color, k in enumerate(ks)
        ),
        (0.0, 1.0),
    )


def _latency_section(latency: Mapping[str, Any]) -> Section:
    samples = tuple(v for v in map(number, latency.get("samples") or ()) if v is not None)
    percentiles = [(p, number(latency.get(p))) for p in ("p50", "p95", "p99")]
    if not samples and all(v is None for _, v in percentiles):
        return Section(
            "latency", "Query latency", notes=((text("This report has no query latencies."),),)
        )
    rows = [Row((text(p), milliseconds(v))) for p, v in percentiles]
    if samples:
        rows += [
            Row((text("mean"), milliseconds(statistics.fmean(samples)))),
            Row((text("min"), milliseconds(min(samples)))),
            Row((text("max"), milliseconds(max(samples)))),
        ]
    rows.append(Row((text("samples"), count(len(samples)))))
    plots: tuple[Plot, ...] = ()
    if samples:
        markers = tuple(
            Marker(p, v, color)
            for color, (p, v) in zip((2, 1, 3), percentiles, strict=True)
            if v is not None
        )
        plots = (Histogram("plot-latency", "Query latency", "ms", samples, markers),)
    table = Table("Query latency (ms)", ("statistic", "ms"), tuple(rows))
    note = (text("Time of each query against the index during the recall evaluation."),)
    return Section("latency", "Query latency", (note,), (Figure(table, plots),))


def _worst_queries_section(recall: Mapping[str, Any]) -> Section:
    worst = items(recall.get("worst_queries"))
    if not worst:
        return Section(
            "worst-queries",
            "Worst queries",
            notes=((text("This report lists no worst queries."),),),
        )
    rows: list[Row] = []
    for query in worst:
        first: tuple[Cell, ...] = (
            key(query.get("query_key", "")),
            key(query.get("modality", "")),
            text(_per_k(query.get("recall"))),
        )
        missed = items(query.get("missed"))
        if not missed:
            rows.append(Row((*first, text("none listed"), *(Cell("", "number"),) * 3)))
        for position, neighbour in enumerate(missed):
            rows.append(
                Row(
                    (
                        *(first if position == 0 else (text(""),) * 3),
                        key(neighbour.get("key", "")),
                        count(neighbour.get("exact_rank")),
                        significant(neighbour.get("exact_distance")),
                        significant(neighbour.get("distance_gap")),
                    )
                )
            )
    columns = ("query", "modality", "recall", "missed neighbour", "exact rank", "distance", "gap")
    note = (
        text(
            "The queries with the lowest recall, each with the exact nearest neighbours the index "
            "did not return: the neighbour's rank and distance in the exact search, and its "
            "distance gap as the evaluation reported it (a small gap means a near-tie)."
        ),
    )
    table = Table("Worst queries and their missed neighbours", columns, tuple(rows))
    return Section("worst-queries", "Worst queries", (note,), (Figure(table),))


def _per_k(values: object) -> str:
    """``@10 0.800, @100 0.900`` for a per-k object."""
    found = mapping(values)
    ks = ks_of({}, found)
    return ", ".join(f"@{k} {fraction(at_k(found, k)).text}" for k in ks) or MISSING


def _whole(value: object) -> str:
    found = number(value)
    return MISSING if found is None else f"{found:.0f}"
