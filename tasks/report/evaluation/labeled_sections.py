"""The report's labeled-queries section: each retrieval mode's recall, MRR, nDCG and precision
side by side, a table per cutoff (overall, over the queries every mode ran, and per query type),
with grouped bar plots of the same numbers, and why any mode did not run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.report.evaluation.plots import BarChart, Series
from tasks.report.evaluation.tables import (
    MISSING,
    Cell,
    Figure,
    Note,
    Row,
    Section,
    Table,
    clean,
    count,
    fraction,
    items,
    key,
    mapping,
    metric_order,
    number,
    reference_k,
    text,
)

LABELED_MEANING = (
    "Labeled queries are judged against the qrels: recall@k is the share of a query's relevant "
    "documents in its top k, precision@k the share of the top k that is relevant, MRR@k the mean "
    "reciprocal rank of the first relevant result, nDCG@k the ranking quality with graded "
    "relevance (1 is ideal)."
)
MODES_MEANING = (
    "Retrieval modes: vector asks with the query's embedding, text with its words alone (BM25 "
    "over the index's searchable text), hybrid with both, fused by reciprocal rank (RRF). Text "
    "and hybrid run only the queries that have text; compare modes on the queries every mode "
    "ran, or per query type."
)
ALL_QUERIES = "all queries"
_FAMILIES = ("recall", "mrr", "ndcg", "precision")
COMMON_QUERIES = "queries every mode ran"


def labeled_section(labeled: Mapping[str, Any]) -> Section:
    """The section, or a one-line note when the report has no labeled evaluation."""
    if not labeled:
        note = (text("This report has no labeled-query evaluation (no qrels were given)."),)
        return Section("labeled", "Labeled queries", notes=(note,))
    modes = {clean(name): mapping(mode) for name, mode in mapping(labeled.get("modes")).items()}
    unavailable = {
        clean(name): clean(reason)
        for name, reason in mapping(labeled.get("modes_unavailable")).items()
    }
    notes: list[Note] = [
        (
            text("Qrels: "),
            key(labeled.get("qrels", MISSING)),
            text(
                f" — {count(labeled.get('queries')).text} queries, "
                f"{count(labeled.get('queries_without_relevant')).text} without any relevant "
                "document."
            ),
        ),
        (text(LABELED_MEANING),),
    ]
    if len(modes) > 1 or unavailable:
        notes.append((text(MODES_MEANING),))
    notes += _unavailable_notes(unavailable)
    notes += _trec_notes(labeled, modes)
    figures: list[Figure] = []
    if modes:
        figures += _mode_tables(labeled, modes)
    errors = items(labeled.get("errors"))
    if errors:
        rows = tuple(
            Row((count(e.get("row")), key(e.get("query_id", "")), text(e.get("message", ""))))
            for e in errors
        )
        table = Table("Qrels rows that could not be used", ("row", "query", "error"), rows)
        figures.append(Figure(table))
    return Section("labeled", "Labeled queries", tuple(notes), tuple(figures))


def _unavailable_notes(unavailable: Mapping[str, str]) -> list[Note]:
    """One note per reason, naming the modes it kept from running."""
    by_reason: dict[str, list[str]] = {}
    for mode, reason in unavailable.items():
        by_reason.setdefault(reason, []).append(mode)
    notes: list[Note] = []
    for reason, names in by_reason.items():
        cells: list[Cell] = [text("Not run: ")]
        for position, name in enumerate(names):
            cells += [text(" and " if position else ""), key(name)]
        notes.append((*cells, text(f" — {reason}.")))
    return notes


def _trec_notes(labeled: Mapping[str, Any], modes: Mapping[str, Any]) -> list[Note]:
    """Where the TREC files are: each mode's run and qrels, or the single pair of a report
    written before modes had files of their own."""
    files = {
        clean(mode): mapping(pair) for mode, pair in mapping(labeled.get("trec_files")).items()
    }
    if not files and (labeled.get("trec_run") or labeled.get("trec_qrels")):
        pair = {
            "run": labeled.get("trec_run", MISSING),
            "qrels": labeled.get("trec_qrels", MISSING),
        }
        files = {next(iter(modes), "vector"): pair}
    if not files:
        return []
    cells: list[Cell] = [text("TREC files for trec_eval: ")]
    for position, (mode, pair) in enumerate(files.items()):
        cells += [text("; " if position else ""), text(f"{mode}: run "), key(pair.get("run"))]
        cells += [text(", qrels "), key(pair.get("qrels"))]
    return [(*cells, text("."))]


def _mode_tables(
    labeled: Mapping[str, Any], modes: Mapping[str, Mapping[str, Any]]
) -> list[Figure]:
    """A table per cutoff: each mode over all its queries, over the queries every mode ran (with
    several modes), and per query type. The plots go beside the reference cutoff's table."""
    overall = {mode: mapping(entry.get("overall")) for mode, entry in modes.items()}
    per_type = _per_type(modes)
    names = metric_order(
        [str(n) for metrics in overall.values() for n in metrics]
        + [str(n) for by_mode in per_type.values() for e in by_mode.values() for n in _metrics(e)]
    )
    ks = sorted({int(k) for n in names if (k := n.partition("@")[2]).isdigit()})
    found = {n.partition("@")[0] for n in names}
    # The order the modes are compared in: recall, MRR, nDCG, then the rest.
    families = tuple(
        sorted(found, key=lambda f: (_FAMILIES.index(f) if f in _FAMILIES else len(_FAMILIES), f))
    )
    common = mapping(labeled.get("common"))
    common_overall = {clean(m): mapping(v) for m, v in mapping(common.get("overall")).items()}
    reference = reference_k(names)
    figures = []
    for k in ks:
        shown = tuple(f"{family}@{k}" for family in families if f"{family}@{k}" in names)
        rows: list[Row] = [
            _row(text(ALL_QUERIES), mode, entry.get("queries"), overall[mode], shown)
            for mode, entry in modes.items()
        ]
        if common_overall:
            rows += [
                _row(text(COMMON_QUERIES), mode, common.get("queries"), metrics, shown)
                for mode, metrics in common_overall.items()
            ]
        rows += [
            _row(key(query_type), mode, entry.get("queries"), _metrics(entry), shown)
            for query_type, by_mode in per_type.items()
            for mode, entry in by_mode.items()
        ]
        table = Table(
            f"Labeled metrics @{k} per mode", ("scope", "mode", "queries", *shown), tuple(rows)
        )
        plots = ()
        if k == reference:
            plots = (
                _overall_plot(common_overall or overall, families, names, k, bool(common_overall)),
                _query_type_plot(per_type, tuple(modes), names, k),
            )
        figures.append(Figure(table, plots))
    return figures


