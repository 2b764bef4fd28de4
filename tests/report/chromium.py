"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages
ended by NUL, read by Chromium from fd 3 and written to fd 4), so that a test needs no websocket client.

``render(page)`` opens a local HTML file, waits for its load event, and returns what the rendered page says
about itself (``PROBE``) and every URL it requested. ``screenshot(page, png)`` saves a picture of it.
"""
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage"]
# Evaluated in the loaded page: each image's state and the tables' headings and header rows.
PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                  scheme: i.src.split(':')[0], section: i.closest('section').id})),
  tables: Array.from(document.querySelectorAll('section')).map(s => ({
    id: s.id, question: s.querySelector('h2').textContent,
    header: Array.from(s.querySelectorAll('thead th')).map(th => th.textContent),
    rows: s.querySelectorAll('tbody tr').length,
    sticky: getComputedStyle(s.querySelector('thead th')).position})),
  scripts: document.scripts.length,
  title: document.title})"""


def executable() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One Chromium process; ``call`` sends a DevTools command and returns its result, keeping events."""

    def __init__(self, timeout: float = 60.0):
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-")
        to_child, self._out = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._in, from_child = os.pipe()  # Chromium writes replies on fd 4, we read them
        high = [os.dup(fd) for fd in (to_child, from_child)]  # out of the way of fds 3 and 4
        for fd in (to_child, from_child):
            os.close(fd)

        def child():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable(), *FLAGS, f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=child)  # kept open once child() made them
        for fd in high:
            os.close(fd)
        self.timeout, self.events, self._buffer, self._id = timeout, [], b"", 0

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer over --remote-debugging-pipe")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: Optional[str] = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def open(self, url: str) -> str:
        """A new tab at about:blank with the network recorded, then ``url``; returns its session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session)
        self.call("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        return session

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._out, self._in):
            os.close(fd)
        self.profile.cleanup()


def render(page: Path, timeout: float = 60.0) -> dict:
    """``PROBE`` of the loaded page, plus ``requests``: every URL the page asked for (from the Network domain)."""
    browser = Browser(timeout)
    try:
        session = browser.open(page.resolve().as_uri())
        value = browser.call("Runtime.evaluate", session, expression=PROBE, returnByValue=True)["result"]["value"]
        result = json.loads(value)
        result["requests"] = [e["params"]["request"]["url"] for e in browser.events
                              if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
        return result
    finally:
        browser.close()


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1400) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run([executable(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
