"""The ``novaflow`` command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_WORKDIR = Path(".novaflow")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novaflow",
        description=(
            "Keep an S3 Vectors index of a mixed-media corpus fresh with Amazon Nova "
            "Multimodal Embeddings."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "emulator",
        help="run the local stand-in for S3, Bedrock (Nova) and S3 Vectors on 127.0.0.1",
        add_help=False,
    )
    demo = commands.add_parser(
        "demo", help="run novaflow end to end on the local stand-in, with generated media"
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR / "demo",
        help="where the demo keeps its state (default: %(default)s)",
    )
    return parser


def run_demo(workdir: Path) -> int:
    """Start the stand-in in this process and run the API tour against it."""
    from emulator.app import Emulator, EmulatorSettings
    from emulator.misbehaviour import AsyncJobBehaviour
    from tasks.stand_in_tour import run_tour

    started = time.monotonic()
    settings = EmulatorSettings(
        state_dir=workdir / "emulator", async_jobs=AsyncJobBehaviour(job_seconds=1.0)
    )
    with Emulator(settings) as emulator:
        # The tour uses plain boto3 clients: only the standard variables point them here.
        os.environ.update(emulator.environment())
        print(f"novaflow demo: local stand-in on {emulator.endpoints.bedrock_runtime} and friends")
        run_tour()
        calls = emulator.stats()
    model_calls = sum(calls["bedrock-runtime"]["calls"].values())
    vector_calls = sum(calls["s3vectors"]["calls"].values())
    print(
        f"novaflow demo: done in {time.monotonic() - started:.1f} s "
        f"({model_calls} Bedrock calls, {vector_calls} S3 Vectors calls)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novaflow`` console command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "emulator":
        from emulator.__main__ import main as emulator_main

        return emulator_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "demo":
        return run_demo(args.workdir)
    raise AssertionError(f"unhandled command {args.command}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
