"""Sample ``report.json`` dicts for the evaluation report's tests: a full one whose user strings
are hostile markup, and a minimal one with index recall only."""

from __future__ import annotations

import random
from typing import Any

HOSTILE = "<script>alert(1)</script>"
# An attribute break-out: harmless only if quotes and angle brackets are escaped.
HOSTILE_ATTRIBUTE = '"><img src=x onerror=alert(2)>'

FULL_PLOTS = (
    "plot-recall-curves",
    "plot-recall-by-modality",
    "plot-latency",
    "plot-labeled-overall",
    "plot-labeled-query-types",
    "plot-dimensions",
    "plot-trend",
    "plot-trend-latency",
)
MINIMAL_PLOTS = (
    "plot-recall-curves",
    "plot-recall-by-modality",
    "plot-latency",
    "plot-trend",
    "plot-trend-latency",
)


def _scope(queries: int, recall: tuple[float, float, float], short: int = 0) -> dict[str, Any]:
    tie_aware = tuple(min(1.0, r + 0.01) for r in recall)
    return {
        "queries": queries,
        "recall": dict(zip(("1", "10", "100"), recall, strict=True)),
        "tie_aware_recall": dict(zip(("1", "10", "100"), tie_aware, strict=True)),
        "short_results": {"1": 0, "10": 0, "100": short},
    }


def _latencies(count: int) -> list[float]:
    draw = random.Random(7)
    return [round(draw.lognormvariate(0.3, 0.45), 3) for _ in range(count)]


def _labeled_metrics(base: float) -> dict[str, float]:
    metrics = {}
    for k, step in ((1, 0.0), (5, 0.05), (10, 0.08)):
        metrics[f"recall@{k}"] = round(min(base + step, 1.0), 3)
        metrics[f"precision@{k}"] = round(base / (1 + k / 4), 3)
        metrics[f"mrr@{k}"] = round(min(base + step / 2, 1.0), 3)
        metrics[f"ndcg@{k}"] = round(min(base + step / 3, 1.0), 3)
    return metrics


def _mode(base: float, *, with_files: bool = True) -> dict[str, Any]:
    """One mode's entry; the text modes (``with_files=False``) ran no image query."""
    by_query_type = {
        "text→text": {"queries": 5, "metrics": _labeled_metrics(base + 0.05)},
        "image→image": {"queries": 4, "metrics": _labeled_metrics(base - 0.1)},
        "text→image": {"queries": 2, "metrics": _labeled_metrics(base - 0.2)},
        HOSTILE: {"queries": 1, "metrics": _labeled_metrics(base - 0.3)},
    }
    if not with_files:
        del by_query_type["image→image"]
    queries = sum(entry["queries"] for entry in by_query_type.values())
    entry: dict[str, Any] = {
        "queries": queries,
        "queries_without_relevant": 1,
        "overall": _labeled_metrics(base),
        "by_query_type": by_query_type,
    }
    if not with_files:
        entry["skipped"] = {"queries": 12 - queries, "reason": "file queries have no text"}
    return entry


def minimal_report() -> dict[str, Any]:
    """Index recall only: no labeled queries, no dimensions, no trend, no gates."""
    samples = _latencies(40)
    return {
        "schema_version": 1,
        "run_id": "20261206t120000z-ab12",
        "created_at": "2026-12-06T12:00:00+00:00",
        "store": ".novaflow/store",
        "index": {
            "vector_bucket": "novaflow",
            "index": "corpus",
            "dimension": 1024,
            "metric": "cosine",
            "mode": "CLASSIC",
            "vectors": 39,
        },
        "index_recall": {
            "queries": 39,
            "ks": [1, 10, 100],
            "tie_tolerance": 1e-5,
            "overall": _scope(39, (1.0, 0.97, 0.95), short=39),
            "by_modality": {
                "text": _scope(20, (1.0, 0.99, 0.96), short=20),
                "image": _scope(19, (1.0, 0.95, 0.94), short=19),
            },
            "latency_ms": {"p50": 1.4, "p95": 3.1, "p99": 3.9, "samples": samples},
            "worst_queries": [],
            "filtered": None,
        },
        "labeled": None,
        "dimensions": None,
        "gates": [],
        "headline": {
            "index_recall@10": 0.97,
            "tie_aware_recall@10": 0.98,
            "query_latency_p95_ms": 3.1,
        },
        "trend": [],
    }


