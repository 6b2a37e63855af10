"""report.html in a real browser: headless Chromium driven over the DevTools protocol.

Every image must have loaded (naturalWidth > 0), every expected table must be there, and the
page must log no console error, exception or failed load. A screenshot of the whole page is
saved under the test's temporary folder (``report.png``; the path is printed).

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it when missing). Without it
the test is skipped on a developer machine and fails under CI (``CI`` set): a browser check
that silently does not run is worse than none.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_report import TABLE_IDS, report_params, write_all

from pruneflow.report import build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWPORT = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}


def _browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    message = (
        "headless Chromium not found (looked for: " + ", ".join(BROWSERS) + "); "
        "`apt-get install -y chromium` (.ci/run does it)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser test: {message}")
    pytest.skip(f"{message}; under CI this test fails instead")


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None, proxy=None, open_timeout=20)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        if any(e["method"] == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _page_socket(profile: Path, chromium: subprocess.Popen, log: Path) -> str:
    """The page target's websocket URL, once Chromium has written its DevToolsActivePort."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if chromium.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"Chromium did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    for _ in range(100):
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            pages = [t for t in json.load(reply) if t["type"] == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise AssertionError("Chromium opened no page")


PROBE = """
(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  return {
    images: Array.from(document.images).map(i => ({
      alt: i.alt.slice(0, 60), complete: i.complete, width: i.naturalWidth,
      height: i.naturalHeight, shown: i.getBoundingClientRect().width,
      data: i.currentSrc.startsWith('data:image/png;base64,')})),
    tables: Array.from(document.querySelectorAll('table')).map(t => ({
      id: t.id, rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
      caption: t.caption ? t.caption.textContent : ''})),
    scripts: document.scripts.length,
    resources: performance.getEntriesByType('resource').map(r => r.name.slice(0, 80)),
    title: document.title,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
  };
})()
"""


def test_report_html_in_headless_chromium(tmp_path):
    binary = _browser()
    params = report_params(tmp_path)
    write_all(params)
    html = build_report(params).html
    profile, log = tmp_path / "chromium-profile", tmp_path / "chromium.log"
    with open(log, "wb") as sink:
        chromium = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--no-sandbox",  # CI and containers run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "about:blank",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        tools = DevTools(_page_socket(profile, chromium, log))
        try:
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", **VIEWPORT)
            tools.events.clear()
            tools.call("Page.navigate", url=html.resolve().as_uri())
            tools.wait_for("Page.loadEventFired", timeout=60)
            page = tools.evaluate(PROBE)
            shot = tools.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": page["width"], "height": page["height"], "scale": 1},
                timeout=120,
            )
            screenshot = tmp_path / "report.png"
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            print(f"screenshot: {screenshot}")
            errors = [
                e
                for e in tools.events
                if e["method"] == "Runtime.exceptionThrown"
                or (
                    e["method"] == "Runtime.consoleAPICalled"
                    and e["params"]["type"] in ("error", "assert")
                )
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
            ]
        finally:
            tools.close()
    finally:
        chromium.terminate()
        try:
            chromium.wait(timeout=20)
        except subprocess.TimeoutExpired:
            chromium.kill()
            chromium.wait()

    assert errors == [], errors
    assert page["title"] == "pruneflow report"
    assert page["scripts"] == 0 and page["resources"] == []  # nothing fetched, nothing run
    assert len(page["images"]) >= 12
    for image in page["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
        assert image["data"] and 0 < image["shown"] <= VIEWPORT["width"], image
    tables = {t["id"]: t for t in page["tables"]}
    for key in TABLE_IDS:
        assert tables.get(f"table-{key}", {}).get("rows", 0) > 0, (key, sorted(tables))
    # readable without horizontal scrolling at a laptop's width
    assert page["width"] <= VIEWPORT["width"]
    assert screenshot.stat().st_size > 50_000
