"""Headless Chromium driven over the DevTools protocol (tornado's websocket client: no extra
package): open a page, evaluate JavaScript in it, take a PNG screenshot. For looking at the
Dask dashboard and the HTML report the way a user does; Bokeh draws after load, so callers poll.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def chromium() -> str | None:
    """The Chromium binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, url: str, width: int = 1400, height: int = 1000):
        self.url, self.size = url, (width, height)

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        args = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*",
                f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}", self.url]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self.loop = asyncio.new_event_loop()
        self._id = 0
        self.ws = self.loop.run_until_complete(self._connect())
        return self

    async def _connect(self):
        from tornado.websocket import websocket_connect

        return await websocket_connect(self.ws_url, max_message_size=256 * 1024 * 1024)

    async def _call(self, method: str, params: dict):
        self._id += 1
        my = self._id
        await self.ws.write_message(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(self.ws.read_message(), 60)
            if msg is None:
                raise RuntimeError("chromium closed the DevTools connection")
            data = json.loads(msg)
            if data.get("id") == my:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data["result"]

    def call(self, method: str, **params):
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able values)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    def screenshot(self, path) -> Path:
        """A PNG of the page as drawn now."""
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path = Path(path)
        path.write_bytes(png)
        return path

    def __exit__(self, *exc):
        try:
            self.ws.close()
            self.loop.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


# Every ColumnDataSource of the page's Bokeh documents that has `name` and `done` columns (the
# dashboard's task-progress bars): [{name: [...], done: ["3 / 130", ...]}].
PROGRESS_JS = """
(() => {
  if (!window.Bokeh || !Bokeh.documents) return null;
  const out = [];
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      const raw = m.data;
      if (!raw) continue;
      const d = raw instanceof Map ? Object.fromEntries(raw) : raw;
      if (d.name && d.done) out.push({name: Array.from(d.name), done: Array.from(d.done)});
    }
  }
  return out;
})()
"""


def shots_dir() -> Path | None:
    """ESCAPE_SWEEP_SHOTS: a folder where tests also leave their screenshots for a person to look at."""
    d = os.environ.get("ESCAPE_SWEEP_SHOTS")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)
