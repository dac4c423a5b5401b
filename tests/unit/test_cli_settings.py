"""The settings a command runs with: after a backfill switched the store's live index, commands
that name no index follow the switch; naming one on the command line or in the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import _parser, _settings
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
