"""The temporary Prefect server a command starts when no PREFECT_API_URL is set."""

from __future__ import annotations

import pytest
from prefect.settings import Settings

from flows.prefect_server import _without_block_registration


def test_a_temporary_server_registers_no_block_types_by_default() -> None:
    variables = _without_block_registration(Settings())

    assert variables == {
        "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
        "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
    }


@pytest.mark.parametrize("register", ["true", "false"])
def test_block_registration_the_settings_ask_for_is_left_to_them(
    monkeypatch: pytest.MonkeyPatch, register: str
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_REGISTER_BLOCKS_ON_START", register)

    assert _without_block_registration(Settings()) == {}
