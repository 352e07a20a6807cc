import math

import pytest
import torch

from difflab.errors import DifflabError
from difflab.process import (SCHEDULES, DiscreteSchedule, get_schedule, schedule_from_config,
                             zero_terminal_snr_table)

T_GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("T", [None, 1000])
def test_logsnr_strictly_decreasing_and_boundaries(name, T):
    if T and name in ("edm", "ve"):
        with pytest.raises(DifflabError, match="variance-exploding"):
            get_schedule(name, T=T)
        return
    s = get_schedule(name, T=T)
    lam = s.logsnr(T_GRID[1:])
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must decrease strictly in t"
    a, sig = s.alpha_sigma(T_GRID)
    assert torch.all(a >= 0) and torch.all(sig >= 0)
    if s.variance_preserving:
        assert torch.allclose(a**2 + sig**2, torch.ones_like(a), atol=1e-12)
        assert a[0] == 1.0 and sig[0] == 0.0, "t=0 is clean data"
        # scaled_linear keeps alpha_bar(1) = 0.0047 (alpha 0.069): the non-zero terminal SNR that
        # Lin et al. (2023) point out; the others end below alpha 0.01.
        assert a[-1] < (0.07 if name == "scaled_linear" else 0.01), f"t=1 must be (almost) noise: {a[-1]}"
    else:
        assert torch.all(a == 1.0)
        assert sig[0] == pytest.approx(s.sigma_min) and sig[-1] == pytest.approx(s.sigma_max)


@pytest.mark.parametrize("ours,theirs,kw", [
    ("linear", "linear", {}),
    ("scaled_linear", "scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
    ("cosine", "squaredcos_cap_v2", {}),
])
def test_alpha_bar_table_equals_diffusers(ours, theirs, kw):
    """diffusers (test-only reference) computes betas in float32 and cumprod in float32; our table is
    float64, so 1e-6 absolute covers float32 rounding accumulated over 1000 products."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs, **kw).alphas_cumprod
    s = get_schedule(ours, T=1000, **kw)
    assert isinstance(s, DiscreteSchedule)
    assert torch.allclose(s.alpha_bar_table, ref.double(), atol=1e-6, rtol=0)
    # the continuous adapter hits every knot exactly: t_i = (i+1)/T
    i = torch.arange(1000)
    assert torch.allclose(s.alpha_bar(s.index_to_t(i)), s.alpha_bar_table, atol=1e-12)
    assert torch.allclose(s.t_to_index(s.index_to_t(i)), i.double())


def test_zero_terminal_snr_equals_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  rescale_betas_zero_snr=True).alphas_cumprod
    s = get_schedule("scaled_linear", T=1000, zero_terminal_snr=True)
    assert s.alpha_bar_table[-1] == 0.0
    assert torch.allclose(s.alpha_bar_table, ref.double(), atol=1e-6, rtol=0)
    assert s.logsnr(torch.tensor(1.0, dtype=torch.float64)) == -math.inf
    cont = get_schedule("cosine", zero_terminal_snr=True)
    assert cont.alpha(torch.tensor(1.0, dtype=torch.float64)) == 0.0
    assert cont.alpha(torch.tensor(0.0, dtype=torch.float64)) == 1.0


def test_continuous_linear_close_to_its_table():
    """The VP-SDE form of the linear schedule approximates the discrete product
    prod(1 - beta) by exp(-sum beta); the gap is O(sum beta^2) ~ 1e-3 in alpha_bar."""
    cont, disc = get_schedule("linear"), get_schedule("linear", T=1000)
    t = disc.index_to_t(torch.arange(1000))
    assert torch.allclose(cont.alpha_bar(t), disc.alpha_bar_table, atol=2e-3)


def test_edm_and_ve_formulas():
    s = get_schedule("edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    mid = (0.002 ** (1 / 7) + 0.5 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert torch.allclose(s.sigma(t), torch.tensor([0.002, mid, 80.0], dtype=torch.float64))
    ve = get_schedule("ve", sigma_min=0.01, sigma_max=50.0)
    assert ve.sigma(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(math.sqrt(0.01 * 50.0))


def test_cosine_continuous_matches_formula():
    s = get_schedule("cosine")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    ref = torch.tensor([f(u) / f(0) for u in t.tolist()], dtype=torch.float64)
    assert torch.allclose(s.alpha_bar(t), ref, rtol=1e-12)


def test_float32_in_float32_out():
    s = get_schedule("cosine", T=1000)
    a, sig = s.alpha_sigma(torch.rand(5))
    assert a.dtype == torch.float32 and sig.dtype == torch.float32


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "scaled_linear", "edm", "ve"])
def test_config_round_trip(name):
    for T in ([None, 50] if name not in ("edm", "ve") else [None]):
        s = get_schedule(name, T=T)
        s2 = schedule_from_config(s.config())
        assert torch.equal(s.logsnr(T_GRID), s2.logsnr(T_GRID))
    z = zero_terminal_snr_table(get_schedule("linear", T=100))
    z2 = schedule_from_config(z.config())
    assert torch.equal(z.alpha_bar_table, z2.alpha_bar_table)


def test_bad_schedule_input():
    with pytest.raises(DifflabError, match="unknown schedule 'cosin'"):
        get_schedule("cosin")
    with pytest.raises(DifflabError, match="bad parameters"):
        get_schedule("linear", bogus=1)
    with pytest.raises(DifflabError, match="beta_start"):
        get_schedule("linear", beta_start=0.5, beta_end=0.1)
