"""``novaflow plan`` diffs the corpus against the index's state and may finish a commit a killed
run left: not while a run writes that index."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import _parser, _settings, command_plan
from tasks.runs.lease import held_lease, index_lease_location
from tasks.store import CheckpointStore


def test_a_plan_is_refused_while_a_run_writes_the_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("a note about river deltas\n")
    store = CheckpointStore(str(tmp_path / "store"))
    args = _parser().parse_args(
        ["plan", "--corpus", str(corpus), "--store", store.root, "--index", "notes"]
    )
    bucket = _settings(args).index.vector_bucket

    with held_lease(index_lease_location(store, bucket, "notes"), "the-writing-run"):
        status = command_plan(args)

    assert status == 1
    assert capsys.readouterr().err.startswith(
        f"novaflow plan: index {bucket}/notes is being written by run the-writing-run, host "
    )
    assert not store.exists(store.runs_dir())  # nothing planned
