"""The evaluation as a user meets it: the last stage of a run writes a report whose recall is 1.0
against an exact index; against an approximate index recall falls below 1 and falls further as
fewer partitions are probed; a gate below the measured recall passes and one above it fails the
flow, naming the figure and the threshold, after the report is written."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emulator.app import Emulator, EmulatorSettings
from emulator.s3vectors.search import SearchSettings
from flows.backend import environment_variables
from flows.evaluate import EvaluateParameters, evaluate
from flows.reembed import ReembedParameters, reembed
from tasks.evaluate.stage import evaluated_index
from tasks.settings import EvaluationSettings, NovaflowSettings

VOCABULARY = [f"word{number}" for number in range(150)]


def _text_corpus(root: Path, files: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    lines = []
    for number in range(files):
        # Words drawn from one shared vocabulary: neighbours spread over many k-means
        # partitions, so probing fewer of them loses some.
        words = rng.choices(VOCABULARY, k=24)
        (root / f"note-{number:03d}.txt").write_text(" ".join(words))
        lines.append(json.dumps({"uri": f"note-{number:03d}.txt"}))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@contextmanager
def _stand_in(state_dir: Path, search: SearchSettings) -> Iterator[Emulator]:
    with (
        Emulator(EmulatorSettings(state_dir=state_dir, search=search)) as stand_in,
        environment_variables(stand_in.environment()),
    ):
        yield stand_in


def _settings(store: Path, **evaluation: object) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(store),
        backend="aws",
        evaluation=EvaluationSettings(sample_size=60, ks=(1, 10), dimensions=(), **evaluation),
    )


@pytest.fixture(scope="module")
def indexed_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 240-text corpus embedded and loaded by a run against an exact stand-in, whose last
    stage evaluated it; returns the store and the stand-in's state directory."""
    base = tmp_path_factory.mktemp("evaluated")
    manifest = _text_corpus(base / "corpus", 240)
    state_dir = base / "stand-in"
    with _stand_in(state_dir, SearchSettings()):
        summary = reembed(
            ReembedParameters(
                run_id="evaluated-run", manifest=str(manifest), settings=_settings(base / "store")
            )
        )
    assert summary.adds_up
    return base / "store", state_dir


def test_a_run_ends_with_a_report_whose_recall_against_an_exact_index_is_one(
    indexed_corpus: tuple[Path, Path],
) -> None:
    store, _ = indexed_corpus
    folder = store / "reports" / "evaluated-run"
    report = json.loads((folder / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["index"]["vectors"] == 240
    assert report["index_recall"]["queries"] == 60
    assert report["headline"]["index_recall@1"] == 1.0
    assert report["headline"]["index_recall@10"] == 1.0
    assert report["index_recall"]["overall"]["short_results"] == {"1": 0, "10": 0}
    assert {"report.html", "report.md"} <= {path.name for path in folder.iterdir()}
    assert "<svg" in (folder / "report.html").read_text()


def test_approximate_search_loses_recall_and_loses_more_with_fewer_partitions_probed(
    indexed_corpus: tuple[Path, Path],
) -> None:
    store, state_dir = indexed_corpus
    settings = _settings(store)
    recall = {}
    for probe in (1, 3, 16):
        search = SearchSettings(mode="approximate", partitions=16, probe=probe, seed=1)
        with _stand_in(state_dir, search):
            section = evaluated_index(settings)
        assert section is not None
        recall[probe] = section["index_recall"]["overall"]["recall"]["10"]
    assert recall[1] < recall[3] < 1.0
    assert recall[16] == 1.0  # every partition probed is exact search


def test_a_gate_below_the_measured_recall_passes_and_one_above_it_fails_the_flow(
    indexed_corpus: tuple[Path, Path],
) -> None:
    store, state_dir = indexed_corpus
    search = SearchSettings(mode="approximate", partitions=16, probe=1, seed=1)
    with _stand_in(state_dir, search):
        passing = evaluate(
            EvaluateParameters(run_id="gate-passes", settings=_settings(store, min_recall=0.05)),
            return_state=True,
        )
        assert passing.is_completed()
        measured = json.loads((store / "reports/gate-passes/report.json").read_text())
        value = measured["headline"]["index_recall@10"]
        assert measured["gates"] == [
            {"metric": "index_recall@10", "threshold": 0.05, "value": value, "passed": True}
        ]
        failing = evaluate(
            EvaluateParameters(
                run_id="gate-fails",
                settings=_settings(store, gates={"index_recall@10": min(1.0, value + 0.01)}),
            ),
            return_state=True,
        )
    assert failing.is_failed()
    assert "index_recall@10" in failing.message
    assert "below its gate" in failing.message
    report = json.loads((store / "reports/gate-fails/report.json").read_text())
    assert report["gates"][0]["passed"] is False  # written before the flow failed
    # the earlier reports of the store are the trend of this one
    assert [entry["run_id"] for entry in report["trend"]][-1] == "gate-passes"
