"""The ``novaflow evaluate`` and ``novaflow report`` commands, and the report's lines that
``novaflow run`` prints at its end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.backend import backend_environment


def print_report_lines(store: str, run_id: str) -> bool:
    """Print the headline figures of ``run_id``'s evaluation report and its path; False when
    there is no such report."""
    from tasks.report.evaluation.document import report_lines
    from tasks.store import CheckpointStore

    checkpoints = CheckpointStore(store)
    path = checkpoints.report_path(run_id, "report.json")
    if not checkpoints.exists(path):
        return False
    report = json.loads(checkpoints.read_text(path))
    for line in report_lines(
        report, checkpoints.uri(checkpoints.report_path(run_id, "report.html"))
    ):
        print(line)
    return True


def command_evaluate(
    args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]
) -> int:
    """``novaflow evaluate``: measure the index and write the report; exit 1 when a gate fails."""
    from flows.evaluate import EvaluateParameters, evaluate

    settings = settings_of(args)
    params = EvaluateParameters(
        settings=settings, **({"run_id": args.run_id} if args.run_id else {})
    )
    print(f"novaflow evaluate {params.run_id} ({settings.backend} backend, store {settings.store})")
    with backend_environment(settings.backend, Path(settings.store)):
        state = evaluate(params, return_state=True)
    if not print_report_lines(settings.store, params.run_id):
        print("nothing to evaluate: the index holds no vectors yet (run `novaflow run` first)")
    if state.is_failed():
        print(f"novaflow evaluate {params.run_id} failed: {state.message}", file=sys.stderr)
        return 1
    return 0


def command_report(args: argparse.Namespace) -> int:
    """``novaflow report [RUN_ID]``: a report's headline figures and the path of its HTML."""
    from tasks.report.evaluation.document import newest_report_run
    from tasks.settings import NovaflowSettings
    from tasks.store import CheckpointStore

    store = args.store or NovaflowSettings().store
    run_id = args.run_id or newest_report_run(CheckpointStore(store))
    if run_id is None or not print_report_lines(store, run_id):
        print(
            f"novaflow report: no report {run_id or ''} in {store}".replace("  ", " "),
            file=sys.stderr,
        )
        return 2
    return 0
