"""Power-function EMA and post-hoc EMA (Karras et al. 2024): the recursion against its explicit weights,
the profile inner products against quadrature, a reconstruction against an EMA tracked directly, and the
trainer and CLI paths (snapshots, exact resume, bad input)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import difflab as dl
from difflab.cli import main
from difflab.errors import DifflabError
from difflab.io import load_tensors
from difflab.train.posthoc_ema import (PowerEMA, gamma_to_sigma_rel, list_snapshots, profile_inner, reconstruct,
                                       save_snapshot, sigma_rel_to_gamma, snapshot_path, solve_coefficients)

_trapz = getattr(np, "trapezoid", None) or np.trapz   # numpy < 2 has only trapz


@pytest.mark.parametrize("sigma_rel", [0.01, 0.05, 0.1, 0.2, 0.28, 1 / math.sqrt(12)])
def test_sigma_rel_is_the_profile_std_relative_to_its_end(sigma_rel):
    """gamma from sigma_rel, then the std of tau^gamma on [0, 1] by quadrature gives sigma_rel back (1e-6:
    the quadrature's error on 200,001 points)."""
    g = sigma_rel_to_gamma(sigma_rel)
    assert gamma_to_sigma_rel(g) == pytest.approx(sigma_rel, rel=1e-10)
    tau = np.linspace(0, 1, 200_001)
    p = (g + 1) * tau ** g
    mean = _trapz(tau * p, tau)
    assert math.sqrt(_trapz((tau - mean) ** 2 * p, tau)) == pytest.approx(sigma_rel, rel=1e-6)


def test_bad_lengths_are_refused():
    for s in (0.0, -0.1, 0.29, 0.6):
        with pytest.raises(DifflabError, match="sigma_rel"):
            sigma_rel_to_gamma(s)


def test_power_ema_recursion_has_the_power_profile_exactly():
    """After T updates the average is sum_tau w_tau theta_tau with w_tau = (tau^(g+1) - (tau-1)^(g+1)) / T^(g+1)
    (the recursion telescopes): checked in float64 to 1e-12."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    pe = PowerEMA(model, 0.1)
    g1 = pe.gamma + 1
    thetas = []
    for _ in range(300):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        thetas.append(model.weight.detach().clone())
        pe.update(model)
    T = len(thetas)
    w = [(tau ** g1 - (tau - 1) ** g1) / T ** g1 for tau in range(1, T + 1)]
    explicit = sum(wi * th for wi, th in zip(w, thetas))
    assert torch.allclose(pe.model.weight, explicit, rtol=0, atol=1e-12)


def test_profile_inner_products_match_quadrature():
    tau = np.linspace(0, 3000, 3_000_001)
    for (ti, gi), (tj, gj) in [((1000, 6.94), (2500, 2.9)), ((2000, 2.9), (2000, 2.9)), ((3000, 0.5), (800, 12.0))]:
        pi = np.where(tau <= ti, (gi + 1) * tau ** gi / ti ** (gi + 1), 0.0)
        pj = np.where(tau <= tj, (gj + 1) * tau ** gj / tj ** (gj + 1), 0.0)
        assert profile_inner(ti, gi, tj, gj) == pytest.approx(_trapz(pi * pj, tau), rel=1e-4)


def _trajectory_run(tmp_path, steps=2000, every=100, target=0.075):
    """A 64-parameter model walking randomly with a drift; power EMAs 0.05 and 0.10 saved every ``every``
    steps, and the target length tracked directly for comparison."""
    torch.manual_seed(1)
    model = nn.Linear(8, 8, bias=False).double()
    saved = [PowerEMA(model, 0.05), PowerEMA(model, 0.10)]
    direct = PowerEMA(model, target)
    drift = torch.randn_like(model.weight) * 0.01
    for t in range(1, steps + 1):
        with torch.no_grad():
            model.weight.add_(drift + 0.1 * torch.randn_like(model.weight))
        for pe in (*saved, direct):
            pe.update(model)
        if t % every == 0:
            for pe in saved:
                save_snapshot(tmp_path, pe)
    return model, saved, direct


def test_reconstruction_matches_an_ema_tracked_directly(tmp_path):
    """sigma_rel 0.075 reconstructed from the 0.05 and 0.10 snapshots against the 0.075 EMA tracked all along:
    the gap is under 3 % of how far that EMA is from the nearest saved one (0.05), and the reconstructed profile
    is within 1 % of the target's in L2."""
    model, saved, direct = _trajectory_run(tmp_path)
    assert len(list_snapshots(tmp_path)) == 2 * 20
    state, report = reconstruct(tmp_path, 0.075)
    assert report["step"] == 2000 and report["profile_error"] < 0.01
    coef = np.array([s["coefficient"] for s in report["snapshots"]])
    assert coef.sum() == pytest.approx(1.0, abs=0.02)    # normalised profiles: the weights about sum to 1
    target = direct.model.weight
    gap = (state["weight"].double() - target).norm()
    nearest = (saved[0].model.weight - target).norm()
    assert gap < 0.03 * nearest, (float(gap), float(nearest))
    # an earlier end: the EMA at step 1000 from the snapshots up to 1000 only
    state_1000, rep_1000 = reconstruct(tmp_path, 0.075, step=1000)
    assert rep_1000["step"] == 1000 and max(s["step"] for s in rep_1000["snapshots"]) == 1000
    assert not torch.allclose(state_1000["weight"], state["weight"])


def test_unreachable_lengths_and_missing_steps_are_refused(tmp_path):
    _trajectory_run(tmp_path, steps=400, every=100)
    with pytest.raises(DifflabError, match="not reachable"):
        reconstruct(tmp_path, 0.28)             # about the uniform average of the run: far longer than the saved
    with pytest.raises(DifflabError, match="no post-hoc EMA snapshot at step 150"):
        reconstruct(tmp_path, 0.075, step=150)
    with pytest.raises(DifflabError, match="no post-hoc EMA snapshots"):
        reconstruct(tmp_path / "elsewhere", 0.075)


def test_solve_coefficients_reproduces_a_saved_profile():
    """A target equal to one saved profile gets coefficient 1 on it and 0 elsewhere."""
    snaps = [(t, g) for t in (100, 200, 300) for g in (sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.1))]
    x, error = solve_coefficients(snaps, 300, sigma_rel_to_gamma(0.1))
    assert x == pytest.approx([0, 0, 0, 0, 0, 1], abs=1e-6) and error < 1e-6