def _row(
    scope: Cell, mode: str, queries: object, metrics: Mapping[str, Any], shown: Sequence[str]
) -> Row:
    return Row((scope, key(mode), count(queries), *(fraction(metrics.get(n)) for n in shown)))


def _per_type(modes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Query type → mode → ``{"queries", "metrics"}``, query types in order of appearance."""
    per_type: dict[str, dict[str, Mapping[str, Any]]] = {}
    for mode, found in modes.items():
        for query_type, entry in mapping(found.get("by_query_type")).items():
            per_type.setdefault(clean(query_type), {})[mode] = mapping(entry)
    return per_type


def _metrics(entry: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return mapping(mapping(entry).get("metrics"))


def _value(entry: Mapping[str, Any] | None, name: str) -> float | None:
    return number(_metrics(entry).get(name))


def _overall_plot(
    overall: Mapping[str, Mapping[str, Any]],
    families: tuple[str, ...],
    names: Sequence[str],
    k: int,
    common: bool,
) -> BarChart:
    """With several modes: metric families grouped, one bar per mode, at ``k``. With one: one
    bar per cutoff."""
    if len(overall) > 1:
        series = tuple(
            Series(mode, tuple(number(metrics.get(f"{f}@{k}")) for f in families), color)
            for color, (mode, metrics) in enumerate(overall.items())
        )
        title = f"Labeled metrics @{k} per mode" + (f", {COMMON_QUERIES}" if common else "")
    else:
        (metrics,) = overall.values()
        ks = sorted({int(n.partition("@")[2]) for n in names if n.partition("@")[2].isdigit()})
        series = tuple(
            Series(f"@{at}", tuple(number(metrics.get(f"{f}@{at}")) for f in families), color)
            for color, at in enumerate(ks)
        )
        title = "Labeled metrics"
    return BarChart("plot-labeled-overall", title, "score", families, series, (0.0, 1.0))


def _query_type_plot(
    per_type: Mapping[str, Mapping[str, Mapping[str, Any]]],
    modes: tuple[str, ...],
    names: Sequence[str],
    k: int,
) -> BarChart:
    """Query types grouped: with several modes, one bar per mode (nDCG@k); with one, one bar
    per metric at ``k``."""
    types = tuple(per_type)
    if len(modes) > 1:
        metric = f"ndcg@{k}" if f"ndcg@{k}" in names else (names[0] if names else "")
        series = tuple(
            Series(mode, tuple(_value(per_type[t].get(mode), metric) for t in types), color)
            for color, mode in enumerate(modes)
        )
        title = f"{metric} per query type and mode"
    else:
        (mode,) = modes
        shown = [n for n in names if n.endswith(f"@{k}")]
        series = tuple(
            Series(n, tuple(_value(per_type[t].get(mode), n) for t in types), color)
            for color, n in enumerate(shown)
        )
        title = f"Labeled metrics @{k} per query type"
    return BarChart("plot-labeled-query-types", title, "score", types, series, (0.0, 1.0))
