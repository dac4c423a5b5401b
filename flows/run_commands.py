"""The ``novaflow run`` and ``novaflow demo`` commands: one typed function runs the job for both,
with the shard progress bar drawn from the run's checkpoints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.backend import backend_environment
from flows.report_commands import print_report_lines
from flows.watching import repeated_while_running


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
    from flows.reembed import ReembedParameters, reembed_flow
    from tasks.corpus.source import CorpusSource
    from tasks.report.summary import RunSummary, summary_lines
    from tasks.runs.lease import lease_is_live, lease_location
    from tasks.runs.records import new_run_record, read_run_record, recorded_run, unfinished_run
    from tasks.settings import NovaflowSettings
    from tasks.store import CheckpointStore

    store = CheckpointStore(settings.store)
    if resume:
        run_id = unfinished_run(
            store,
            is_live=lambda candidate: lease_is_live(lease_location(store, candidate), candidate),
        )
        if run_id is None:
            print(
                f"novaflow run --resume: no unfinished run in {settings.store}; starting a new run"
            )
        else:
            record = read_run_record(store, run_id)
            if record is not None:  # continue what the stopped run was doing, as it was doing it
                settings = NovaflowSettings.model_validate_json(record.settings_json)
                source = CorpusSource(record.manifest, record.corpus, record.root)
                allow_empty_corpus = record.allow_empty_corpus
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
    # Recorded before anything else (the flow records it too, for runs a deployment starts):
    # a run stopped even while Prefect starts up can be resumed.
    recorded_run(
        store,
        new_run_record(
            params.run_id, params.manifest, params.corpus, params.root,
            params.allow_empty_corpus, settings.model_dump_json(),
        ),
    )  # fmt: skip
    with (
        backend_environment(settings.backend, Path(settings.store)),
        shard_progress_bar(settings.store, params.run_id),
    ):
        state = reembed_flow(settings)(params, return_state=True)
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
    with Progress(
        "  embedding",
        BarColumn(),
        MofNCompleteColumn(),
        "shards",
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        shards = bar.add_task("shards", total=None)

        def show() -> None:
            progress = run_progress(checkpoints, run_id)
            bar.update(shards, completed=progress.shards_done, total=progress.shards_total)

        with repeated_while_running(show, 0.5):
            yield


def command_run(args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]) -> int:
    """``novaflow run``: the whole job; exit 0 when every unit ended embedded or quarantined."""
    from tasks.corpus.source import CorpusSource

    return run_job(
        settings_of(args),
        CorpusSource(args.manifest, args.corpus, args.root),
        run_id=args.run_id,
        resume=args.resume,
        allow_empty_corpus=args.allow_empty_corpus,
    )


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
    # The demo stores searchable text, so its evaluation compares vector, text and hybrid search.
    index = settings.index.model_copy(update={"searchable_text": True})
    settings = settings.model_copy(
        update={"store": store, "backend": "local", "evaluation": evaluation, "index": index}
    )
    source = CorpusSource(manifest=str(corpus.manifest), root=str(corpus.root))
    status = run_job(settings, source)
    print(f'search it: novaflow search "sourdough baking" --store {workdir / "store"}')
    print(
        f'           novaflow search "sourdough baking" --mode hybrid --store {workdir / "store"}'
    )
    print(
        f'           novaflow search "bouncing square" --store {workdir / "store"} '
        """--filter '{"item_id": "video/talk-long"}'   (segments of the long video)"""
    )
    return status
