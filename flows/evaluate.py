"""The evaluation flow: is the index still returning the right things?

    evaluate-index ──┐ (index recall vs exact search over the checkpoints; dimension trade-off)
                     ├─barrier──► write-report ──► artifacts ──► gates
    evaluate-labeled ┘ (labeled queries: recall, MRR, nDCG, precision; TREC files)

Run it with ``novaflow evaluate``, as the last stage of ``novaflow run``, or on a schedule (see
``deployments/``). The report goes to ``<store>/reports/<run_id>/`` whatever the gates say; a
figure below its gate then fails the flow, naming the figure and its threshold, so a scheduled
evaluation alerts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from tasks.prefect_tasks import evaluate_index, evaluate_labeled_queries, write_evaluation_report
from tasks.records import new_run_id
from tasks.report.evaluation.document import failed_gates, report_lines
from tasks.report.evaluation.markdown import evaluation_markdown
from tasks.settings import NovaflowSettings


class EvaluationGateError(RuntimeError):
    """A headline figure fell below its gate (the report is written all the same)."""


class EvaluateParameters(BaseModel):
    """Which report to write (``run_id``) about which index (``settings``)."""

    model_config = ConfigDict(frozen=True)

    run_id: str = Field(default_factory=new_run_id, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    settings: NovaflowSettings = Field(default_factory=NovaflowSettings)


@flow(
    name="novaflow-evaluate",
    task_runner=ThreadPoolTaskRunner(max_workers=2),
    validate_parameters=True,
)
def evaluate(params: EvaluateParameters) -> dict[str, Any]:
    """Measure the index, write the report and judge the gates; returns the report."""
    logger = get_run_logger()
    settings, run_id = params.settings, params.run_id
    index_future = evaluate_index.submit(settings)
    labeled_future = evaluate_labeled_queries.submit(settings)
    report, html = write_evaluation_report(
        settings, run_id, index_future.result(), labeled_future.result()
    )
    key = f"novaflow-evaluation-{run_id}"[:64]
    create_table_artifact(
        [{"figure": name, "value": round(value, 6)} for name, value in report["headline"].items()],
        key=key,
        description=f"headline figures of the evaluation; report: {html}",
    )
    create_markdown_artifact(
        evaluation_markdown(report), key=f"{key}-report"[:64], description="evaluation report"
    )
    for line in report_lines(report, html):
        logger.info(line)
    failures = failed_gates(report)
    if failures:
        raise EvaluationGateError("; ".join(failures) + f" (report: {html})")
    return report
