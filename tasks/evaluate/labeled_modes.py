"""The labeled queries in each retrieval mode, scored side by side.

The modes (``tasks.vector_store.RETRIEVAL_MODES``):

- ``vector``: the query's embedding, its nearest neighbours in the index;
- ``text``: the query's text alone, BM25 over the index's searchable text;
- ``hybrid``: both in one request, the two rankings fused by the service (RRF).

Vector mode runs every labeled query. Text and hybrid run only when the index's searchable text
is ACTIVE, and then only the queries that have text: a file query (an image, a recording, a
clip) has nothing to match words with and runs in vector mode only. A mode that did not run is
named with why, so the report never drops it silently.

Since text and hybrid may run fewer queries than vector, each mode's means are over the queries
it ran, and ``common`` gives every mode's means over the queries all of them ran: the fair
comparison. No AWS here: the index is reached through an injected ``ModeSearch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.evaluate.labeled_metrics import (
    LabeledReport,
    evaluate_labeled,
    trec_qrels_text,
    trec_run_text,
)
from tasks.evaluate.qrels import LabeledQuery
from tasks.vector_store import RETRIEVAL_MODES, RetrievalMode

ModeSearch = Callable[[RetrievalMode, np.ndarray | None, str | None, int], Sequence[str]]
"""``(mode, vector, text, top_k) -> keys``: the index's ranking of unit keys, best first, for one
query in ``mode``; ``vector`` is None in text mode and ``text`` None in vector mode."""

TEXT_MODES: tuple[RetrievalMode, ...] = tuple(mode for mode in RETRIEVAL_MODES if mode != "vector")
FILE_QUERIES_SKIPPED = "file queries (image, audio, video) have no text: vector mode only"
NO_TEXT_QUERIES = "no labeled query has text (file queries run in vector mode only)"


class ModeRefusedError(Exception):
    """The index refused a query in a text mode (say, its searchable text went back to
    BUILDING): that mode is reported as not run, with this message, and the others go on."""


def text_modes_unavailable(status: str | None, searchable_text: bool) -> str | None:
    """Why text and hybrid cannot run on an index whose searchable-text configuration has
    ``status`` (None: it has none), or None when they can (``ACTIVE``). ``searchable_text`` is
    the setting, which only changes what the message suggests."""
    if status == "ACTIVE":
        return None
    if status is None:
        if searchable_text:
            return "searchable text is off for this index (the next run turns it on)"
        return "searchable text is off for this index"
    return f"the index's searchable text is {status}, not yet answering text queries"


@dataclass(frozen=True)
class ModeReports:
    """What each mode scored: ``reports`` of the modes that ran, vector first; ``unavailable``
    the ``(mode, why)`` of each that did not; ``skipped`` the ``(mode, queries)`` each text mode
    left out because they had no text."""

    reports: tuple[LabeledReport, ...]
    unavailable: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, int], ...]

    def report(self, mode: str) -> LabeledReport | None:
        """The report of ``mode``, or None when it did not run."""
        return next((report for report in self.reports if report.mode == mode), None)

    def common_query_ids(self) -> tuple[str, ...]:
        """The queries every mode that ran scored, in the vector mode's order."""
        if not self.reports:
            return ()
        shared = set.intersection(*({r.query_id for r in rep.per_query} for rep in self.reports))
        return tuple(r.query_id for r in self.reports[0].per_query if r.query_id in shared)

    def to_json(self) -> dict[str, Any]:
        """``modes``: per mode that ran, ``{"queries", "queries_without_relevant", "overall",
        "by_query_type"}`` and, when it left file queries out, ``"skipped": {"queries",
        "reason"}``; ``modes_unavailable``: mode → why it did not run; ``common``: with two or
        more modes, ``{"queries": n, "overall": {mode: means over the queries all of them
        ran}}``, else None."""
        skipped = dict(self.skipped)
        modes: dict[str, Any] = {}
        for report in self.reports:
            entry: dict[str, Any] = {
                "queries": report.queries,
                "queries_without_relevant": report.queries_without_relevant,
                "overall": report.overall(),
                "by_query_type": report.by_query_type(),
            }
            if skipped.get(report.mode):
                entry["skipped"] = {
                    "queries": skipped[report.mode],
                    "reason": FILE_QUERIES_SKIPPED,
                }
            modes[report.mode] = entry
        common = None
        if len(self.reports) > 1:
            ids = self.common_query_ids()
            common = {
                "queries": len(ids),
                "overall": {r.mode: r.for_queries(set(ids)).overall() for r in self.reports},
            }
        return {"modes": modes, "modes_unavailable": dict(self.unavailable), "common": common}


