"""Screenshots of the explorer's panels for the README (docs/explore/*.png), taken in headless Chromium.

    python scripts/explore_screenshots.py [--run RUN] [--toy TOY] [--out docs/explore]

Without ``--run``/``--toy`` the built-in models are used (trained on first use into the cache, as
``difflab explore`` does).  Needs selenium and Debian's chromium + chromium-driver (scripts/setup_browser.sh).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from explore_support import Served, chrome  # noqa: E402  (the browser set-up the tests use)

from difflab.explore import Explorer  # noqa: E402


def wait(d, cond, timeout=600.0):
    end = time.monotonic() + timeout
    while not cond(d):
        if time.monotonic() > end:
            raise TimeoutError("page did not get there")
        time.sleep(0.2)


def set_value(d, element_id: str, value) -> None:
    """Set an input the way a user's edit would (value, then input and change events)."""
    d.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                     "e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change'));", element_id, str(value))


def shoot(d, element_id: str, path: Path) -> None:
    """A screenshot of one panel, scrolled to the top of the window first (element shots show what is in view)."""
    from selenium.webdriver.common.by import By
    el = d.find_element(By.ID, element_id)
    d.execute_script("arguments[0].scrollIntoView(true)", el)
    time.sleep(0.3)
    el.screenshot(str(path))


def main() -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--toy")
    ap.add_argument("--out", default=str(ROOT / "docs" / "explore"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    served = Served(Explorer(args.run, toy_run=args.toy))
    d = chrome()
    d.set_window_size(1400, 1600)
    try:
        d.get(served.url)
        wait(d, lambda d: d.execute_script("return !!(window.fetch) && document.querySelectorAll('#fwd-images .xt img').length > 0"))
        wait(d, lambda d: d.find_element(By.ID, "rev-run").is_enabled() and d.find_element(By.ID, "score-run").is_enabled())
        set_value(d, "fwd-index", 10)
        set_value(d, "fwd-t", 0.25)
        time.sleep(1.5)
        shoot(d, "forward", out / "forward.png")

        Select(d.find_element(By.ID, "rev-sampler")).select_by_value("ddim")
        set_value(d, "rev-steps", 50)
        d.find_element(By.ID, "rev-run").click()
        wait(d, lambda d: d.find_element(By.ID, "rev-result").is_displayed())
        set_value(d, "rev-step", 32)
        time.sleep(0.5)
        shoot(d, "reverse", out / "reverse.png")

        set_value(d, "cmp-nfe", 10)
        d.find_element(By.ID, "cmp-run").click()
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cmp-grid .card")) > 0)
        time.sleep(0.5)
        shoot(d, "compare", out / "compare.png")

        wait(d, lambda d: d.find_element(By.ID, "score-label").text.startswith("t = "))
        set_value(d, "score-frame", 30)
        time.sleep(0.5)
        shoot(d, "score", out / "score.png")
        print(f"screenshots in {out}")
    finally:
        d.quit()
        served.close()


if __name__ == "__main__":
    main()
