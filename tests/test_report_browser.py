"""report.html in a real browser: headless Chromium (Debian's `chromium`, which .ci/run installs) opens an
offline run's report; over the DevTools protocol the test checks that the recommendation box, the
"estimates" label and the error bands are on screen (laid out, not hidden, not covered, in the first
viewport), that the copy button appeared (the inline script ran), that every plot decoded at twice its
displayed size, and takes a screenshot (left in the test's tmp_path for people to look at)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from slaprof.steps.core.store import LocalStore
from slaprof.steps.dag.fit import fit_profiles
from slaprof.steps.fitting.report import write_report
from slaprof.steps.perf.error_band import HELD_OUT
from tests.test_fit import make_plan_for, make_profile, make_request

VIEWPORT = (1280, 1000)
START_TIMEOUT_S = 60.0
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
]

# Runs in the page: is each element laid out, not hidden, inside the first viewport and on top
# at its centre (not covered by something else)?
PROBE = """(() => {
  const shown = (el) => {
    if (!el) return false;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1 || cs.visibility !== 'visible' || cs.display === 'none') return false;
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
    const top = document.elementFromPoint(x, y);
    return top === el || el.contains(top);
  };
  const one = (sel) => { const el = document.querySelector(sel); return {shown: shown(el), text: el ? el.innerText : null}; };
  return JSON.stringify({
    ready: location.protocol === 'file:' && document.readyState === 'complete',
    recommendation: one('#recommendation'),
    lines: one('#rec-lines'),
    copy: one('button.copy'),
    badge: one('#evidence'),
    total: one('#total-gpus'),
    bands: [...document.querySelectorAll('#recommendation .band')].map((el) => ({shown: shown(el), text: el.innerText})),
    images: [...document.images].map((img) => [img.complete, img.naturalWidth, img.width]),
  });
})()"""


def chromium() -> str:
    path = os.environ.get("SLAPROF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(path).is_file(), (
        "headless Chromium not found: install Debian's package (apt-get install -y chromium), as .ci/run does"
    )
    return path


class _Cdp:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=START_TIMEOUT_S)
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]


async def _devtools_port(profile: Path, proc: subprocess.Popen) -> int:
    port_file = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while not port_file.is_file() or not port_file.read_text().strip():
        assert proc.poll() is None, f"chromium exited with {proc.returncode}"
        assert loop.time() < deadline, "chromium did not open its DevTools port"
        await asyncio.sleep(0.1)
    return int(port_file.read_text().splitlines()[0])


async def inspect(page: Path, profile: Path, screenshot: Path) -> dict[str, Any]:
    proc = subprocess.Popen(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", page.as_uri()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = await _devtools_port(profile, proc)
        async with aiohttp.ClientSession() as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + START_TIMEOUT_S
            while True:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page" and t["url"].startswith("file:")]
                if pages or loop.time() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert pages, "chromium opened no page for the report"
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _Cdp(ws)
                while True:
                    state = json.loads(await cdp.evaluate(PROBE))
                    if state["ready"] and all(img[0] for img in state["images"]):
                        break
                    assert loop.time() < deadline, "the report did not finish loading"
                    await asyncio.sleep(0.1)
                shot = await cdp.call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return state
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_report_reads_right_in_headless_chromium(tmp_path: Path):
    request = make_request(ttft_ms=500.0, itl_ms=30.0, request_rate=5.0)
    fit = fit_profiles(request, make_plan_for(["tp1", "tp2", "tp4"]), [make_profile(c) for c in ("tp1", "tp2", "tp4")])
    write_report(LocalStore(tmp_path / "run"), fit, request)
    screenshot = tmp_path / "report.png"
    state = asyncio.run(inspect(tmp_path / "run" / "report.html", tmp_path / "chromium-profile", screenshot))

    assert state["recommendation"]["shown"] and state["lines"]["shown"]
    assert state["lines"]["text"].splitlines() == fit.selection.recommendation
    assert state["copy"]["shown"] and state["copy"]["text"] == "Copy"  # the script ran and showed it
    assert state["badge"]["shown"] and state["badge"]["text"] == "Offline estimates: nothing was measured"
    band = HELD_OUT["builtin"]
    assert [b["text"] for b in state["bands"]] == [f"±{band.ttft_mape_pct:.0f}%", f"±{band.itl_mape_pct:.0f}%"]
    assert all(b["shown"] for b in state["bands"])
    assert state["total"]["shown"] and f"{fit.selection.replicas.total_gpus} GPUs" in state["total"]["text"]
    assert state["images"] and all(natural == 2 * shown for _done, natural, shown in state["images"])
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") == VIEWPORT[0]
