"""The settings a command runs with: after a backfill switched the store's live index, commands
that name no index follow the switch; naming one on the command line or in the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import InvalidSettingsError, _parser, _settings
from tasks.backfill.switch import ActiveIndex
from tasks.settings import EmbeddingSettings
from tasks.store import CheckpointStore


@pytest.fixture
def switched_store(tmp_path: Path) -> str:
    store = CheckpointStore(str(tmp_path / "store"))
    embedding = EmbeddingSettings(dimension=256)
    pointer = ActiveIndex(
        vector_bucket="novaflow", index="corpus-v2", dimension=256,
        embedding_json=embedding.model_dump_json(), config_hash=embedding.config_hash(),
        backfill_id="to-v2", report="", switched_at="2026-12-06T12:00:00+00:00",
    )  # fmt: skip
    store.write_text(store.active_index_path(), pointer.to_json())
    return store.root


def test_a_command_naming_no_index_follows_the_switch(switched_store: str) -> None:
    settings = _settings(_parser().parse_args(["search", "q", "--store", switched_store]))
    assert (settings.index.index, settings.embedding.dimension) == ("corpus-v2", 256)


def test_an_index_named_on_the_command_line_wins(switched_store: str) -> None:
    args = ["search", "q", "--store", switched_store, "--index", "corpus"]
    settings = _settings(_parser().parse_args(args))
    assert (settings.index.index, settings.embedding.dimension) == ("corpus", 1024)


def test_an_index_named_in_the_environment_wins(
    switched_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVAFLOW_INDEX__INDEX", "corpus")
    settings = _settings(_parser().parse_args(["search", "q", "--store", switched_store]))
    assert settings.index.index == "corpus"


def test_a_bad_setting_on_the_command_line_is_refused_naming_it(tmp_path: Path) -> None:
    """An index name S3 Vectors would refuse (3-63 characters) used to pass, unchecked, to the
    load, which failed after the whole run's embedding."""
    args = ["run", "--corpus", str(tmp_path), "--index", "ix"]
    with pytest.raises(InvalidSettingsError) as refused:
        _settings(_parser().parse_args(args))
    assert str(refused.value) == "index: String should have at least 3 characters (got 'ix')"


def test_bad_settings_in_the_environment_are_refused_naming_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVAFLOW_THROUGHPUT__CONCURRENCY", "0")
    monkeypatch.setenv("NOVAFLOW_INDEX__VECTOR_BUCKET", "v" * 64)
    with pytest.raises(InvalidSettingsError) as refused:
        _settings(_parser().parse_args(["run", "--corpus", str(tmp_path)]))
    problems = str(refused.value).split("; ")
    assert (
        problems[0]
        == "throughput.concurrency: Input should be greater than or equal to 1 (got '0')"
    )
    assert problems[1].startswith("index.vector_bucket: String should have at most 63 characters")
