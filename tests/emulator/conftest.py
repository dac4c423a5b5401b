"""Fixtures shared by the stand-in's async-job tests (defined in ``nova_job_helpers``); a module
that defines a fixture of the same name uses its own."""

from tests.emulator.nova_job_helpers import (  # noqa: F401 (registered as fixtures)
    clock,
    long_clip,
    long_tone,
    make_runtime,
    runtime,
    store,
)
