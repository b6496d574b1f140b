"""The Streamlit example app on real Redis: AppTest (reruns, a restart) and once in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import streamlit as st
import websocket
from chatmemory import RedisChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage
from redis.cluster import RedisCluster
from streamlit.testing.v1 import AppTest

from tests.integration.sdk.conftest import uid
from tests.support.platform import Platform

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "examples" / "streamlit_chat.py"

pytestmark = pytest.mark.parametrize("target", ["REDIS_URL"], indirect=True)


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, platform: Platform, prefix: str) -> dict[str, str]:
    """The app's settings: the platform's Redis, the test's prefix, a fresh session id."""
    env = {
        "CHATMEMORY_URL": platform["REDIS_URL"],
        "CHATMEMORY_URL_KEY_PREFIX": prefix,
        "CHAT_SESSION_ID": uid(),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    st.cache_resource.clear()  # the app caches its ChatMemory per process: start from this test's env
    return env


def chat_texts(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.markdown[0].value) for m in at.chat_message]


def test_messages_survive_reruns_and_a_new_session(
    app_env: dict[str, str], admin: redis.Redis | RedisCluster, prefix: str
) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    at.chat_input[0].set_value("hello there").run()
    first = [("user", "hello there"), ("assistant", "Echo #1: hello there")]
    assert chat_texts(at) == first
    at.run()  # a rerun (what every widget interaction does) shows the same, from the session cache
    assert chat_texts(at) == first
    at.chat_input[0].set_value("again").run()
    assert chat_texts(at)[-1] == ("assistant", "Echo #2: again")

    restarted = AppTest.from_file(str(APP), default_timeout=60)  # new session_state: a restart, a new tab
    st.cache_resource.clear()
    restarted.run()
    assert not restarted.exception
    assert chat_texts(restarted) == [*first, ("user", "again"), ("assistant", "Echo #2: again")]
    assert admin.llen(f"{prefix}{{{app_env['CHAT_SESSION_ID']}}}") == 4  # it is on the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def streamlit_server(app_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env={**os.environ, **app_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # readiness poll, not a timed assertion
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {(tmp_path / 'streamlit.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit never became healthy")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def chromium(platform: Platform) -> str:
    path = dict(platform).get("CHROMIUM", "")
    if not path:
        pytest.skip(
            "CHROMIUM is empty in the platform env: Debian's chromium is not installed on this machine"
        )
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol (no selenium): navigate, read, screenshot.

    ``--dump-dom`` with a virtual-time budget returns before Streamlit's websocket delivers the page,
    so the test waits for the rendered text itself, then takes the screenshot of what it saw.
    """

    def __init__(self, executable: str, tmp_path: Path) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1200,900",
                f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-allow-origins=*",
                f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._next_id = 0
        ws_url = ""
        for _ in range(120):  # readiness poll for the DevTools endpoint
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if pages:
                    ws_url = pages[0]["webSocketDebuggerUrl"]
                    break
            except OSError:
                pass
            time.sleep(0.5)
        if not ws_url:
            self.close()
            pytest.fail("chromium's DevTools endpoint never came up")
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for_text(self, text: str) -> str:
        """The page's visible text once it contains ``text`` (or whatever it shows after ~60 s)."""
        body = ""
        for _ in range(120):
            body = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if text in body:
                break
            time.sleep(0.5)
        return str(body)

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_app_renders_seeded_messages_in_headless_chromium(
    platform: Platform,
    app_env: dict[str, str],
    prefix: str,
    admin: redis.Redis | RedisCluster,  # deletes the prefix afterwards
    streamlit_server: str,
    tmp_path: Path,
) -> None:
    from PIL import Image

    executable = chromium(platform)
    token = uid()
    seeded = RedisChatMessageHistory(
        app_env["CHAT_SESSION_ID"], redis_url=platform["REDIS_URL"], key_prefix=prefix
    )
    seeded.add_messages([HumanMessage(f"seeded question {token}"), AIMessage(f"seeded answer {token}")])
    seeded.close()

    browser = Browser(executable, tmp_path)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=streamlit_server)
        text = browser.wait_for_text(f"seeded answer {token}")
        dom = browser.evaluate("document.documentElement.outerHTML")
        shot = tmp_path / "streamlit_chat.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"]))
    finally:
        browser.close()

    assert f"seeded question {token}" in text
    assert f"seeded answer {token}" in text
    assert f"seeded answer {token}" in dom
    assert "session " + app_env["CHAT_SESSION_ID"] + ": 2 messages" in text
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        assert image.size[0] >= 800 and image.size[1] >= 600
        colors = image.convert("L").getcolors(maxcolors=1 << 16)
        assert colors is None or len(colors) > 10  # not a blank page
    keep = os.environ.get("CHATMEMORY_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / shot.name).write_bytes(shot.read_bytes())
