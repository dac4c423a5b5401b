"""The ``novaflow`` command: run, plan, search, demo, emulator, tour."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.backend import backend_environment
from flows.backfill_command import add_backfill_arguments, command_backfill
from flows.prefect_server import ensure_prefect_api
from flows.report_commands import command_evaluate, command_report
from flows.run_commands import command_demo, command_run

DEFAULT_WORKDIR = Path(".novaflow")


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--manifest",
        help="JSONL, CSV or Parquet manifest, or an S3 Inventory manifest.json (local or s3://)",
    )
    source.add_argument("--corpus", help="a directory or s3:// prefix to crawl")
    parser.add_argument("--root", help="local paths must stay under this directory")
    parser.add_argument(
        "--allow-empty-corpus",
        action="store_true",
        help="let an empty corpus delete every vector of the index (refused by default)",
    )


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="checkpoint store: directory or s3://… (NOVAFLOW_STORE)")
    parser.add_argument("--vector-bucket", help="S3 vector bucket (default: novaflow)")
    parser.add_argument("--index", help="vector index (default: corpus)")
    parser.add_argument("--dimension", type=int, choices=(256, 384, 1024, 3072))
    parser.add_argument(
        "--backend",
        choices=("local", "aws"),
        help="local: the embedded stand-in (default); aws: the endpoints and credentials the "
        "AWS environment names (AWS itself, or a `novaflow emulator`)",
    )


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--qrels", help="labeled queries (JSONL): query text or file, relevant ids")
    group.add_argument("--sample-size", type=int, help="query vectors sampled (default 200)")
    group.add_argument("--seed", type=int, help="seed of the sample (default 0)")
    group.add_argument("--ks", help="recall@k cutoffs, comma-separated (default 1,10,100)")
    group.add_argument(
        "--eval-filter", help="also measure recall under this metadata filter (JSON equalities)"
    )
    group.add_argument("--query-file", help="Parquet of query vectors instead of a sample")
    group.add_argument(
        "--min-recall", type=float, help="fail when index recall@10 is below this (0-1)"
    )
    group.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="FIGURE=MIN",
        help="fail when a headline figure is below MIN, e.g. labeled_ndcg@10=0.5 (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novaflow",
        description=(
            "Keep an S3 Vectors index of a mixed-media corpus fresh with Amazon Nova "
            "Multimodal Embeddings."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="embed what changed and bring the index in line")
    _add_source_arguments(run)
    _add_target_arguments(run)
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--run-id", help="resume this run (or reuse a plan from `novaflow plan`)")
    resume.add_argument(
        "--resume",
        action="store_true",
        help="resume the newest run of the store that was killed before its end",
    )
    _add_evaluation_arguments(run)
    run.add_argument(
        "--no-evaluation", action="store_true", help="end after the index load (no evaluation)"
    )
    backfill = commands.add_parser(
        "backfill",
        help="re-embed a manifest, a slice, a prefix or a date range partition by partition, "
        "resumably; or the whole corpus into a new index",
    )
    add_backfill_arguments(backfill)
    _add_target_arguments(backfill)
    _add_evaluation_arguments(backfill)
    evaluate = commands.add_parser(
        "evaluate", help="measure the index's recall and the labeled queries; write the report"
    )
    _add_target_arguments(evaluate)
    evaluate.add_argument("--run-id", help="the report's id (default: a new one)")
    _add_evaluation_arguments(evaluate)
    report = commands.add_parser("report", help="print a report's headline figures and its path")
    report.add_argument("run_id", nargs="?", help="the run (default: the newest report)")
    report.add_argument("--store", help="checkpoint store: directory or s3://… (NOVAFLOW_STORE)")
    plan = commands.add_parser("plan", help="show what a run would do and cost; calls no model")
    _add_source_arguments(plan)
    _add_target_arguments(plan)
    search = commands.add_parser("search", help="query the index with a text or a file")
    search.add_argument("query", nargs="?", help="text to search for")
    search.add_argument("--file", type=Path, help="an image, audio or video file to search with")
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--filter", help='metadata filter as JSON, e.g. \'{"modality": "pdf"}\'')
    search.add_argument(
        "--mode",
        choices=("vector", "text", "hybrid"),
        default="vector",
        help="vector: nearest embeddings (default); text: full-text (BM25) over the searchable "
        "text; hybrid: both, fused by the index (needs searchable text on, see the README)",
    )
    _add_target_arguments(search)
    demo = commands.add_parser(
        "demo", help="generate a small mixed corpus and run the whole job on the local stand-in"
    )
    demo.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "demo")
    commands.add_parser(
        "emulator",
        help="run the local stand-in for S3, Bedrock (Nova) and S3 Vectors on 127.0.0.1",
        add_help=False,
    )
    commands.add_parser("tour", help="tour the APIs with plain boto3 (stand-in or AWS)")
    return parser


class InvalidSettingsError(ValueError):
    """Settings from the command line or ``NOVAFLOW_*`` variables that break a rule; the message
    lists each problem as ``field.path: message (got value)``."""


def _settings(args: argparse.Namespace) -> Any:
    """The command's settings: the environment's, with the command line's on top."""
    from pydantic import ValidationError

    try:
        return _merged_settings(args)
    except ValidationError as err:
        raise InvalidSettingsError(
            "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or err.title}: {error['msg']} "
                f"(got {error['input']!r})"
                for error in err.errors()
            )
        ) from None