def full_report() -> dict[str, Any]:
    """Every section filled in, three labeled modes, a failed gate, five earlier reports, and
    hostile markup in keys, modality and query-type names, error messages and ids."""
    report = minimal_report()
    report["store"] = f"s3://bucket/{HOSTILE}"
    report["index_recall"] = {
        "queries": 200,
        "ks": [1, 10, 100],
        "tie_tolerance": 1e-5,
        "overall": _scope(200, (1.0, 0.98, 0.95), short=3),
        "by_modality": {
            "text": _scope(120, (1.0, 0.99, 0.97)),
            "image": _scope(50, (1.0, 0.97, 0.93), short=1),
            "pdf": _scope(29, (0.97, 0.95, 0.9), short=2),
            HOSTILE: _scope(1, (1.0, 0.8, 0.7)),
        },
        "latency_ms": {"p50": 1.2, "p95": 3.4, "p99": 5.6, "samples": _latencies(200)},
        "worst_queries": [
            {
                "query_key": HOSTILE,
                "modality": "text",
                "recall": {"10": 0.8},
                "missed": [
                    {
                        "key": HOSTILE_ATTRIBUTE,
                        "exact_rank": 3,
                        "exact_distance": 0.12,
                        "distance_gap": 0.01,
                    },
                    {
                        "key": "text/b|c`d",
                        "exact_rank": 7,
                        "exact_distance": 0.2,
                        "distance_gap": 0,
                    },
                ],
            },
            {"query_key": "pdf/report.pdf#page=2", "modality": "pdf", "recall": {"10": 0.9}},
        ],
        "filtered": {"filter": {"modality": HOSTILE}, "overall": _scope(29, (1.0, 0.96, 0.91))},
    }
    report["labeled"] = {
        "qrels": "corpus/qrels.jsonl",
        "queries": 12,
        "ks": [1, 5, 10],
        "queries_without_relevant": 1,
        "errors": [
            {"row": 4, "query_id": "q4", "message": "file images/x.png does not exist"},
            {"row": 9, "query_id": HOSTILE_ATTRIBUTE, "message": f"bad JSON near {HOSTILE}"},
        ],
        "modes": {
            "vector": _mode(0.8),
            "text": _mode(0.6, with_files=False),
            "hybrid": _mode(0.85, with_files=False),
        },
        "modes_unavailable": {},
        "common": {
            "queries": 8,
            "overall": {
                "vector": _labeled_metrics(0.82),
                "text": _labeled_metrics(0.61),
                "hybrid": _labeled_metrics(0.86),
            },
        },
        "trec_run": "labeled.run",
        "trec_qrels": "labeled.qrels",
        "trec_files": {
            "vector": {"run": "labeled.run", "qrels": "labeled.qrels"},
            "text": {"run": "labeled.text.run", "qrels": "labeled.text.qrels"},
            "hybrid": {"run": "labeled.hybrid.run", "qrels": "labeled.hybrid.qrels"},
        },
    }
    report["dimensions"] = {
        "embedded_dimension": 1024,
        "rows": [
            {
                "dimension": dimension,
                "recall": {"1": r1, "10": r10},
                "labeled": {"ndcg@10": ndcg} if ndcg is not None else None,
            }
            for dimension, r1, r10, ndcg in (
                (256, 0.7, 0.8, 0.7),
                (384, 0.78, 0.86, None),
                (1024, 1.0, 0.98, 0.85),
            )
        ],
    }
    report["gates"] = [
        {"metric": "index_recall@10", "threshold": 0.9, "value": 0.98, "passed": True},
        {"metric": "labeled_ndcg@10", "threshold": 0.9, "value": 0.85, "passed": False},
        {"metric": "query_latency_p95_ms", "threshold": 3.0, "value": 3.4, "passed": False},
    ]
    report["headline"] = {
        "index_recall@10": 0.98,
        "tie_aware_recall@10": 0.99,
        "labeled_ndcg@10": 0.85,
        "labeled_recall@10": 0.9,
        "query_latency_p95_ms": 3.4,
    }
    report["trend"] = [
        {
            "run_id": HOSTILE if n == 2 else f"20261{n}01t120000z-0000",
            "created_at": f"2026-0{n + 1}-01T12:00:00+00:00",
            "headline": {
                "index_recall@10": 0.9 + n * 0.015,
                "tie_aware_recall@10": 0.92 + n * 0.013,
                "labeled_ndcg@10": 0.8 + n * 0.01 if n > 1 else None,
                "query_latency_p95_ms": 4.0 - n * 0.2,
            },
        }
        for n in range(5)
    ]
    return report
