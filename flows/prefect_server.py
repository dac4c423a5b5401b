"""The Prefect API a novaflow command's flow runs talk to: the one the settings name, or else a
temporary server of novaflow's own starting, which lives exactly as long as the command."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any


def ensure_prefect_api() -> None:
    """Give the command's flow runs a Prefect API: the one the settings name, or else a
    temporary server that lives as long as this process.

    Without an API, Prefect would start the same temporary server itself (``SubprocessASGIServer``
    from ``prefect.server.api.server``), but importing that module costs this process ~1.4 s of
    CPU and ~75 MB that only the server process needs. So novaflow starts Prefect's own server
    command (``python -m uvicorn --factory prefect.server.api.server:create_app``, with the same
    settings and the same ephemeral-server variables) and points ``PREFECT_API_URL`` at it for
    the rest of the process. As Prefect does, the server is stopped by an ``atexit`` hook
    registered before any of Prefect's log and event workers exist, so it runs after they have
    delivered what they hold; and it gets the kernel's parent-death signal, so it ends with
    novaflow even by SIGKILL."""
    from prefect.settings import PREFECT_API_URL, get_current_settings

    settings = get_current_settings()
    if PREFECT_API_URL.value() or not settings.server.ephemeral.enabled:
        return  # a configured server, or none allowed: Prefect reports that itself
    import prefect.context

    server = _start_prefect_server(settings)
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url
    prefect.context.refresh_global_settings_context()


@dataclass
class _PrefectServer:
    """A temporary Prefect API server started by :func:`_start_prefect_server`."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def api_url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        """Stop the server as Prefect stops its own: SIGTERM, then SIGKILL after 5 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_PORT_IN_USE_EXIT = 3  # uvicorn's exit status when it cannot bind its port


def _start_prefect_server(settings: Any) -> _PrefectServer:
    """Start Prefect's temporary API server on a free loopback port and wait until it answers
    its health check (``server.ephemeral.startup_timeout_seconds``)."""
    import prefect

    from tasks.child_lifetime import popen_dying_with_this_process

    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    env = {
        **_without_block_registration(settings),
        **os.environ,
        # What Prefect's SubprocessASGIServer sets: no UI, the server knows it is temporary.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **settings.to_environment_variables(exclude_unset=True),
    }
    deadline = time.monotonic() + settings.server.ephemeral.startup_timeout_seconds
    while True:
        port = _free_port()
        process = popen_dying_with_this_process([*command, "--port", str(port)], env=env)
        server = _PrefectServer(process, port)
        try:
            while (status := process.poll()) is None:
                if _answers_health_check(server.api_url):
                    return server
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Prefect's temporary server did not answer on port {port} within "
                        f"{settings.server.ephemeral.startup_timeout_seconds} s"
                    )
                time.sleep(0.1)
        except BaseException:
            server.stop()
            raise
        if status != _PORT_IN_USE_EXIT:
            raise RuntimeError(f"Prefect's temporary server exited with status {status}")
        # Another process bound the port between the probe and uvicorn: try another one.


def _without_block_registration(settings: Any) -> dict[str, str]:
    """The variables that keep the temporary server from registering block types, unless the
    settings ask for registration themselves. novaflow keeps no blocks, and registering them
    imports every installed Prefect collection first (prefect-dask brings distributed): ~0.3 s
    of the server's CPU and ~26 MB at every command."""
    if "register_blocks_on_start" in settings.server.model_fields_set:
        return {}
    return {
        "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
        # Memoised registration would import the collections anyway, to hash what they hold.
        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers_health_check(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False
