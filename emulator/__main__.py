"""``python -m emulator``: run the stand-in in the foreground and print how to reach it."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import AsyncJobBehaviour, BatchJobBehaviour, Misbehaviour
from emulator.s3vectors.service import SearchSettings

DEFAULT_PORTS = {"s3": 8700, "bedrock": 8701, "s3vectors": 8702, "bedrock-control": 8703}
SYNC_OPERATIONS = frozenset({"InvokeModel", "StartAsyncInvoke"})


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m emulator`` and ``novaflow emulator``."""
    parser = argparse.ArgumentParser(
        prog="novaflow emulator",
        description=(
            "Run the local stand-in for S3 (moto), Bedrock runtime (Nova Multimodal Embeddings), "
            "Bedrock batch inference and S3 Vectors on 127.0.0.1, and print the variables that "
            "point boto3 at it."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--s3-port", type=int, default=DEFAULT_PORTS["s3"])
    parser.add_argument("--bedrock-port", type=int, default=DEFAULT_PORTS["bedrock"])
    parser.add_argument("--s3vectors-port", type=int, default=DEFAULT_PORTS["s3vectors"])
    parser.add_argument(
        "--bedrock-control-port",
        type=int,
        help=f"Bedrock control plane (batch inference); default {DEFAULT_PORTS['bedrock-control']}"
        ", or a free port when --bedrock-port is 0",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".novaflow/emulator"),
        help="keeps vector indexes and async jobs across restarts (default: %(default)s)",
    )
    parser.add_argument("--in-memory", action="store_true", help="keep no state on disk")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--env-file", type=Path, help="also write the export lines to this file")
    search = parser.add_argument_group("vector search")
    search.add_argument(
        "--approximate",
        action="store_true",
        help="search only the nearest partitions of a clustered index (recall below 1)",
    )
    search.add_argument("--partitions", type=int, default=16)
    search.add_argument("--probe", type=int, default=2, help="partitions searched per query")
    search.add_argument(
        "--no-write-limits",
        action="store_true",
        help="do not enforce S3 Vectors' per-index write rate (1,000 requests and 2,500 vectors/s)",
    )
    faults = parser.add_argument_group("misbehaviour (seeded, reproducible)")
    faults.add_argument("--seed", type=int, default=0)
    faults.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to each model call"
    )
    faults.add_argument(
        "--requests-per-second",
        type=float,
        default=0.0,
        help="InvokeModel+StartAsyncInvoke quota; beyond it calls get ThrottlingException",
    )
    faults.add_argument("--server-error-rate", type=float, default=0.0, help="share of 5xx answers")
    faults.add_argument(
        "--status-throttle-rate",
        type=float,
        default=0.0,
        help="share of GetAsyncInvoke calls answered with ThrottlingException",
    )
    faults.add_argument("--job-seconds", type=float, default=2.0, help="how long an async job runs")
    faults.add_argument("--job-failure-rate", type=float, default=0.0)
    faults.add_argument("--job-partial-rate", type=float, default=0.0)
    faults.add_argument(
        "--batch-job-seconds", type=float, default=2.0, help="how long a batch job runs"
    )
    faults.add_argument("--batch-failure-rate", type=float, default=0.0)
    faults.add_argument("--batch-partial-rate", type=float, default=0.0)
    faults.add_argument(
        "--faults-file",
        type=Path,
        help='JSON {"bedrock": [rules], "s3vectors": [rules], "bedrock_control": [rules], '
        '"async_jobs": {}, "batch_jobs": {}}; beats flags',
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """Turn parsed arguments into settings; ValueError for contradictory or invalid values."""
    bedrock_rules: list[Misbehaviour] = []
    if args.latency or args.requests_per_second or args.server_error_rate:
        bedrock_rules.append(
            Misbehaviour(
                operations=SYNC_OPERATIONS,
                seed=args.seed,
                latency_seconds=args.latency,
                requests_per_second=args.requests_per_second,
                server_error_rate=args.server_error_rate,
            )
        )
    if args.status_throttle_rate:
        bedrock_rules.append(
            Misbehaviour(
                operations=frozenset({"GetAsyncInvoke"}),
                seed=args.seed,
                throttle_rate=args.status_throttle_rate,
            )
        )
    s3vectors_rules: list[Misbehaviour] = []
    async_jobs = AsyncJobBehaviour(
        seed=args.seed,
        job_seconds=args.job_seconds,
        failure_rate=args.job_failure_rate,
        partial_rate=args.job_partial_rate,
    )
    batch_jobs = BatchJobBehaviour(
        seed=args.seed,
        job_seconds=args.batch_job_seconds,
        failure_rate=args.batch_failure_rate,
        partial_rate=args.batch_partial_rate,
    )
    control_rules: list[Misbehaviour] = []
    if args.faults_file is not None:
        document = json.loads(args.faults_file.read_text())
        bedrock_rules = [Misbehaviour.from_json(rule) for rule in document.get("bedrock", [])]
        s3vectors_rules = [Misbehaviour.from_json(rule) for rule in document.get("s3vectors", [])]
        control_rules = [
            Misbehaviour.from_json(rule) for rule in document.get("bedrock_control", [])
        ]
        if "async_jobs" in document:
            async_jobs = AsyncJobBehaviour.from_json(document["async_jobs"])
        if "batch_jobs" in document:
            batch_jobs = BatchJobBehaviour.from_json(document["batch_jobs"])
    control_port = args.bedrock_control_port
    if control_port is None:
        control_port = 0 if args.bedrock_port == 0 else DEFAULT_PORTS["bedrock-control"]
    return EmulatorSettings(
        host=args.host,
        s3_port=args.s3_port,
        bedrock_port=args.bedrock_port,
        s3vectors_port=args.s3vectors_port,
        bedrock_control_port=control_port,
        state_dir=None if args.in_memory else args.state_dir,
        region=args.region,
        search=SearchSettings(
            mode="approximate" if args.approximate else "exact",
            partitions=args.partitions,
            probe=args.probe,
            seed=args.seed,
        ),
        enforce_write_limits=not args.no_write_limits,
        bedrock_faults=tuple(bedrock_rules),
        s3vectors_faults=tuple(s3vectors_rules),
        async_jobs=async_jobs,
        bedrock_control_faults=tuple(control_rules),
        batch_jobs=batch_jobs,
    )


def export_lines(environment: dict[str, str]) -> list[str]:
    """``export NAME=value`` lines for a POSIX shell."""
    return [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run until interrupted (Ctrl-C or SIGTERM); prints the variables first."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        emulator = Emulator(settings).start()
    except OSError as exc:
        print(
            f"novaflow emulator: cannot listen: {exc} (is another stand-in running?)",
            file=sys.stderr,
        )
        return 1
    try:
        lines = export_lines(emulator.environment())
        if args.env_file is not None:
            args.env_file.parent.mkdir(parents=True, exist_ok=True)
            args.env_file.write_text("\n".join(lines) + "\n")
        print("# novaflow stand-in running; point boto3 and the AWS CLI at it with:")
        print("\n".join(lines))
        where = "memory only" if settings.state_dir is None else str(settings.state_dir)
        print(f"# state: {where}. Stop with Ctrl-C.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
