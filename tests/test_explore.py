"""The explorer without a browser: what each panel computes (against closed forms and difflab.sample), jobs
(progress, cancel), class conditioning through a fake conditional denoiser, first-use training of a built-in
model, the JSON API over HTTP, and the command's errors."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from difflab import GaussianDenoiser, get_schedule, sample
from difflab.cli import main
from difflab.data import load_digits, sample_toy2d, to_uint8
from difflab.errors import DifflabError
from difflab.explore import builtin, panels
from difflab.explore.jobs import JobManager
from difflab.explore.models import ExploreModel, load_model, run_data
from difflab.explore import Explorer
from difflab.process import schedule_from_spec
from difflab.sampling.noise import SampleNoise
from explore_support import FIXED, FakeConditional, Served, first_use_toy


def png_pixels(pic: dict) -> np.ndarray:
    head, data = pic["png"].split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def gaussian_2d(mean=(0.5, -0.3), var=(0.3, 0.1), schedule=None):
    den = GaussianDenoiser(schedule or get_schedule("cosine"), torch.tensor(mean), torch.diag(torch.tensor(var)))
    den.data_shape, den.data_kind = (2,), "points"
    return den


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    return first_use_toy(tmp_path_factory.mktemp("explore"))


# -- forward panel ----------------------------------------------------------------------------------------
def test_forward_view_is_q_sample_with_one_noise_under_every_schedule():
    scheds = panels.forward_schedules(None)
    assert list(scheds) == ["linear", "cosine", "sigmoid", "scaled_linear"]
    x0 = sample_toy2d("moons", 200, 0)
    t, seed = 0.37, 5
    v = panels.forward_view(x0, "points", scheds, t, seed)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).double()
    for view in v["schedules"]:
        a, s = scheds[view["name"]].alpha_sigma(torch.tensor(t, dtype=torch.float64))
        assert view["alpha"] == pytest.approx(float(a)) and view["sigma"] == pytest.approx(float(s))
        assert view["logsnr"] == pytest.approx(float(2 * torch.log(a / s)))
        # closed form, float64: the same eps under every schedule (points are rounded to 1e-3)
        assert np.allclose(view["x_t"]["points"], (a * x0.double() + s * eps).numpy(), atol=6e-4)
    # images: the PNG is x_t upscaled nearest neighbour, pixel for pixel
    digits = load_digits("0:4").x
    v = panels.forward_view(digits[2:3], "images", scheds, 0.2, 1)
    eps = torch.randn(digits[2:3].shape, generator=torch.Generator().manual_seed(1))
    a, s = scheds["sigmoid"].alpha_sigma(torch.tensor(0.2, dtype=torch.float64))
    want = to_uint8((a * digits[2:3].double() + s * eps.double()).float())[0, 0]
    got = png_pixels(v["schedules"][2]["x_t"])
    scale = 144 // 8
    assert got.shape == (8 * scale + 2, 8 * scale + 2)   # one image, 1-pixel white border
    assert np.abs(got[1:-1:scale, 1:-1:scale].astype(int) - want.astype(int)).max() <= 1
    assert np.array_equal(png_pixels(v["x0"])[1:-1:scale, 1:-1:scale], to_uint8(digits[2])[0])


def test_schedule_curves_and_the_models_schedule_first():
    model = schedule_from_spec("cosine", 1000)
    scheds = panels.forward_schedules(model, "cosine table (this model)")
    assert list(scheds) == ["cosine table (this model)", "linear", "sigmoid", "scaled_linear"]  # not twice
    c = panels.schedule_curves(scheds, n=11)
    json.dumps(c, allow_nan=False)           # the page's JSON has no infinities
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a, s = model.alpha_sigma(t)
    assert np.allclose(c["curves"][0]["alpha"], a.numpy(), atol=1e-5)
    assert np.allclose(c["curves"][0]["sigma"], s.numpy(), atol=1e-5)
    lam = np.array(c["curves"][1]["logsnr"])
    assert lam.max() == panels.LOGSNR_CLIP and lam.min() < 0     # clipped at t = 0, where sigma = 0
    assert np.all(np.diff(lam) <= 0)


def test_run_data_finds_the_training_set():
    cfg = {"training": {"data": {"name": "digits", "n": 64, "range": [0, 64]}}}
    assert torch.equal(run_data(cfg, (1, 8, 8)), load_digits("0:64").x)
    cfg = {"training": {"data": {"name": "toy2d:moons", "distribution": "moons", "n": 20000, "seed": 3}}}
    assert torch.equal(run_data(cfg, (2,)), sample_toy2d("moons", 2000, 3))
    with pytest.raises(DifflabError, match="does not record its training data"):
        run_data({"training": {}}, (1, 8, 8))
    with pytest.raises(DifflabError, match="model \\(1, 28, 28\\)"):
        run_data({"training": {"data": {"name": "digits"}}}, (1, 28, 28))


# -- reverse process, samplers, score -----------------------------------------------------------------------
def test_reverse_run_records_every_step_of_difflab_sample():
    den = gaussian_2d()
    jobs = JobManager()
    job = jobs.submit("sample", lambda job: panels.reverse_run(den, "points", job, "ddim", 8, 3, 50))
    assert job.finished.wait(60) and job.state == "done", job.error
    res = job.result
    assert res["nfe"] == 8 and res["steps"] == 8 and len(res["frames"]) == 9
    first, frames = res["frames"][0], res["frames"]
    assert first["x0_hat"] is None and first["t_next"] == 1.0
    assert np.allclose(first["x"]["points"], SampleNoise(3, range(50)).randn((2,)).numpy(), atol=6e-4)
    direct = sample(den, n=50, shape=(2,), sampler="ddim", steps=8, seed=3, progress=False)
    assert np.allclose(frames[-1]["x"]["points"], direct.x.numpy(), atol=6e-4)
    assert frames[-1]["t_next"] == 0.0
    for prev, f in zip(frames, frames[1:]):  # x0_hat of a step: D at the state the step started from
        assert f["t"] == pytest.approx(prev["t_next"])
        x_prev = torch.tensor(prev["x"]["points"], dtype=torch.float32)
        assert np.allclose(f["x0_hat"]["points"], den(x_prev, f["t"]).numpy(), atol=2e-3)
    status = job.status()
    assert status["fraction"] == 1.0 and status["eta_s"] is None and status["result"] is res


def test_max_frames_keeps_first_and_last():
    assert panels._pick(5, 10) == [0, 1, 2, 3, 4]
    picked = panels._pick(1001, 100)
    assert picked[0] == 0 and picked[-1] == 1000 and len(picked) == 100


def test_cancel_stops_sampling_at_the_next_network_evaluation():
    den = gaussian_2d()
    calls = []

    def work(job):
        class CancelOnThird(nn.Module):
            schedule, data_shape = den.schedule, (2,)

            def forward(self, x, t, **cond):
                calls.append(t)
                if len(calls) == 3:
                    job.cancel()
                return den(x, t)
        return panels.reverse_run(CancelOnThird(), "points", job, "ddim", 10, 0, 20)

    job = JobManager().submit("sample", work)
    assert job.finished.wait(60)
    assert job.state == "cancelled" and len(calls) == 3
    assert job.fraction == pytest.approx(0.3) and job.message == "cancelled"


def test_compare_runs_each_sampler_at_its_nfe_budget():
    den = gaussian_2d()
    names = ["ddim", "heun", "dpmpp_2m", "ald", "ode"]
    job = JobManager().submit("compare", lambda job: panels.compare_run(den, "points", job, 4, 0, 30, names))
    assert job.finished.wait(120) and job.state == "done", job.error
    got = {e["sampler"]: e for e in job.result["samplers"]}
    assert got["ddim"]["nfe"] == 4 and got["ddim"]["steps"] == 4
    assert got["heun"]["steps"] == 2 and got["heun"]["options"] == {"grid": "karras", "sigma_max": 80.0}
    assert got["heun"]["nfe"] == 3                        # 2 + 1: its last step is Euler
    assert "needs more than 4" in got["ald"]["skipped"]   # ten evaluations per level
    assert got["ode"]["nfe"] > 0                          # adaptive: whatever it took, counted
    # the same noise for all: DDIM equals difflab.sample with that seed
    direct = sample(den, n=30, shape=(2,), sampler="ddim", steps=4, seed=0, progress=False)
    assert np.allclose(got["ddim"]["picture"]["points"], direct.x.numpy(), atol=6e-4)


def test_score_view_is_the_closed_form_score_of_gaussian_data():
    mean, var = torch.tensor([0.5, -0.3], dtype=torch.float64), torch.tensor([0.3, 0.1], dtype=torch.float64)
    den = gaussian_2d(mean.tolist(), var.tolist())
    v = panels.score_view(den, sample_toy2d("checkerboard", 500), "ddim", steps=6, seed=2, n=40, grid_n=7)
    assert len(v["frames"]) == 7 and len(v["grid"]) == 49 and len(v["data"]) == 500
    grid = torch.tensor(v["grid"], dtype=torch.float64)
    for f in v["frames"]:
        a, s = den.schedule.alpha_sigma(torch.tensor(f["t_score"], dtype=torch.float64))
        exact = -(grid - a * mean) / (a**2 * var + s**2)     # grad log N(x; a mu, a^2 Sigma + s^2 I)
        assert np.allclose(f["score"], exact.numpy(), rtol=1e-3, atol=1e-3)
    assert v["frames"][-1]["t"] == 0.0 and v["frames"][-1]["t_score"] == den.schedule.t_min
    assert np.allclose(v["frames"][0]["points"], SampleNoise(2, range(40)).randn((2,)).numpy(), atol=6e-4)
    with pytest.raises(DifflabError, match="needs a 2-D model"):
        d = gaussian_2d()
        d.data_shape = (1, 8, 8)
        panels.score_view(d, sample_toy2d("checkerboard", 10))


# -- class-conditional models --------------------------------------------------------------------------------
def run_job(ex: Explorer, status: dict, timeout: float = 120) -> dict:
    job = ex.jobs.get(status["id"])
    assert job.finished.wait(timeout), "job did not finish"
    out = ex.job_status(job.id)
    assert out["state"] == "done", out["error"]
    return out["result"]


def test_class_and_guidance_reach_the_denoiser(tmp_path):
    ex = Explorer(FIXED, toy_run=FIXED, cache=tmp_path, train_missing=False)
    fake = FakeConditional()
    ex.main.model = ExploreModel(fake, "fake conditional", {"classes": ["east", "north", "south-west"]})
    info = ex.state()["model"]["model"]
    assert info["num_classes"] == 3 and info["classes"] == ["east", "north", "south-west"]
    for label, w, mean in [(0, 1.0, [1.0, 0.0]), (2, 3.0, [-3.0, -3.0]), (None, None, [0.0, 0.0])]:
        fake.seen.clear()
        params = {"sampler": "ddim", "steps": 20, "seed": 0, "label": label, "guidance": w}
        res = run_job(ex, ex.start_sample(params))
        x = np.array(res["frames"][-1]["x"]["points"])
        assert np.allclose(x.mean(0), mean, atol=0.05), (label, w, x.mean(0))
        labels = [s for s in fake.seen if s is not None]
        if label is None:
            assert not labels and res["nfe"] == 20
        else:
            # the requested class, and under guidance the null label (index 3) of the doubled batch
            assert labels and all(bool(((s == label) | (s == 3)).all()) for s in labels)
            assert any(bool((s == 3).any()) for s in labels) == (w != 1.0)
            assert res["nfe"] == (40 if w != 1.0 else 20)      # guidance: two network evaluations a step
    fake.seen.clear()
    res = run_job(ex, ex.start_compare({"nfe": 10, "samplers": "ddim", "label": 1, "guidance": 2}))
    assert res["samplers"][0]["steps"] == 5 and res["samplers"][0]["nfe"] == 10
    with pytest.raises(DifflabError, match="class 5 is not one of the model's classes 0..2"):
        ex.start_sample({"label": 5})
    ex.main.model = load_model(FIXED)
    with pytest.raises(DifflabError, match="unconditional"):
        ex.start_sample({"label": 1})


# -- models: loading errors, first-use training --------------------------------------------------------------
def test_models_that_cannot_be_shown_give_one_line(tmp_path):
    ex = Explorer(tmp_path / "nope", toy_run=FIXED, cache=tmp_path, train_missing=False)
    st = ex.state()
    assert st["model"]["status"] == "error"
    assert st["model"]["error"] == f"cannot open {tmp_path / 'nope'}: checkpoint not found: {tmp_path / 'nope'}"
    assert "digits" in st["forward"]["note"]                 # the forward panel still works
    with pytest.raises(DifflabError, match="checkpoint not found"):
        ex.start_sample({})
    from difflab import create_denoiser
    from difflab.train.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "r3", create_denoiser((3,), clip_x0=None, seed=0), (3,), step=1)
    with pytest.raises(DifflabError, match="images and 2-D points; this model holds points of shape \\(3,\\)"):
        load_model(tmp_path / "r3")


def test_first_use_training_is_cached_atomically(toy):
    job, folder, cache = toy["job"], toy["folder"], toy["cache"]
    assert job.state == "done", job.error
    assert any(m.startswith("training the built-in checkerboard model: step ") and st == "training"
               for m, _, st in toy["messages"])
    assert toy["explorer"].toy.status == "ready"
    assert (folder / "checkpoints" / "latest").is_file()
    assert folder.name == f"checkerboard-{builtin.BUILTINS['checkerboard'].with_budget(**{'steps': 20, 'minutes': 1.0}).key()}"
    assert [p.name for p in cache.iterdir()] == [folder.name]          # no temporary folder left
    again = Explorer(FIXED, cache=cache, budgets={"checkerboard": {"steps": 20, "minutes": 1.0}})
    assert again.toy.status == "ready" and again.toy.job is None       # found in the cache, not retrained
    assert again.score({"steps": 4})["frames"]


def test_cancelled_first_use_training_leaves_nothing(tmp_path):
    dead, alive = tmp_path / ".tmp-checkerboard-0123456789-999999999-train-1", tmp_path / f".tmp-digits-x-{os.getpid()}-train-2"
    dead.mkdir()
    alive.mkdir()
    ex = Explorer(FIXED, cache=tmp_path, budgets={"checkerboard": {"steps": 10**6, "minutes": 10}})
    job = ex.toy.job
    time.sleep(1.0)
    assert ex.cancel(job.id)["state"] in ("running", "cancelled")
    assert job.finished.wait(30) and job.state == "cancelled"
    assert ex.toy.status == "missing" and list(tmp_path.iterdir()) == [alive]   # an abandoned one is removed
    with pytest.raises(DifflabError, match="not trained yet"):
        ex.score({})


# -- HTTP ------------------------------------------------------------------------------------------------
def request(url: str, method: str = "GET", path: str = "/", body: dict | None = None, headers: dict | None = None):
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, data, {**hdrs, **(headers or {})})
    r = conn.getresponse()
    raw = r.read()
    return r.status, r.getheader("Content-Type"), raw


def test_json_api_over_http(tmp_path):
    served = Served(Explorer(FIXED, cache=tmp_path, train_missing=False))
    try:
        url = served.url
        status, ctype, raw = request(url)
        assert status == 200 and ctype.startswith("text/html") and b"/static/explore.js" in raw
        assert b"http://" not in raw and b"https://" not in raw          # nothing fetched from the internet
        status, ctype, raw = request(url, path="/static/explore.js")
        assert status == 200 and ctype.startswith("text/javascript") and b"http" not in raw
        status, _, raw = request(url, path="/api/state")
        st = json.loads(raw)
        assert status == 200 and st["model"]["status"] == "ready" and st["toy"]["status"] == "missing"
        assert {s["name"] for s in st["samplers"]} >= {"ddpm", "ddim", "heun", "dpmpp_2m", "unipc"}
        status, _, raw = request(url, path="/api/forward?t=0.5&index=3&seed=1")
        fwd = json.loads(raw)
        assert status == 200 and fwd["index"] == 3 and len(fwd["schedules"]) == 4
        for path, msg in [("/api/forward?t=2", "parameter t must be in [0, 1], got '2'"),
                          ("/api/forward?t=abc", "parameter t must be a number, got 'abc'"),
                          ("/api/forward?index=1.5", "parameter index must be a whole number, got '1.5'"),
                          ("/api/score", "the built-in checkerboard model is not trained yet")]:
            status, ctype, raw = request(url, path=path)
            assert (status, ctype, json.loads(raw)) == (400, "application/json", {"error": msg})
        status, _, raw = request(url, "POST", "/api/sample", {"sampler": "nope"})
        assert status == 400 and json.loads(raw)["error"].startswith("unknown sampler 'nope'; choose from ")
        status, _, raw = request(url, "POST", "/api/sample", {"sampler": "ddpm", "steps": 3, "seed": 1})
        job = json.loads(raw)
        assert status == 200 and job["state"] in ("running", "done")
        deadline = time.monotonic() + 60
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = json.loads(request(url, path=f"/api/jobs/{job['id']}")[2])
        assert job["state"] == "done" and job["result"]["nfe"] == 3 and len(job["result"]["frames"]) == 4
        assert served.explorer.main.model.denoiser.training is False     # sampling left it in eval mode
        assert png_pixels(job["result"]["frames"][-1]["x"]).shape == (3 * 96 + 4, 3 * 96 + 4)   # 3x3 grid, 8 px -> 96
        status, _, raw = request(url, "POST", f"/api/jobs/{job['id']}/cancel", {})
        assert status == 200 and json.loads(raw)["state"] == "done"       # too late to cancel: no harm
        assert request(url, path="/api/jobs/sample-999")[0] == 400
        assert request(url, path="/api/nothing")[0] == 404
        assert request(url, path="/static/../server.py")[0] == 404
        assert request(url, path="/static/jobs.py")[0] == 404
        # DNS rebinding: a loopback server answers loopback host names only; POSTs must be JSON
        status, _, raw = request(url, path="/api/state", headers={"Host": "evil.example:80"})
        assert status == 403
        status, _, raw = request(url, "POST", "/api/sample", None, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 400 and "must be JSON" in json.loads(raw)["error"]
    finally:
        served.close()


def test_command_refuses_a_busy_port_before_opening_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["explore", "--no-browser", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"difflab: error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port"]
        assert main(["explore", "--no-browser", "--host", "0.0.0.0", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("difflab: warning: listening on 0.0.0.0, reachable from other machines")
        assert err[1].startswith("difflab: error: cannot listen on 0.0.0.0")
    assert list(tmp_path.iterdir()) == []          # no model was trained or cached


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_command_serves_until_ctrl_c_and_stops_first_use_training(tmp_path, sig):
    """Ctrl-C or ``kill`` stops the server, cancels the first-use training and leaves nothing behind, also when
    the process starts with SIGINT ignored (``&`` in a non-interactive shell: how CI scripts start pytest)."""
    import signal
    import subprocess
    import sys
    import urllib.request
    env = {**os.environ, "DIFFLAB_CACHE": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "difflab", "explore", str(FIXED), "--port", "0", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("toy: training the built-in checkerboard model on first use")
        assert lines[1].startswith("difflab explorer at http://127.0.0.1:") and lines[1].endswith("(Ctrl-C to stop)\n")
        url = lines[1].split()[3]
        assert b"difflab explorer" in urllib.request.urlopen(url, timeout=30).read()
        deadline = time.monotonic() + 20
        while not list((tmp_path / "explore").glob(".tmp-checkerboard-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "explore").glob(".tmp-checkerboard-*"))     # training into a temporary folder
        proc.send_signal(getattr(signal, sig))
        assert proc.wait(30) == 0
        assert proc.stdout.read() == "stopping\n"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list((tmp_path / "explore").iterdir()) == []      # the training was stopped and cleaned up
