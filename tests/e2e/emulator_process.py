"""``novaflow emulator`` started as a separate process, as a user starts it in a terminal."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
FREE_PORTS = ("--s3-port", "0", "--bedrock-port", "0", "--s3vectors-port", "0")


@contextmanager
def running_emulator(
    options: Sequence[str], env: Mapping[str, str], cwd: Path
) -> Iterator[dict[str, str]]:
    """Start ``novaflow emulator`` on free ports with ``options``; yield the variables it printed
    (name → value, as a shell would read the ``export`` lines); stop it with SIGTERM after and
    check it exited cleanly."""
    process = subprocess.Popen(
        [str(BIN / "novaflow"), "emulator", *FREE_PORTS, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=cwd,
    )
    variables: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            variables[name] = shlex.split(value)[0]
        if line.startswith("# state:"):
            break
    try:
        if not variables:
            assert process.stderr is not None
            raise AssertionError(f"novaflow emulator printed nothing: {process.stderr.read()}")
        yield variables
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