def labeled_modes(
    queries: Sequence[LabeledQuery],
    vectors: Sequence[np.ndarray],
    search: ModeSearch,
    *,
    depth: int,
    ks: Sequence[int],
    text_unavailable: str | None,
) -> ModeReports:
    """Every query of ``queries`` (whose embeddings are ``vectors``, in the same order) asked
    ``depth`` deep in vector mode, then each query with text in text and in hybrid mode, unless
    ``text_unavailable`` says why those cannot run; each mode scored at ``ks``."""
    if len(queries) != len(vectors):
        raise ValueError(f"{len(queries)} queries but {len(vectors)} vectors")
    rankings = {
        query.query_id: list(search("vector", vector, None, depth))
        for query, vector in zip(queries, vectors, strict=True)
    }
    reports = [evaluate_labeled(queries, rankings, ks=ks, mode="vector")]
    with_text = [(q, v) for q, v in zip(queries, vectors, strict=True) if q.text is not None]
    reason = text_unavailable or (None if with_text else NO_TEXT_QUERIES)
    unavailable: list[tuple[str, str]] = []
    for mode in TEXT_MODES:
        if reason is not None:
            unavailable.append((mode, reason))
            continue
        try:
            rankings = {
                query.query_id: list(
                    search(mode, vector if mode == "hybrid" else None, query.text, depth)
                )
                for query, vector in with_text
            }
        except ModeRefusedError as err:
            unavailable.append((mode, str(err)))
            continue
        text_queries = [query for query, _ in with_text]
        reports.append(evaluate_labeled(text_queries, rankings, ks=ks, mode=mode))
    skipped = tuple(
        (report.mode, len(queries) - report.queries)
        for report in reports
        if report.mode != "vector"
    )
    return ModeReports(tuple(reports), tuple(unavailable), skipped)


def trec_file_names(mode: str) -> tuple[str, str]:
    """The TREC run and qrels file names of ``mode``: ``labeled.run`` and ``labeled.qrels``
    for vector (as before modes existed), ``labeled.<mode>.run`` and ``.qrels`` otherwise."""
    if mode == "vector":
        return "labeled.run", "labeled.qrels"
    return f"labeled.{mode}.run", f"labeled.{mode}.qrels"


def trec_files(modes: ModeReports, queries: Sequence[LabeledQuery]) -> dict[str, str]:
    """Each mode's TREC run (run name = the mode) and the qrels of the queries it ran, by file
    name: trec_eval, ranx or ir-measures on one pair recompute that mode's figures."""
    by_id = {query.query_id: query for query in queries}
    files: dict[str, str] = {}
    for report in modes.reports:
        run_name, qrels_name = trec_file_names(report.mode)
        files[run_name] = trec_run_text(report)
        files[qrels_name] = trec_qrels_text([by_id[r.query_id] for r in report.per_query])
    return files


def trec_names_json(modes: ModeReports) -> dict[str, dict[str, str]]:
    """``{mode: {"run": file, "qrels": file}}`` for each mode that ran."""
    return {
        report.mode: dict(zip(("run", "qrels"), trec_file_names(report.mode), strict=True))
        for report in modes.reports
    }