def _merged_settings(args: argparse.Namespace) -> Any:
    from tasks.settings import NovaflowSettings

    settings = NovaflowSettings()
    update: dict[str, Any] = {}
    if args.store:
        update["store"] = args.store
    if args.backend:
        update["backend"] = args.backend
    index_update = {
        key: value
        for key, value in (("vector_bucket", args.vector_bucket), ("index", args.index))
        if value
    }
    if index_update:
        update["index"] = _validated(settings.index, index_update)
    if args.dimension:
        update["embedding"] = _validated(settings.embedding, {"dimension": args.dimension})
    evaluation = _evaluation_update(args)
    if evaluation:
        update["evaluation"] = _validated(settings.evaluation, evaluation)
    settings = settings.model_copy(update=update)
    if index_update or args.dimension:
        return settings
    return _following_switch(settings)


def _validated(section: Any, changes: dict[str, Any]) -> Any:
    """``section`` (a settings model) with ``changes``, checked as values from the environment
    are: ``model_copy(update=...)`` would take any value unchecked."""
    return section.model_validate({**section.model_dump(), **changes})


def _following_switch(settings: Any) -> Any:
    """``settings`` aimed at the index a backfill switched to (``<store>/active-index.json``),
    when neither the command line nor the environment names an index or embedding settings."""
    named = ("NOVAFLOW_INDEX", "NOVAFLOW_EMBEDDING")
    if any(name.startswith(named) for name in os.environ):
        return settings
    if settings.backend == "local" and settings.store.startswith("s3://"):
        return settings  # the embedded stand-in that serves this store is not running yet
    from tasks.backfill.switch import following_switch, read_active_index
    from tasks.store import CheckpointStore

    pointer = read_active_index(CheckpointStore(settings.store))
    if pointer is None:
        return settings
    print(
        f"novaflow: following the switch to index {pointer.vector_bucket}/{pointer.index} "
        f"({settings.store}/active-index.json)",
        file=sys.stderr,
    )
    return following_switch(settings, pointer)


