"""The evaluation report of a run: one versioned JSON document, with the Markdown, HTML and TREC
files made from it, in ``<store>/reports/<run_id>/``.

``report.json`` (``schema_version`` 1) holds everything a machine needs: the index measured,
``index_recall``, ``labeled``, ``dimensions``, the ``headline`` figures, the ``gates`` and the
``trend`` of earlier reports' headlines in the same store. A gate compares one headline figure
with the lowest value the user accepts; a figure that was not measured fails its gate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from tasks.report.evaluation.html import evaluation_html
from tasks.report.evaluation.markdown import evaluation_markdown
from tasks.settings import EvaluationSettings
from tasks.store import CheckpointStore

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "report.md", "report.html", "labeled.run", "labeled.qrels")
_MIN_RECALL_K = 10


@dataclass(frozen=True)
class Gate:
    """One threshold: ``metric`` (a headline key) must be at least ``threshold``."""

    metric: str
    threshold: float
    value: float | None

    @property
    def passed(self) -> bool:
        """Whether the figure was measured and is at or above the threshold."""
        return self.value is not None and self.value >= self.threshold

    def to_json(self) -> dict[str, Any]:
        """The gate as ``report.json`` holds it."""
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "value": self.value,
            "passed": self.passed,
        }

    def failure(self) -> str:
        """Why the gate failed, naming the metric, its value and the threshold."""
        if self.value is None:
            return f"{self.metric} was not measured (gate: at least {self.threshold:g})"
        return f"{self.metric} = {self.value:.4f}, below its gate of {self.threshold:g}"


def headline(report: Mapping[str, Any]) -> dict[str, float]:
    """The figures a dashboard or a gate reads: index recall and tie-aware recall at each k,
    the labeled metrics of the vector mode at each cutoff, and the query latency's p95."""
    figures: dict[str, float] = {}
    recall = report.get("index_recall") or {}
    overall = recall.get("overall") or {}
    for k, value in (overall.get("recall") or {}).items():
        if value is not None:
            figures[f"index_recall@{k}"] = float(value)
    for k, value in (overall.get("tie_aware_recall") or {}).items():
        if value is not None:
            figures[f"tie_aware_recall@{k}"] = float(value)
    latency = recall.get("latency_ms") or {}
    if latency.get("p95") is not None:
        figures["query_latency_p95_ms"] = float(latency["p95"])
    labeled = report.get("labeled") or {}
    vector_mode = (labeled.get("modes") or {}).get("vector") or {}
    if labeled.get("queries"):
        for name, value in (vector_mode.get("overall") or {}).items():
            figures[f"labeled_{name}"] = float(value)
    return figures


def gates(figures: Mapping[str, float], settings: EvaluationSettings) -> list[Gate]:
    """The gates the settings ask for, judged on ``figures``: ``min_recall`` on
    ``index_recall@10`` (or the largest k below 10 measured), then every entry of ``gates``."""
    wanted: dict[str, float] = {}
    if settings.min_recall is not None:
        ks = sorted(k for k in settings.ks if k <= _MIN_RECALL_K) or sorted(settings.ks)
        wanted[f"index_recall@{ks[-1]}"] = settings.min_recall
    wanted.update(settings.gates)
    return [
        Gate(metric, float(threshold), figures.get(metric)) for metric, threshold in wanted.items()
    ]


def previous_headlines(store: CheckpointStore, run_id: str) -> list[dict[str, Any]]:
    """The headline of each earlier report in the store, oldest first: the trend."""
    selector = pafs.FileSelector(store.reports_root(), allow_not_found=True)
    trend = []
    for info in store.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.Directory or info.base_name == run_id:
            continue
        path = store.report_path(info.base_name, "report.json")
        if not store.exists(path):
            continue
        try:
            earlier = json.loads(store.read_text(path))
        except (OSError, ValueError):
            continue  # a damaged report is left out of the trend, not fatal
        if isinstance(earlier, dict) and isinstance(earlier.get("headline"), dict):
            trend.append(
                {
                    "run_id": earlier.get("run_id", info.base_name),
                    "created_at": earlier.get("created_at", ""),
                    "headline": earlier["headline"],
                }
            )
    trend.sort(key=lambda entry: (str(entry["created_at"]), str(entry["run_id"])))
    return trend


def newest_report_run(store: CheckpointStore) -> str | None:
    """The run id of the newest report in the store (by its ``created_at``), or None."""
    selector = pafs.FileSelector(store.reports_root(), allow_not_found=True)
    newest: tuple[str, str] | None = None
    for info in store.filesystem.get_file_info(selector):
        path = store.report_path(info.base_name, "report.json")
        if info.type != pafs.FileType.Directory or not store.exists(path):
            continue
        try:
            created = str(json.loads(store.read_text(path)).get("created_at", ""))
        except (OSError, ValueError):
            continue
        if newest is None or (created, info.base_name) > newest:
            newest = (created, info.base_name)
    return newest[1] if newest else None


