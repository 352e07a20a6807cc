"""The explorer's page in a real browser: headless Chromium driven by Selenium (``scripts/setup_browser.sh``
installs Debian's chromium and chromium-driver; without them these tests skip and say why).

The page loads; moving the t slider changes the x_t image (its pixels, read back from the img element);
a sampling run returns an image and the step slider changes it; samplers side by side can be cancelled;
the score-field canvas is drawn; a run that cannot be opened shows its one-line error on the page."""
from __future__ import annotations

import numpy as np
import pytest

from difflab.explore import Explorer
from difflab.explore.models import ExploreModel
from explore_support import FIXED, FakeConditional, Served, chrome, first_use_toy

WAIT = 60  # seconds; generous for a loaded 2-core machine

PIXELS_JS = """
const img = arguments[0], c = document.createElement("canvas");
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext("2d"); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data, out = [];
for (let i = 0; i < d.length; i += 4) out.push(d[i]);
return [c.width, c.height, out];
"""

CANVAS_JS = """
const c = arguments[0], d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
let ink = 0; const colours = new Set();
for (let i = 0; i < d.length; i += 4) {
  if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) ink++;
  colours.add((d[i] >> 3) * 1024 + (d[i + 1] >> 3) * 32 + (d[i + 2] >> 3));
}
return [ink / (d.length / 4), colours.size];
"""


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return first_use_toy(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def page(driver, toy, tmp_path_factory):
    served = Served(Explorer(FIXED, toy_run=toy["folder"], cache=tmp_path_factory.mktemp("cache"), train_missing=False))
    driver.get(served.url)
    yield driver
    served.close()


def wait(driver, condition, what: str, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def pixels(driver, img) -> np.ndarray:
    wait(driver, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img),
         "image did not load")
    w, h, px = driver.execute_script(PIXELS_JS, img)
    return np.array(px, dtype=np.int16).reshape(h, w)


def xt_image(driver):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, "#fwd-images .card.xt img")[0]


def test_page_loads_and_the_t_slider_changes_x_t(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    d = page
    assert d.title == "difflab explorer"
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fwd-images .card.xt img")) == 4, "x_t images missing")
    assert "fixed_checkpoint" in d.find_element(By.ID, "model-info").text
    assert not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, ".cond"))   # unconditional model
    assert not d.find_element(By.ID, "error").is_displayed()
    names = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#fwd-images .card.xt h3")]
    assert names == ["cosine table (this model)", "linear", "sigmoid", "scaled_linear"]
    before = pixels(d, xt_image(d))
    slider = d.find_element(By.ID, "fwd-t")
    slider.send_keys(Keys.END)                          # t = 1: pure noise
    wait(d, lambda d: d.find_element(By.ID, "fwd-t-out").text == "1.000", "t did not move")
    wait(d, lambda d: not np.array_equal(pixels(d, xt_image(d)), before), "x_t image did not change")
    after = pixels(d, xt_image(d))
    assert before.shape == after.shape == (146, 146)    # 8x8 upscaled to 144 px, 1-px border
    assert np.abs(after - before).mean() > 20           # a different picture, not a flicker
    slider.send_keys(Keys.HOME)                         # t = 0: the clean example itself
    wait(d, lambda d: d.find_element(By.ID, "fwd-t-out").text == "0.000", "t did not move back")
    x0 = d.find_element(By.CSS_SELECTOR, "#fwd-images .card.x0 img")
    wait(d, lambda d: np.array_equal(pixels(d, xt_image(d)), pixels(d, x0)), "x_0 at t = 0 differs from the example")
    for plot in ("fwd-plot-as", "fwd-plot-lam"):
        ink, colours = d.execute_script(CANVAS_JS, d.find_element(By.ID, plot))
        assert ink > 0.02 and colours > 5, plot


