"""Shared by the explorer's tests: a 2-D toy model trained through the explorer's own first-use path (once
per test session, with a tiny budget), and a headless Chromium driven by Selenium."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from difflab.explore import Explorer
from difflab.explore.server import make_server, url_of

ROOT = Path(__file__).resolve().parents[1]
FIXED = ROOT / "tests" / "data" / "fixed_checkpoint"     # a frozen 8x8 UNet (60 steps on digits)
TOY_BUDGET = {"checkerboard": {"steps": 20, "minutes": 1.0}}

_first_use: dict = {}


def first_use_toy(root: Path) -> dict:
    """Start an explorer whose cache lacks the built-in checkerboard model, so that it trains it as on first
    use; wait for the training and record the progress messages the page would have shown."""
    if not _first_use:
        cache = root / "cache"
        ex = Explorer(FIXED, cache=cache, budgets=TOY_BUDGET)
        job = ex.toy.job
        assert job is not None and ex.toy.status == "training"
        messages = []
        deadline = time.monotonic() + 240
        while not job.finished.is_set() and time.monotonic() < deadline:
            messages.append((job.message, job.fraction, ex.toy.info()["status"]))
            time.sleep(0.1)
        _first_use.update(explorer=ex, job=job, messages=messages, cache=cache, folder=ex.toy.folder)
    return _first_use


def chrome():
    """A headless Chromium WebDriver, or a skip that says what is missing."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("headless Chromium is not available: bash scripts/setup_browser.sh installs Debian's chromium "
                    "and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        opts.add_argument(a)
    try:
        return webdriver.Chrome(service=Service(driver), options=opts)
    except WebDriverException as e:
        pytest.skip(f"Chromium did not start: {str(e).strip().splitlines()[0]}")


class Served:
    """An explorer behind a server on a free loopback port, in a thread."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer
        self.server = make_server(explorer, "127.0.0.1", 0)
        self.url = url_of(self.server)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.explorer.close()