def evaluation_report(
    run_id: str,
    store: CheckpointStore,
    settings: EvaluationSettings,
    index_part: Mapping[str, Any] | None,
    labeled_part: Mapping[str, Any] | None,
    dimension_labeled: Mapping[int, Mapping[str, float]] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The whole ``report.json`` document of ``run_id`` from the stage's sections."""
    index_part = index_part or {}
    dimensions = index_part.get("dimensions")
    if dimensions and dimension_labeled:
        dimensions = {
            **dimensions,
            "rows": [
                {**row, "labeled": dict(dimension_labeled.get(row["dimension"], {})) or None}
                for row in dimensions["rows"]
            ],
        }
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "store": store.root,
        "index": index_part.get("index"),
        "index_recall": index_part.get("index_recall"),
        "labeled": dict(labeled_part) if labeled_part else None,
        "dimensions": dimensions,
    }
    report["headline"] = headline(report)
    report["gates"] = [gate.to_json() for gate in gates(report["headline"], settings)]
    report["trend"] = previous_headlines(store, run_id)
    return report


def failed_gates(report: Mapping[str, Any]) -> list[str]:
    """Why each failed gate of ``report`` failed; empty when all passed."""
    return [
        Gate(gate["metric"], gate["threshold"], gate["value"]).failure()
        for gate in report.get("gates", [])
        if not gate["passed"]
    ]


def write_report(
    store: CheckpointStore,
    report: Mapping[str, Any],
    trec_run: str | None = None,
    trec_qrels: str | None = None,
    trec_files: Mapping[str, str] | None = None,
) -> str:
    """Write ``report.json``, ``report.md``, ``report.html`` (and, when there were labeled
    queries, the TREC files: the vector mode's ``trec_run`` and ``trec_qrels`` as
    ``labeled.run`` and ``labeled.qrels``, and every file of ``trec_files``, by name: each
    mode's run and qrels) atomically; returns the HTML's path (a URI on S3)."""
    run_id = str(report["run_id"])
    store.write_text(store.report_path(run_id, "report.json"), json.dumps(report, indent=2))
    store.write_text(store.report_path(run_id, "report.md"), evaluation_markdown(report))
    html_path = store.report_path(run_id, "report.html")
    store.write_text(html_path, evaluation_html(report))
    files = dict(trec_files or {})
    if trec_run is not None and trec_qrels is not None:
        files |= {"labeled.run": trec_run, "labeled.qrels": trec_qrels}
    for name, content in files.items():
        store.write_text(store.report_path(run_id, name), content)
    return store.uri(html_path)


def report_lines(report: Mapping[str, Any], html_path: str) -> list[str]:
    """The headline figures for the terminal, and where the report is."""
    figures = report.get("headline") or {}
    lines = [f"evaluation {report['run_id']}"]
    recall = [
        f"@{name.split('@')[1]} {value:.3f}"
        for name, value in figures.items()
        if name.startswith("index_recall@")
    ]
    if recall:
        queries = (report.get("index_recall") or {}).get("queries", 0)
        lines.append(f"  recall   {', '.join(recall)} over {queries} sampled queries")
    ties = [
        f"@{name.split('@')[1]} {value:.3f}"
        for name, value in figures.items()
        if name.startswith("tie_aware_recall@")
    ]
    if ties:
        lines.append(f"  ties     {', '.join(ties)} (tie-aware)")
    if "query_latency_p95_ms" in figures:
        latency = (report.get("index_recall") or {}).get("latency_ms") or {}
        lines.append(
            f"  latency  p50 {latency.get('p50', 0):.1f} ms, p95 {latency.get('p95', 0):.1f} ms, "
            f"p99 {latency.get('p99', 0):.1f} ms"
        )
    labeled = report.get("labeled") or {}
    if labeled:
        shown = [
            f"{name.removeprefix('labeled_')} {value:.3f}"
            for name, value in figures.items()
            if name.startswith("labeled_") and name.endswith(f"@{max(labeled.get('ks') or [10])}")
        ]
        errors = len(labeled.get("errors") or [])
        lines.append(
            f"  labeled  {labeled.get('queries', 0)} queries: {', '.join(shown) or 'none scored'}"
            + (f"; {errors} bad row(s)" if errors else "")
        )
        lines += mode_lines(labeled)
    for gate in report.get("gates") or []:
        verdict = "passed" if gate["passed"] else "FAILED"
        value = "not measured" if gate["value"] is None else f"{gate['value']:.4f}"
        lines.append(f"  gate     {gate['metric']} {value} ≥ {gate['threshold']:g}: {verdict}")
    lines.append(f"  report   {html_path}")
    return lines


def mode_lines(labeled: Mapping[str, Any]) -> list[str]:
    """One line per retrieval mode, when the report has any but vector: its recall, MRR and
    nDCG at the largest cutoff (over the queries every mode ran, when several ran), or why it
    did not run."""
    modes = labeled.get("modes") or {}
    unavailable = labeled.get("modes_unavailable") or {}
    if set(modes) <= {"vector"} and not unavailable:
        return []
    k = max(labeled.get("ks") or [10])
    common = labeled.get("common") or {}
    lines = []
    for mode, entry in modes.items():
        metrics = (common.get("overall") or {}).get(mode) or entry.get("overall") or {}
        queries = common.get("queries") if common else entry.get("queries")
        shown = [
            f"{name}@{k} {metrics[f'{name}@{k}']:.3f}"
            for name in ("recall", "mrr", "ndcg")
            if f"{name}@{k}" in metrics
        ]
        scope = "queries every mode ran" if common else "queries"
        lines.append(f"  {mode:<8} {', '.join(shown) or 'none scored'} ({queries or 0} {scope})")
    for mode, reason in unavailable.items():
        lines.append(f"  {mode:<8} not run: {reason}")
    return lines
