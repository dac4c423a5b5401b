"""``report.html`` as a person sees it: headless Chromium (Debian's ``chromium``) draws every plot,
and opening the page makes no network request.

Where the plots are: a probe copy of the page, with a script appended that writes each plot's box
(document coordinates) into a ``data-box`` attribute, is loaded with ``--dump-dom``. Attributes do
not change the layout, so the boxes hold for the page itself, which is then screenshotted without
any script, at the same width, tall enough for the whole document and at device scale 1 (a CSS
pixel is an image pixel). A box counts as drawn when it holds a series colour of the palette and
more than a few colours; the same page with every plot emptied (same sizes, same boxes) fails that.

No network request: every run points Chromium at a closed loopback port as its proxy and maps every
host name to NOTFOUND, so nothing leaves the machine whatever a page references; Chromium's net log
still records each request it starts. The page's own requests are those whose network isolation
key is the ``file://`` page; Chromium's background requests (component updates, time checks) have
another key and are left aside. A page that references ``http://example.com/x.png`` is caught.

Every Chromium process of a run is ended before the run returns: its process group, and the crash
handlers that leave the group (found by the run's directory in their command line).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.report.evaluation.html import evaluation_html
from tasks.report.evaluation.plots import PALETTE
from tests.unit.report.sample_reports import FULL_PLOTS, full_report

CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="headless Chromium is not installed (Debian package `chromium`, /usr/bin/chromium; "
        "`make test` installs it)",
    ),
]

WIDTH = 1200
# A script for the probe copy only: the report itself has none.
PROBE = """<script>
addEventListener("load", () => {
  for (const svg of document.querySelectorAll("svg.plot")) {
    const r = svg.getBoundingClientRect();
    svg.setAttribute("data-box", [r.left + scrollX, r.top + scrollY, r.width, r.height].join(" "));
  }
  document.documentElement.setAttribute("data-height", document.documentElement.scrollHeight);
});
</script>"""
SERIES_COLOURS = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:7]]


@dataclass(frozen=True)
class Box:
    left: float
    top: float
    width: float
    height: float

    def inside(self, margin: int) -> tuple[int, int, int, int]:
        """The box in whole pixels, less ``margin`` on each side (the plot's border)."""
        return (
            round(self.left) + margin,
            round(self.top) + margin,
            round(self.left + self.width) - margin,
            round(self.top + self.height) - margin,
        )


@dataclass(frozen=True)
class BrowserRun:
    """What one Chromium run printed, and the page's own requests from its net log."""

    stdout: str
    page_requests: tuple[str, ...]


def _browse(workdir: Path, page: Path, *mode: str) -> BrowserRun:
    """One headless Chromium run on ``page`` (``mode``: ``--dump-dom`` or a screenshot), with no
    way out to the network; every process it started has ended when this returns."""
    assert CHROMIUM is not None
    run = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
    (run / "home").mkdir()
    netlog = run / "netlog.json"
    with socket.socket() as closed:
        # Bound but never listening: a connection to it is refused, and no one else can take it.
        closed.bind(("127.0.0.1", 0))
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={run / 'profile'}",
            f"--proxy-server=127.0.0.1:{closed.getsockname()[1]}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--log-net-log={netlog}",
            "--virtual-time-budget=5000",
            *mode,
            page.as_uri(),
        ]
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run / "home")}
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            _end(process, str(run))
    assert _survivors(process.pid, str(run)) == []
    assert process.returncode == 0, stderr[-3000:]
    return BrowserRun(stdout, _page_requests(netlog))


def _end(process: subprocess.Popen[str], marker: str) -> None:
    """Kill the run's process group and any process naming the run's directory, and wait until
    each has ended (a pidfd becomes readable when its process exits)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    for pid in _survivors(process.pid, marker):
        try:
            handle = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            select.select([handle], [], [], 30)
        finally:
            os.close(handle)


def _survivors(group: int, marker: str) -> list[int]:
    """Live (not zombie) processes in ``group`` or whose command line names ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z" and (int(pgrp) == group or marker in command):
            found.append(int(entry.name))
    return found


def _page_requests(netlog: Path) -> tuple[str, ...]:
    """The URLs of the requests the page itself started (its network isolation key is the
    ``file://`` page), other than ``file:`` and ``data:`` ones."""
    log = _read_netlog(netlog)
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:
            continue
        if "file://" in str(params.get("network_isolation_key", "")):
            urls.append(str(params["url"]))
    return tuple(url for url in urls if not url.startswith(("file:", "data:")))


def _read_netlog(netlog: Path) -> dict[str, Any]:
    """The net log; one cut off by a kill lacks its closing brackets, which are added back."""
    text = netlog.read_text()
    try:
        log: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    return log


