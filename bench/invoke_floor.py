"""The floor of client CPU per synchronous text unit: one bare boto3 ``InvokeModel`` call.

Run as a process of its own with the environment ``novaflow run`` gets (``AWS_ENDPOINT_URL_
BEDROCK_RUNTIME`` and the rest pointing at the stand-in), ``bench/bench_client_cost.py`` runs it
beside novaflow's runs to tell novaflow's own cost from what any client pays on the same machine
against the same stand-in. It builds the Bedrock runtime client as novaflow's embed stage does
(``tasks.aws_clients.bedrock_runtime_client``, a pool for ``max(1, threads) ×
SHARDS_IN_PARALLEL`` connections), makes one warm-up call, then ``--calls`` calls of
``invoke_model`` with a Nova Multimodal Embeddings SINGLE_EMBEDDING body of a ``--chars``-long
text (built by ``tasks.nova.requests.invoke_model_body`` and encoded as novaflow encodes it),
each followed by ``response["body"].read()`` and nothing else: no parse, no pacing, no records.
``--threads 0`` makes the calls one after another in the calling thread; ``--threads T`` maps
them over a ``ThreadPoolExecutor(T)``.

Prints one JSON line: ``{"calls": N, "threads": T, "cpu_ms_per_call": ...}``, where
``cpu_ms_per_call`` is the process's CPU (``time.process_time()``: user + system of all its
threads) over the N calls only, divided by N. Imports, the client's construction and the
warm-up call are left out. The stand-in's CPU, in its own process, is not counted.

Run: ``.venv/bin/python bench/invoke_floor.py --calls 2000 --threads 8 [--chars 300]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from botocore.client import BaseClient  # noqa: E402

from tasks.aws_clients import bedrock_runtime_client  # noqa: E402
from tasks.nova.requests import Payload, invoke_model_body  # noqa: E402
from tasks.settings import SHARDS_IN_PARALLEL, NovaflowSettings  # noqa: E402

DEFAULT_CHARS = 300
WORDS = ("river", "stone", "harvest", "lantern", "orbit", "copper", "meadow", "signal")


def request_body(chars: int) -> tuple[str, bytes]:
    """The model id and the InvokeModel body for a text of ``chars`` characters, as novaflow
    builds and encodes it for a text unit."""
    settings = NovaflowSettings().embedding
    text = " ".join(WORDS[i % len(WORDS)] for i in range(chars))[:chars]
    document = invoke_model_body(Payload(kind="text", text=text), settings)
    return settings.model_id, json.dumps(document).encode("utf-8")


def cpu_ms_per_call(
    client: BaseClient, model_id: str, body: bytes, calls: int, threads: int
) -> float:
    """CPU milliseconds of this process per call over ``calls`` calls, after one warm-up."""

    def call(_: int = 0) -> int:
        response = client.invoke_model(
            modelId=model_id,
            body=body,
            contentType="application/json",
            accept="application/json",
        )
        return len(response["body"].read())

    call()
    if threads == 0:
        started = time.process_time()
        for n in range(calls):
            call(n)
        return 1000 * (time.process_time() - started) / calls
    with ThreadPoolExecutor(threads) as pool:
        started = time.process_time()
        for _ in pool.map(call, range(calls)):
            pass
        return 1000 * (time.process_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, required=True, help="calls measured (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="0: the calling thread; T: a pool")
    parser.add_argument("--chars", type=int, default=DEFAULT_CHARS, help="text length per call")
    args = parser.parse_args()
    if args.calls < 1 or args.threads < 0 or args.chars < 1:
        parser.error("--calls and --chars must be at least 1, --threads at least 0")
    client = bedrock_runtime_client(max(1, args.threads) * SHARDS_IN_PARALLEL)
    model_id, body = request_body(args.chars)
    cpu = cpu_ms_per_call(client, model_id, body, args.calls, args.threads)
    print(json.dumps({"calls": args.calls, "threads": args.threads, "cpu_ms_per_call": cpu}))


if __name__ == "__main__":
    main()
