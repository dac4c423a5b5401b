"""Which endpoints a command talks to: the embedded stand-in, or whatever the AWS environment
names. The pipeline itself never knows: it builds ordinary boto3 clients either way."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def stand_in_state_dir(store: str) -> Path:
    """Where the embedded stand-in keeps its indexes: beside a local store, so a later
    ``novaflow search`` with the same ``--store`` finds what ``novaflow run`` loaded."""
    if "://" in store:
        return Path(".novaflow/emulator")
    return Path(store).expanduser().resolve().parent / "emulator"


@contextmanager
def backend_environment(backend: str, store: Path | str) -> Iterator[None]:
    """With ``local``, run the stand-in in this process and point the standard
    ``AWS_ENDPOINT_URL_*`` variables (and dummy credentials) at it for the duration; with
    ``aws``, change nothing."""
    if backend == "aws":
        yield
        return
    # Imported only for the embedded stand-in: moto, werkzeug, Flask, SciPy and the rest cost
    # ~0.5 s of CPU and ~40 MB that a run against AWS (or a separate stand-in) never uses.
    from emulator.app import Emulator, EmulatorSettings
    from emulator.misbehaviour import AsyncJobBehaviour

    settings = EmulatorSettings(
        state_dir=stand_in_state_dir(str(store)), async_jobs=AsyncJobBehaviour(job_seconds=1.0)
    )
    with Emulator(settings) as stand_in, environment_variables(stand_in.environment()):
        yield


@contextmanager
def environment_variables(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in this process's environment for the ``with`` block, then put back
    what was there (unset where nothing was)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
