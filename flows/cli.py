"""The ``novaflow`` command: run, plan, search, demo, emulator, tour."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.backend import backend_environment
from flows.report_commands import command_evaluate, command_report, print_report_lines

DEFAULT_WORKDIR = Path(".novaflow")


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="JSONL, CSV or Parquet manifest (local or s3://)")
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


def _settings(args: argparse.Namespace) -> Any:
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
        update["index"] = settings.index.model_copy(update=index_update)
    if args.dimension:
        update["embedding"] = settings.embedding.model_copy(update={"dimension": args.dimension})
    evaluation = _evaluation_update(args)
    if evaluation:
        update["evaluation"] = settings.evaluation.model_validate(
            {**settings.evaluation.model_dump(), **evaluation}
        )
    return settings.model_copy(update=update)


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


def _quiet_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The temporary API server can take a while to start on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def run_job(
    settings: Any,
    source: Any,
    *,
    run_id: str | None = None,
    resume: bool = False,
    allow_empty_corpus: bool = False,
) -> int:
    """Run the whole job on ``source`` (a :class:`tasks.corpus.source.CorpusSource`) with
    ``settings``: a new run, the run ``run_id``, or with ``resume`` the newest unfinished one.
    Prints the summary; returns 0 when every unit ended embedded or quarantined, else 1."""
    _quiet_prefect()
    from flows.reembed import ReembedParameters, reembed
    from tasks.report.summary import RunSummary, summary_lines

    if resume:
        from tasks.plan.stage import unfinished_run
        from tasks.store import CheckpointStore

        run_id = unfinished_run(CheckpointStore(settings.store))
        if run_id is None:
            print(f"novaflow run --resume: no unfinished run in {settings.store}", file=sys.stderr)
            return 2
        print(f"resuming run {run_id}: finished shards are kept, submitted jobs are polled")
    params = ReembedParameters(
        manifest=source.manifest,
        corpus=source.corpus,
        root=source.root,
        allow_empty_corpus=allow_empty_corpus,
        settings=settings,
        **({"run_id": run_id} if run_id else {}),
    )
    print(f"novaflow run {params.run_id} ({settings.backend} backend, store {settings.store})")
    with (
        backend_environment(settings.backend, Path(settings.store)),
        shard_progress_bar(settings.store, params.run_id),
    ):
        state = reembed(params, return_state=True)
    outcome = state.result(raise_on_failure=False)
    summary = outcome if isinstance(outcome, RunSummary) else None
    if summary is not None:
        for line in summary_lines(summary):
            print(line)
        print(f"  details  {settings.store}/runs/{params.run_id}/summary.json")
    print_report_lines(settings.store, params.run_id)
    if state.is_failed():
        print(f"novaflow run {params.run_id} failed: {state.message or outcome}", file=sys.stderr)
        return 1
    return 0 if summary is not None and summary.adds_up else 1


@contextmanager
def shard_progress_bar(store: str, run_id: str) -> Iterator[None]:
    """While the ``with`` block runs, draw the run's shards finished out of planned on the
    terminal (only when stderr is one), read from the run's checkpoints twice a second."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from tasks.report.progress import run_progress
    from tasks.store import CheckpointStore

    checkpoints = CheckpointStore(store)
    stop = threading.Event()
    with Progress(
        "  embedding",
        BarColumn(),
        MofNCompleteColumn(),
        "shards",
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        shards = bar.add_task("shards", total=None)

        def watch() -> None:
            while not stop.wait(0.5):
                progress = run_progress(checkpoints, run_id)
                bar.update(shards, completed=progress.shards_done, total=progress.shards_total)

        watcher = threading.Thread(target=watch, name="novaflow-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


def command_run(args: argparse.Namespace) -> int:
    """``novaflow run``: the whole job; exit 0 when every unit ended embedded or quarantined."""
    from tasks.corpus.source import CorpusSource

    return run_job(
        _settings(args),
        CorpusSource(args.manifest, args.corpus, args.root),
        run_id=args.run_id,
        resume=args.resume,
        allow_empty_corpus=args.allow_empty_corpus,
    )


def command_plan(args: argparse.Namespace) -> int:
    """``novaflow plan``: a dry run a user can trust; prints the plan and its estimated cost."""
    from tasks.aws_clients import s3_client
    from tasks.corpus.source import CorpusSource, corpus_items
    from tasks.plan.stage import planned_run
    from tasks.records import new_run_id

    settings = _settings(args)
    run_id = new_run_id()
    with backend_environment(settings.backend, Path(settings.store)):
        source = CorpusSource(args.manifest, args.corpus, args.root)
        totals = planned_run(
            settings, lambda: corpus_items(source, s3_client()), run_id, args.allow_empty_corpus
        )
    items = totals.items
    print(f"plan {run_id} (no model was called)")
    print(
        f"  items    {items['new']} new, {items['changed']} changed, "
        f"{items['unchanged']} unchanged, {items['removed']} removed; {totals.failures} failed"
    )
    print(
        f"  units    {totals.units_to_embed} to embed in {totals.shards} shard(s), "
        f"{totals.async_units} for async jobs"
    )
    print(f"  index    {totals.keys_to_delete} stale keys to delete")
    print(f"  cost     ~${totals.estimated_cost_usd:.4f} (on-demand prices in settings)")
    print(f"  details  {settings.store}/runs/{run_id}/plan.parquet")
    print(f"  run it   novaflow run --run-id {run_id} …same source and store…")
    return 0


def command_search(args: argparse.Namespace) -> int:
    """``novaflow search``: the nearest units to a text or file, with where they come from."""
    from tasks.index.search import search_index

    if (args.query is None) == (args.file is None):
        print("novaflow search: give a text query or --file, not both", file=sys.stderr)
        return 2
    settings = _settings(args)
    metadata_filter = json.loads(args.filter) if args.filter else None
    with backend_environment(settings.backend, Path(settings.store)):
        hits = search_index(settings, args.query, args.file, args.top_k, metadata_filter)
    if not hits:
        print("no results (is the index empty? run `novaflow demo` or `novaflow run` first)")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>3}. {hit.distance:.4f}  {hit.key}  {hit.where}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """``novaflow demo``: generate the demo corpus and run the whole job on the stand-in."""
    from tasks.demo.corpus import generate_demo_corpus

    workdir: Path = args.workdir
    corpus = generate_demo_corpus(workdir / "corpus")
    print(
        f"novaflow demo: corpus of {corpus.good_files} files and {corpus.broken_files} broken "
        f"ones in {corpus.root}"
    )
    from tasks.corpus.source import CorpusSource
    from tasks.settings import NovaflowSettings

    store = str(workdir / "store")
    settings = NovaflowSettings()
    evaluation = settings.evaluation.model_copy(update={"qrels": str(corpus.qrels)})
    settings = settings.model_copy(
        update={"store": store, "backend": "local", "evaluation": evaluation}
    )
    source = CorpusSource(manifest=str(corpus.manifest), root=str(corpus.root))
    status = run_job(settings, source)
    print(f'search it: novaflow search "sourdough baking" --store {workdir / "store"}')
    print(
        f'           novaflow search "bouncing square" --store {workdir / "store"} '
        """--filter '{"item_id": "video/talk-long"}'   (segments of the long video)"""
    )
    return status


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
    if args.command in ("run", "evaluate", "demo"):
        _quiet_prefect()
    commands = {
        "run": command_run,
        "plan": command_plan,
        "search": command_search,
        "demo": command_demo,
        "evaluate": lambda args: command_evaluate(args, _settings),
        "report": command_report,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
