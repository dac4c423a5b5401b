"""The ``novaflow backfill`` command: a backfill started, resumed, or one partition rerun, with a
line on the terminal as each partition ends and the backfill's summary at the end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.backend import backend_environment
from flows.report_commands import print_report_lines
from flows.watching import repeated_while_running

if TYPE_CHECKING:  # imported at run time only when the command runs: `novaflow --help` is fast
    from flows.backfill import BackfillParameters
    from tasks.settings import NovaflowSettings
    from tasks.store import CheckpointStore

POLL_SECONDS = 1.0


def add_backfill_arguments(parser: argparse.ArgumentParser) -> None:
    """The backfill's own options (the target and evaluation options are the common ones)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--manifest", help="JSONL, CSV or Parquet manifest (local or s3://)")
    source.add_argument("--corpus", help="a directory or s3:// prefix to crawl")
    parser.add_argument("--root", help="local paths must stay under this directory")
    parser.add_argument(
        "--backfill-id",
        help="resume this backfill (with no source: as its record says), or name a new one",
    )
    parser.add_argument(
        "--rows",
        metavar="START:STOP",
        help="only rows START (0-based) to STOP (exclusive) of the source, in source order",
    )
    parser.add_argument(
        "--modified-after",
        type=datetime.fromisoformat,
        metavar="ISO-TIME",
        help="only files modified at or after this time (e.g. 2025-01-31; naive times are UTC)",
    )
    parser.add_argument(
        "--modified-before",
        type=datetime.fromisoformat,
        metavar="ISO-TIME",
        help="only files modified before this time",
    )
    parser.add_argument(
        "--partition-size", type=int, default=10_000, help="rows per partition (default 10000)"
    )
    parser.add_argument(
        "--partition",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="run only partition N (e.g. one that failed; repeatable)",
    )
    parser.add_argument(
        "--switch",
        action="store_true",
        help="make the target index the live one once every partition completed and the "
        "evaluation passed (writes <store>/active-index.json)",
    )
    parser.add_argument(
        "--no-evaluation", action="store_true", help="do not evaluate the index at the end"
    )
    parser.add_argument(
        "--batch-inference",
        action="store_true",
        help="embed the sync units with Bedrock batch inference jobs (about half the "
        "on-demand price, hours instead of minutes; see `novaflow plan`); on AWS also set "
        "NOVAFLOW_BATCH_INFERENCE__ROLE_ARN",
    )


def command_backfill(
    args: argparse.Namespace, settings_of: Callable[[argparse.Namespace], Any]
) -> int:
    """``novaflow backfill``: exit 0 when every partition it ran completed (and, once all have,
    the evaluation passed and any switch asked for was made), else 1."""
    from tasks.store import CheckpointStore

    settings = settings_of(args)
    store = CheckpointStore(settings.store)
    try:
        params = _parameters(args, settings)
        _check_against_record(store, params)
    except ValueError as error:
        print(f"novaflow backfill: {error}", file=sys.stderr)
        return 2
    return run_backfill(params, store)


def _check_against_record(store: CheckpointStore, params: BackfillParameters) -> None:
    """Refuse, before Prefect starts, what the flow would refuse: a backfill id already
    recorded with another source, selection or target (``BackfillMismatchError``)."""
    from flows.backfill import backfill_record
    from tasks.backfill.records import read_backfill_record, recorded_backfill

    if read_backfill_record(store, params.backfill_id) is not None:
        recorded_backfill(store, backfill_record(params))


def _parameters(args: argparse.Namespace, settings: NovaflowSettings) -> BackfillParameters:
    """The backfill's parameters: from the command line, or, with a ``--backfill-id`` and no
    source, from the backfill's record (its settings, in this store)."""
    from flows.backfill import BackfillParameters
    from tasks.backfill.records import read_backfill_record
    from tasks.store import CheckpointStore

    common = {"partitions": tuple(args.partition), "switch": args.switch}
    if args.manifest is None and args.corpus is None:
        if args.backfill_id is None:
            raise ValueError("give --manifest or --corpus, or the --backfill-id to resume")
        record = read_backfill_record(CheckpointStore(settings.store), args.backfill_id)
        if record is None:
            raise ValueError(f"no backfill {args.backfill_id} in {settings.store}")
        recorded = record.settings.model_copy(update={"store": settings.store})
        if args.no_evaluation:
            evaluation = recorded.evaluation.model_copy(update={"enabled": False})
            recorded = recorded.model_copy(update={"evaluation": evaluation})
        after, before = record.modified_range
        return BackfillParameters(
            backfill_id=record.backfill_id, manifest=record.manifest, corpus=record.corpus,
            root=record.root, row_start=record.row_start, row_stop=record.row_stop,
            modified_after=after, modified_before=before,
            partition_size=record.partition_size, settings=recorded, **common,
        )  # fmt: skip
    start, stop = _row_range(args.rows)
    if args.batch_inference:  # validated again: batch inference on AWS needs its role
        batch = {**settings.batch_inference.model_dump(), "enabled": True}
        settings = type(settings)(**{**settings.model_dump(), "batch_inference": batch})
    return BackfillParameters(
        manifest=args.manifest, corpus=args.corpus, root=args.root, row_start=start,
        row_stop=stop, modified_after=args.modified_after,
        modified_before=args.modified_before, partition_size=args.partition_size,
        settings=settings, **common,
        **({"backfill_id": args.backfill_id} if args.backfill_id else {}),
    )  # fmt: skip