# -- the trainer and the CLI ------------------------------------------------------------------------------
def _toy():
    return dl.load_dataset("toy2d", name="checkerboard", n=512)


def _train(out, steps, resume=False, posthoc=(0.05, 0.1)):
    den = dl.load_checkpoint(out).denoiser("model").train() if resume else dl.create_denoiser((2,), seed=0)
    return dl.train(den, _toy(), out, steps=steps, resume=resume, batch_size=32, sample_every=0, progress=False,
                    posthoc_ema=posthoc, posthoc_every=5, seed=0)


def test_training_saves_snapshots_and_resumes_them_exactly(tmp_path):
    _train(tmp_path / "whole", 20)
    _train(tmp_path / "split", 12)                 # 12 is not a multiple of 5: a snapshot where it stopped too
    assert {t for _, t, _ in list_snapshots(tmp_path / "split")} == {5, 10, 12}
    _train(tmp_path / "split", 20, resume=True)
    whole, split = list_snapshots(tmp_path / "whole"), list_snapshots(tmp_path / "split")
    assert {(s, t) for s, t, _ in whole} == {(s, t) for s in (0.05, 0.1) for t in (5, 10, 15, 20)}
    by_key = {(s, t): p for s, t, p in split}
    for s, t, p in whole:
        a, b = load_tensors(p), load_tensors(by_key[(s, t)])
        assert all(torch.equal(a[k], b[k]) for k in a), (s, t)
    with pytest.raises(DifflabError, match="cannot resume with --posthoc-ema"):
        _train(tmp_path / "split", 25, resume=True, posthoc=(0.05,))


def test_snapshots_of_abandoned_steps_and_earlier_runs_are_not_mixed_in(tmp_path):
    """Snapshots written after the last checkpoint (an interrupted invocation) are dropped on resume; a new run
    into a folder holding another run's snapshots is refused; equal lengths are refused."""
    run = tmp_path / "run"
    _train(run, 10)
    stale = snapshot_path(run, 0.05, 15)
    stale.write_bytes(snapshot_path(run, 0.05, 10).read_bytes())   # as if written at 15, then killed before a save
    _train(run, 12, resume=True)
    assert not stale.exists() and {t for _, t, _ in list_snapshots(run)} == {5, 10, 12}
    with pytest.raises(DifflabError, match="earlier run"):
        _train(run, 10)
    with pytest.raises(DifflabError, match="must differ"):
        _train(tmp_path / "other", 10, posthoc=(0.05, 0.05))


def test_cli_writes_a_checkpoint_of_the_reconstructed_ema(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, 20)
    assert main(["posthoc-ema", str(run), "--sigma-rel", "0.07", "--out", str(tmp_path / "ema07")]) == 0
    den = dl.load(str(tmp_path / "ema07"))
    state, _ = reconstruct(run, 0.07)
    assert all(torch.equal(den.net.state_dict()[k], v) for k, v in state.items())
    assert main(["sample", str(tmp_path / "ema07"), "--n", "8", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert main(["posthoc-ema", str(run), "--sigma-rel", "0.9", "--out", str(tmp_path / "x")]) == 2
    assert main(["posthoc-ema", str(tmp_path / "ema07"), "--sigma-rel", "0.07", "--out", str(tmp_path / "y")]) == 2
    assert main(["posthoc-ema", str(run), "--sigma-rel", "0.07", "--out", str(run / "ema")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "sigma_rel" in err[0] and "no post-hoc EMA snapshots" in err[1] and "inside" in err[2]
    assert dl.load_checkpoint(str(run)).config.get("optimizer_param_groups")   # the run's own checkpoint intact