def _evaluation_update(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation settings the command line sets (what it leaves unset stays as is)."""
    update: dict[str, Any] = {}
    for name in ("qrels", "sample_size", "seed", "query_file", "min_recall"):
        if getattr(args, name, None) is not None:
            update[name] = getattr(args, name)
    if getattr(args, "ks", None):
        update["ks"] = tuple(int(k) for k in args.ks.split(","))
    if getattr(args, "eval_filter", None):
        update["metadata_filter"] = json.loads(args.eval_filter)
    gates = {}
    for gate in getattr(args, "gate", None) or []:
        figure, _, threshold = gate.partition("=")
        if not figure or not threshold:
            raise SystemExit(f"novaflow: --gate takes FIGURE=MIN, not {gate!r}")
        gates[figure.strip()] = float(threshold)
    if gates:
        update["gates"] = gates
    if getattr(args, "no_evaluation", False):
        update["enabled"] = False
    return update


_M_MMAP_THRESHOLD = -3  # <malloc.h>
_LARGE_BUFFER_BYTES = 1 << 20


def _return_large_buffers_to_the_os() -> None:
    """Have glibc's malloc serve every buffer of 1 MiB or more with its own ``mmap``, returned
    to the system when freed (Linux with glibc; elsewhere nothing).

    By default the threshold rises to the size of the largest buffer freed so far (up to
    32 MiB), after which such buffers come from the heap and its per-thread arenas, which keep
    the memory: the index load's PutVectors bodies (~5 MB each, a few copies in botocore) and
    Arrow's reads then leave the process's RSS growing with the number of batches. A fixed
    threshold costs an ``mmap``/``munmap`` pair per large buffer, a few per batch."""
    if sys.platform != "linux":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (musl has no mallopt)
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt(_M_MMAP_THRESHOLD, _LARGE_BUFFER_BYTES)


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The temporary API server can take a while to start on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def command_plan(args: argparse.Namespace) -> int:
    """``novaflow plan``: a dry run a user can trust; prints the plan and its estimated cost."""
    from tasks.corpus.source import CorpusSource, corpus_items
    from tasks.plan.estimates import BATCH_MIN_RECORDS_PER_JOB, backfill_estimate
    from tasks.plan.stage import planned_run
    from tasks.records import new_run_id
    from tasks.runs.lease import LeaseHeldError, held_index_lease
    from tasks.store import CheckpointStore

    settings = _settings(args)
    run_id = new_run_id()
    store, index = CheckpointStore(settings.store), settings.index
    with backend_environment(settings.backend, Path(settings.store)):
        source = CorpusSource(args.manifest, args.corpus, args.root)
        try:
            # A plan may finish an interrupted commit, and diffs against the state: not while
            # a run writes the index.
            with held_index_lease(store, index.vector_bucket, index.index, run_id):
                totals = planned_run(
                    settings,
                    lambda: corpus_items(source, store=store),
                    run_id,
                    args.allow_empty_corpus,
                )
        except LeaseHeldError as busy:
            print(f"novaflow plan: {busy}", file=sys.stderr)
            return 1
    items = totals.items
    print(f"plan {run_id} (no model was called)")
    print(
        f"  items    {items['new']} new, {items['changed']} changed, "
        f"{items['unchanged']} unchanged, {items['removed']} removed; {totals.failures} failed"
    )
    print(
        f"  units    {totals.units_to_embed} to embed in {totals.shards} shard(s), "
        f"{totals.async_units} for async jobs, {totals.units_reused} reused "
        f"(~${totals.reused_cost_usd:.4f} of calls saved)"
    )
    print(f"  index    {totals.keys_to_delete} stale keys to delete")
    print(f"  cost     ~${totals.estimated_cost_usd:.4f} (on-demand prices in settings)")
    estimate = backfill_estimate(
        totals.units_to_embed,
        totals.estimated_cost_usd,
        settings.throughput.requests_per_second,
        settings.prices.batch_share_of_on_demand,
    )
    print(
        f"  on-demand {estimate.units} InvokeModel calls, ~{estimate.on_demand_hours:.2f} h at "
        f"{settings.throughput.requests_per_second:g} req/s, ~${estimate.on_demand_usd:.4f}"
    )
    print(
        f"  batch    {estimate.batch_jobs} batch inference job(s), ~${estimate.batch_usd:.4f}"
        if estimate.batch_possible
        else f"  batch    too few units for a batch job (at least {BATCH_MIN_RECORDS_PER_JOB})"
    )
    print(f"  details  {settings.store}/runs/{run_id}/plan.parquet")
    print(f"  run it   novaflow run --run-id {run_id} …same source and store…")
    return 0


def command_search(args: argparse.Namespace) -> int:
    """``novaflow search``: the nearest units to a text or file, with where they come from."""
    from tasks.index.search import TextSearchUnavailableError, search_index

    if (args.query is None) == (args.file is None):
        print("novaflow search: give a text query or --file, not both", file=sys.stderr)
        return 2
    if args.mode != "vector" and args.query is None:
        print(f"novaflow search: --mode {args.mode} searches a text query", file=sys.stderr)
        return 2
    settings = _settings(args)
    metadata_filter = json.loads(args.filter) if args.filter else None
    with backend_environment(settings.backend, Path(settings.store)):
        try:
            hits = search_index(
                settings, args.query, args.file, args.top_k, metadata_filter, mode=args.mode
            )
        except TextSearchUnavailableError as err:
            print(f"novaflow search: {err}", file=sys.stderr)
            return 2
    if not hits:
        print("no results (is the index empty? run `novaflow demo` or `novaflow run` first)")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>3}. {hit.shown_score}  {hit.key}  {hit.where}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novaflow`` console command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "emulator":
        from emulator.__main__ import main as emulator_main

        return emulator_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "tour":
        from tasks.demo.tour import main as tour_main

        return tour_main()
    from tasks.child_lifetime import bind_children_to_this_process

    bind_children_to_this_process()  # SIGTERM and SIGHUP end novaflow as an exception would
    if args.command in ("run", "evaluate", "demo", "backfill"):
        _return_large_buffers_to_the_os()
        _quiet_prefect()
        ensure_prefect_api()
    commands = {
        "run": lambda args: command_run(args, _settings),
        "plan": command_plan,
        "search": command_search,
        "demo": command_demo,
        "evaluate": lambda args: command_evaluate(args, _settings),
        "report": command_report,
        "backfill": lambda args: command_backfill(args, _settings),
    }
    try:
        status = commands[args.command](args)
    except InvalidSettingsError as err:
        print(f"novaflow {args.command}: invalid settings: {err}", file=sys.stderr)
        return 2
    if argv is None:  # the console command itself, not a caller in this process
        return _exit_without_teardown(status)
    return status


def _exit_without_teardown(status: int) -> int:
    """End the process as the interpreter's own exit would, without its teardown: the
    interpreter's own first steps (``threading._shutdown``: idle thread pools told to stop, the
    threads that are not daemons waited for; then the ``atexit`` hooks: Prefect's log and event
    workers deliver what they hold, the temporary Prefect server stops), the standard streams
    flushed, then ``os._exit``. Freeing every object of the ~2,000 modules a run imports cost
    0.25 s of CPU per command, a tenth of a run over a corpus that did not change. Returns
    ``status`` (the interpreter then exits as usual) where ``threading._shutdown``, private to
    CPython, is missing."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:
        return status
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a closed pipe
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