def _row_range(rows: str | None) -> tuple[int, int | None]:
    """``START:STOP`` (either side may be left out) as ``(start, stop)``."""
    if rows is None:
        return 0, None
    start, colon, stop = rows.partition(":")
    if not colon:
        raise ValueError(f"--rows takes START:STOP, not {rows!r}")
    try:
        return int(start or 0), int(stop) if stop else None
    except ValueError:
        raise ValueError(f"--rows takes whole numbers, START:STOP, not {rows!r}") from None


def run_backfill(params: BackfillParameters, store: CheckpointStore) -> int:
    """Run the backfill flow on ``params`` (:class:`flows.backfill.BackfillParameters`),
    printing each partition as it ends and then the summary; returns the exit status."""
    from flows.backfill import backfill
    from tasks.backfill.summary import BackfillSummary, summary_lines

    settings = params.settings
    target = f"{settings.index.vector_bucket}/{settings.index.index}"
    print(
        f"novaflow backfill {params.backfill_id} into {target} ({settings.backend} backend, "
        f"store {settings.store})"
    )
    with (
        backend_environment(settings.backend, Path(settings.store)),
        partition_lines(store, params.backfill_id),
    ):
        state = backfill(params, return_state=True)
    summary_path = store.backfill_summary_path(params.backfill_id)
    if store.exists(summary_path):
        for line in summary_lines(BackfillSummary.from_json(store.read_text(summary_path))):
            print(line)
        print(f"  details  {settings.store}/backfills/{params.backfill_id}/summary.json")
        print_report_lines(settings.store, params.backfill_id)
    if not state.is_completed():
        print(f"novaflow backfill {params.backfill_id} failed: {state.message}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def partition_lines(store: CheckpointStore, backfill_id: str) -> Iterator[None]:
    """While the ``with`` block runs, print a line for each partition that ends (its outcome
    written or rewritten), read from the backfill's outcomes every ``POLL_SECONDS``; the last
    ones are printed when the block ends."""
    from tasks.backfill.outcomes import partition_outcome
    from tasks.backfill.summary import partition_line

    watched = _OutcomeFiles(store, backfill_id)
    watched.changed()  # those of earlier attempts are not this attempt's news

    def print_changed() -> None:
        for number in watched.changed():
            outcome = partition_outcome(store, backfill_id, number)
            if outcome is not None:
                print(partition_line(outcome, watched.partitions() or number), flush=True)

    with repeated_while_running(print_changed, POLL_SECONDS):
        yield


class _OutcomeFiles:
    """The backfill's partition outcome files, and which changed since last asked."""

    def __init__(self, store: CheckpointStore, backfill_id: str) -> None:
        self._store, self._backfill_id = store, backfill_id
        self._seen: dict[str, tuple[int, int]] = {}
        self._total: int | None = None

    def partitions(self) -> int | None:
        """How many partitions the backfill has (None until it has been cut)."""
        if self._total is None:
            path = self._store.partition_set_path(self._backfill_id)
            if self._store.exists(path):
                self._total = int(json.loads(self._store.read_text(path))["partitions"])
        return self._total

    def changed(self) -> list[int]:
        """The partitions whose outcome file appeared or changed since the last call."""
        changed = []
        for path, stamp in self._store_stamps():
            name = path.rsplit("/", 1)[-1]
            if self._seen.get(name) != stamp:
                self._seen[name] = stamp
                changed.append(int(name.removeprefix("part-").removesuffix(".json")))
        return sorted(changed)

    def _store_stamps(self) -> list[tuple[str, tuple[int, int]]]:
        import pyarrow.fs as pafs

        directory = self._store.backfill_outcomes_dir(self._backfill_id)
        selector = pafs.FileSelector(directory, allow_not_found=True)
        return [
            (info.path, (info.mtime_ns or 0, info.size or 0))
            for info in self._store.filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.startswith("part-")
            and info.base_name.endswith(".json")
        ]