def test_sampling_returns_an_image_and_the_step_slider_moves_through_it(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    d = page
    wait(d, lambda d: d.find_element(By.ID, "rev-run").is_enabled(), "Sample button stays disabled")
    Select(d.find_element(By.ID, "rev-sampler")).select_by_value("ddpm")
    steps = d.find_element(By.ID, "rev-steps")
    steps.clear()
    steps.send_keys("6")
    d.find_element(By.ID, "rev-run").click()
    wait(d, lambda d: d.find_element(By.ID, "rev-result").is_displayed(), "no sampling result")
    assert "6 network evaluations (NFE) per sample, counted" in d.find_element(By.ID, "rev-nfe").text
    assert d.find_element(By.ID, "rev-step-label").text.startswith("step 6 of 6:")
    final = pixels(d, d.find_element(By.CSS_SELECTOR, "#rev-x img"))
    assert final.shape == (3 * 96 + 4,) * 2 and final.std() > 10       # a 3x3 grid of samples
    slider = d.find_element(By.ID, "rev-step")
    slider.send_keys(Keys.HOME)
    wait(d, lambda d: d.find_element(By.ID, "rev-step-label").text.startswith("start: noise x_T"), "step did not move")
    start = pixels(d, d.find_element(By.CSS_SELECTOR, "#rev-x img"))
    assert np.abs(start - final).mean() > 20
    assert "no guess yet" in d.find_element(By.ID, "rev-x0").text
    slider.send_keys(Keys.ARROW_RIGHT)
    wait(d, lambda d: d.find_element(By.ID, "rev-step-label").text.startswith("step 1 of 6"), "step did not move")
    assert d.find_elements(By.CSS_SELECTOR, "#rev-x0 img")


def test_samplers_side_by_side_can_be_cancelled(page):
    from selenium.webdriver.common.by import By
    d = page
    nfe = d.find_element(By.ID, "cmp-nfe")
    nfe.clear()
    nfe.send_keys("200")
    d.find_element(By.ID, "cmp-run").click()
    cancel = d.find_element(By.CSS_SELECTOR, "#cmp-progress .cancel")
    wait(d, lambda d: cancel.is_displayed(), "no progress bar")
    cancel.click()
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#cmp-progress .progress-text").text == "cancelled",
         "not cancelled")
    assert d.find_element(By.ID, "cmp-run").is_enabled()
    assert not d.find_elements(By.CSS_SELECTOR, "#cmp-grid .card")


def test_score_field_is_drawn(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    d = page
    wait(d, lambda d: d.find_element(By.ID, "score-label").text.startswith("t = "), "no score field")
    canvas = d.find_element(By.ID, "score-canvas")
    ink, colours = d.execute_script(CANVAS_JS, canvas)
    assert ink > 0.05 and colours > 20                   # arrows in many colours, points, data
    first = d.execute_script("return arguments[0].toDataURL()", canvas)
    d.find_element(By.ID, "score-frame").send_keys(Keys.END)
    wait(d, lambda d: "frame 40 of 40" in d.find_element(By.ID, "score-label").text, "frame did not move")
    assert d.execute_script("return arguments[0].toDataURL()", canvas) != first


def test_a_run_that_cannot_be_opened_shows_its_error(driver, toy, tmp_path):
    from selenium.webdriver.common.by import By
    served = Served(Explorer(tmp_path / "no_such_run", toy_run=toy["folder"], cache=tmp_path, train_missing=False))
    try:
        driver.get(served.url)
        err = driver.find_element(By.ID, "error")
        wait(driver, lambda d: err.is_displayed(), "no error shown")
        assert err.text == f"cannot open {tmp_path / 'no_such_run'}: checkpoint not found: {tmp_path / 'no_such_run'}"
        assert not driver.find_element(By.ID, "rev-run").is_enabled()
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fwd-images .card.xt img")) == 4,
             "the forward panel should work without the model")
    finally:
        served.close()


def test_class_and_guidance_controls_appear_for_a_conditional_model(driver, toy, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    ex = Explorer(FIXED, toy_run=toy["folder"], cache=tmp_path, train_missing=False)
    fake = FakeConditional()
    ex.main.model = ExploreModel(fake, "fake conditional", {"classes": ["east", "north", "south-west"]})
    served = Served(ex)
    try:
        driver.get(served.url)
        cond = driver.find_element(By.CSS_SELECTOR, "#reverse .cond")
        wait(driver, lambda d: cond.is_displayed(), "no class selector for a conditional model")
        options = [o.text for o in Select(driver.find_element(By.ID, "rev-class")).options]
        assert options == ["none (unconditional)", "east", "north", "south-west"]
        Select(driver.find_element(By.ID, "rev-class")).select_by_visible_text("north")
        guidance = driver.find_element(By.ID, "rev-guidance")
        guidance.clear()
        guidance.send_keys("2")
        steps = driver.find_element(By.ID, "rev-steps")
        steps.clear()
        steps.send_keys("5")
        driver.find_element(By.ID, "rev-run").click()
        wait(driver, lambda d: d.find_element(By.ID, "rev-result").is_displayed(), "no sampling result")
        assert "10 network evaluations (NFE) per sample" in driver.find_element(By.ID, "rev-nfe").text   # guided: 2 a step
        labels = [s for s in fake.seen if s is not None]
        # class 1 ("north") reaches the network, beside the null label (3) of guidance's doubled batch
        assert labels and all(bool(((s == 1) | (s == 3)).all()) and bool((s == 1).any()) for s in labels)
        assert driver.find_elements(By.CSS_SELECTOR, "#rev-x canvas")       # 2-D points are drawn on a canvas
    finally:
        served.close()
