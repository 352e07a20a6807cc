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
    if T and name in ("edm", "ve", "flow"):
        with pytest.raises(DifflabError, match="variance-exploding|not variance-preserving"):
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
    elif name == "flow":
        # the linear interpolant: alpha + sigma = 1 up to the floor alpha_min = 1e-4 near t = 1
        assert a[0] == 1.0 and sig[0] == 0.0 and sig[-1] == 1.0 and a[-1] == s.alpha_min
        exact = T_GRID <= 1 - s.alpha_min
        assert torch.equal(a[exact], 1 - T_GRID[exact]) and torch.equal(sig, T_GRID)
        assert torch.isfinite(s.logsnr(T_GRID[1:])).all()
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


def test_edm_and_ve_sigmas_equal_diffusers():
    """EDM (Karras et al. eq. 5): sigma at t = 1 - i/(N-1) equals the Karras sigmas of diffusers'
    EDMEulerScheduler (rho 7, 0.002..80); VE: sigma(t) equals ScoreSdeVeScheduler's sigma_min (sigma_max /
    sigma_min)^t on its own timesteps.  diffusers keeps float32: relative 1e-5."""
    diffusers = pytest.importorskip("diffusers")
    edm = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_schedule="karras", rho=7.0)
    edm.set_timesteps(12)
    ours = get_schedule("edm", sigma_min=0.002, sigma_max=80.0, rho=7.0)
    t = 1 - torch.arange(12, dtype=torch.float64) / 11
    assert torch.allclose(ours.sigma(t), edm.sigmas[:-1].double(), rtol=1e-5, atol=0)
    ve = diffusers.ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0, sampling_eps=1e-5)
    ve.set_timesteps(10)
    ve.set_sigmas(10)
    ours = get_schedule("ve", sigma_min=0.01, sigma_max=50.0)
    assert torch.allclose(ours.sigma(ve.timesteps.double()), ve.sigmas.double(), rtol=1e-5, atol=0)


def test_continuous_cosine_equals_diffusers_at_the_knots():
    """The continuous cosine alpha_bar(k/T) telescopes to the cumulative product of diffusers' squaredcos_cap_v2
    betas wherever they are not clipped at 0.999 (all but the last few of 1000)."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    unclipped = int((ref.betas < 0.999).sum())
    k = torch.arange(1, unclipped + 1, dtype=torch.float64)
    cont = get_schedule("cosine").alpha_bar(k / 1000)
    assert unclipped > 990
    assert torch.allclose(cont, ref.alphas_cumprod[:unclipped].double(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,beta", [
    ("linear", lambda s, b0, b1: b0 + s * (b1 - b0)),
    ("scaled_linear", lambda s, b0, b1: (b0**0.5 + s * (b1**0.5 - b0**0.5)) ** 2)])
def test_continuous_vp_schedules_integrate_their_beta(name, beta):
    """The continuous VP forms are the VP SDE (Song et al. 2021, eq. 33): alpha_bar(t) = exp(-int_0^t beta(s) ds)
    with beta(s) = T beta_i(s), checked by numerical quadrature (scipy.integrate.quad)."""
    from scipy.integrate import quad
    b0, b1 = (1e-4, 0.02) if name == "linear" else (0.00085, 0.012)
    sched = get_schedule(name, beta_start=b0, beta_end=b1)
    for t in (0.05, 0.3, 0.6, 1.0):
        integral, _ = quad(lambda s: 1000 * beta(s, b0, b1), 0, t, epsabs=1e-13)
        got = float(sched.alpha_bar(torch.tensor(t, dtype=torch.float64)))
        assert got == pytest.approx(math.exp(-integral), rel=1e-10)


def test_sigmoid_schedule_is_symmetric():
    """With start = -end the sigmoid's alpha_bar is point-symmetric about t = 1/2: alpha_bar(t) +
    alpha_bar(1 - t) = 1 and alpha_bar(1/2) = 1/2 (a property of the schedule, not its formula re-typed)."""
    s = get_schedule("sigmoid", start=-3.0, end=3.0, tau=0.7)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    assert torch.allclose(s.alpha_bar(t) + s.alpha_bar(1 - t), torch.ones_like(t), atol=1e-12)
    assert float(s.alpha_bar(torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_inversions(name):
    """t_of_logsnr inverts logsnr (bisection to float64 precision) and t_of_sigma_ratio inverts
    sigma_ratio = sigma/alpha = exp(-logsnr/2) on every schedule (the EDM sigma is the inverse of its
    log-SNR: sigma(t) = exp(-logsnr(t)/2) with alpha = 1)."""
    s = get_schedule(name)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    assert torch.allclose(s.t_of_logsnr(s.logsnr(t)), t, atol=1e-10)
    a, sig = s.alpha_sigma(t)
    assert torch.allclose(s.sigma_ratio(t), sig / a, rtol=1e-12)
    assert torch.allclose(s.t_of_sigma_ratio(sig / a), t, atol=1e-10)
    assert float(s.t_of_sigma_ratio(float(sig[10] / a[10]))) == pytest.approx(float(t[10]), abs=1e-10)
    assert s.t_min == 1e-3
    if s.variance_preserving:
        assert get_schedule(name, T=200).t_min == 1 / 200


def test_float32_in_float32_out():
    s = get_schedule("cosine", T=1000)
    a, sig = s.alpha_sigma(torch.rand(5))
    assert a.dtype == torch.float32 and sig.dtype == torch.float32


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid", "scaled_linear", "edm", "ve", "flow"])
def test_config_round_trip(name):
    for T in ([None, 50] if name not in ("edm", "ve", "flow") else [None]):
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
