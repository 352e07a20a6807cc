"""Shared by the explorer's tests: a 2-D toy model trained through the explorer's own first-use path (once
per test session, with a tiny budget), and a headless Chromium driven by Selenium."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from difflab import GaussianDenoiser, get_schedule
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


class FakeConditional(nn.Module):
    """Exact denoiser of class-conditional Gaussian data: class c ~ N(mu_c, v I), the null label ~ N(0, v I),
    so classifier-free guidance with scale w is the exact denoiser of N(w mu_c, v I)."""

    num_classes = 3
    MEANS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])

    def __init__(self, var: float = 0.01):
        super().__init__()
        self.schedule = get_schedule("cosine")
        eye = var * torch.eye(2)
        self.per_class = nn.ModuleList(GaussianDenoiser(self.schedule, m, eye) for m in self.MEANS)
        self.null = GaussianDenoiser(self.schedule, torch.zeros(2), eye)
        self.data_shape, self.data_kind = (2,), "points"
        self.seen: list = []

    def forward(self, x, t, label=None):
        """``label`` None, or per sample a class or the null index ``num_classes`` (the conditioning contract)."""
        self.seen.append(None if label is None else label.clone())
        if label is None:
            return self.null(x, t)
        outs = torch.stack([d(x, t) for d in self.per_class] + [self.null(x, t)])
        return outs[label, torch.arange(x.shape[0])]
