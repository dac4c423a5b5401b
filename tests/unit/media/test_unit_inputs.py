"""A shard's work items: text units need no page renderer (making one imports PyMuPDF), and a
shard with PDF pages cannot go without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.media.unit_inputs import unit_payloads
from tasks.records import Unit
from tasks.settings import NovaflowSettings


def _text_unit(path: Path, n: int) -> Unit:
    return Unit(
        key=f"note-{n}#chunk=0",
        item_id=f"note-{n}",
        uri=str(path),
        kind="text_chunk",
        char_start=0,
        char_end=len(path.read_text()),
    )


def test_text_units_are_prepared_without_a_renderer(tmp_path: Path) -> None:
    units = []
    for n in range(3):
        path = tmp_path / f"note-{n}.txt"
        path.write_text(f"note {n}: sourdough")
        units.append(_text_unit(path, n))
    work = list(unit_payloads(units, NovaflowSettings(store=str(tmp_path / "store")), None))
    assert [key for key, _, _ in work] == [unit.key for unit in units]
    assert [make().text for _, _, make in work] == [f"note {n}: sourdough" for n in range(3)]


def test_pdf_pages_without_a_renderer_are_refused(tmp_path: Path) -> None:
    page = Unit(key="doc#page=1", item_id="doc", uri=str(tmp_path / "doc.pdf"), kind="pdf_page")
    with pytest.raises(ValueError, match="page renderer"):
        list(unit_payloads([page], NovaflowSettings(store=str(tmp_path / "store")), None))
