"""Fixtures of the end-to-end tests: the commands as a user runs them, in separate processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.emulator_process import novaflow_env, running_emulator


@pytest.fixture
def slow_stand_in(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A separate ``novaflow emulator`` whose model calls take 0.1 s, outliving any one run."""
    options = ("--in-memory", "--latency", "0.1")
    with running_emulator(options, novaflow_env(tmp_path), tmp_path) as env:
        yield env