def _boxes(dom: str) -> dict[str, Box]:
    """Each plot's box, by id, from the probe page's DOM."""
    found = {}
    for tag in re.findall(r"<svg\b[^>]*>", dom):
        plot_id = re.search(r'\bid="([^"]+)"', tag)
        box = re.search(r'\bdata-box="([^"]+)"', tag)
        if plot_id and box:
            found[plot_id.group(1)] = Box(*map(float, box.group(1).split()))
    return found


def _drawn(image: Image.Image, box: Box) -> tuple[int, int]:
    """How many colours the box holds, and how many of its pixels are a series colour."""
    colours = image.crop(box.inside(2)).convert("RGB").getcolors(maxcolors=1 << 24) or []
    series = sum(
        count
        for count, rgb in colours
        if isinstance(rgb, tuple)
        and any(max(abs(a - b) for a, b in zip(rgb, s, strict=True)) <= 12 for s in SERIES_COLOURS)
    )
    return len(colours), series


@dataclass(frozen=True)
class Rendered:
    page: Path
    boxes: dict[str, Box]
    height: int
    screenshot: Image.Image
    page_requests: tuple[str, ...]
    probe_requests: tuple[str, ...]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    """The full sample report written to ``report.html``, its plot boxes and its screenshot."""
    workdir = tmp_path_factory.mktemp("report-browser")
    page = workdir / "report.html"
    page.write_text(evaluation_html(full_report()), encoding="utf-8")
    probe = workdir / "probe.html"
    probe.write_text(page.read_text().replace("</body>", f"{PROBE}</body>"), encoding="utf-8")
    probed = _browse(workdir, probe, f"--window-size={WIDTH},2000", "--dump-dom")
    height = re.search(r'data-height="(\d+)"', probed.stdout)
    assert height, "the probe script did not run"
    png = workdir / "report.png"
    shot = _browse(workdir, page, f"--window-size={WIDTH},{height.group(1)}", f"--screenshot={png}")
    with Image.open(png) as image:
        yield Rendered(
            page,
            _boxes(probed.stdout),
            int(height.group(1)),
            image.convert("RGB"),
            shot.page_requests,
            probed.page_requests,
        )


def test_every_plot_is_drawn_where_the_page_puts_it(rendered: Rendered) -> None:
    assert rendered.screenshot.size == (WIDTH, rendered.height)
    assert set(rendered.boxes) == set(FULL_PLOTS)
    for plot_id, box in rendered.boxes.items():
        assert box.width >= 300
        assert box.height >= 200
        assert box.top + box.height <= rendered.height
        colours, series = _drawn(rendered.screenshot, box)
        assert colours >= 50, plot_id
        assert series >= 200, plot_id


def test_a_page_whose_plots_are_empty_fails_the_drawn_check(
    rendered: Rendered, tmp_path: Path
) -> None:
    def empty(svg: re.Match[str]) -> str:
        return re.sub(r"<svg\b([^>]*)>.*", r"<svg\1></svg>", svg.group(0), flags=re.DOTALL)

    blank = tmp_path / "blank.html"
    blank.write_text(
        re.sub(r"<svg\b.*?</svg>", empty, rendered.page.read_text(), flags=re.DOTALL),
        encoding="utf-8",
    )
    png = tmp_path / "blank.png"
    _browse(tmp_path, blank, f"--window-size={WIDTH},{rendered.height}", f"--screenshot={png}")
    with Image.open(png) as image:
        for plot_id, box in rendered.boxes.items():
            colours, series = _drawn(image.convert("RGB"), box)
            assert colours < 50 or series < 200, plot_id


def test_opening_the_report_makes_no_network_request(rendered: Rendered) -> None:
    assert rendered.page_requests == ()
    assert rendered.probe_requests == ()


@pytest.mark.parametrize(
    ("snippet", "url"),
    [
        ('<img src="http://example.com/x.png" alt="">', "http://example.com/x.png"),
        ('<link rel="stylesheet" href="https://example.com/a.css">', "https://example.com/a.css"),
        (
            "<style>main { background: url(http://example.com/bg.png) }</style>",
            "http://example.com/bg.png",
        ),
    ],
    ids=["img", "stylesheet", "css-url"],
)
def test_the_request_check_catches_a_page_that_references_the_network(
    rendered: Rendered, tmp_path: Path, snippet: str, url: str
) -> None:
    page = tmp_path / "fetching.html"
    page.write_text(
        rendered.page.read_text().replace("</main>", f"{snippet}</main>"), encoding="utf-8"
    )
    png = tmp_path / "fetching.png"
    run = _browse(tmp_path, page, f"--window-size={WIDTH},800", f"--screenshot={png}")
    assert url in run.page_requests
