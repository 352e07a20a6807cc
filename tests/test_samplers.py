"""Every sampler: exact-denoiser oracles, convergence order, identities, and diffusers' schedulers."""
import math

import pytest
import torch

from difflab.denoisers import Denoiser, GaussianMixtureDenoiser
from difflab.process import get_schedule
from difflab.sampling import SAMPLERS, time_grid
import difflab.sampling as S
from oracle_net import OracleEpsNet, random_gaussian


_gaussian = random_gaussian


def _mixture(schedule):
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.05, 0.1], [0.1, 0.02], [0.03, 0.03])])
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    den = GaussianMixtureDenoiser(schedule, means, covs, w)
    mean = (w[:, None] * means).sum(0)
    second = sum(w[k] * (covs[k] + torch.outer(means[k], means[k])) for k in range(3))
    return den, mean, second - torch.outer(mean, mean)


# name -> (steps, options, mean tol, cov tol): stochastic samplers get more steps; each tolerance is
# a few standard errors at N = 20000 (<= 0.006 for a mean, <= 0.01 for a covariance entry) plus
# the sampler's discretisation bias at that number of steps.
ORACLE = {
    "ddpm": (500, {}, 0.03, 0.03),
    "ddim": (100, {}, 0.03, 0.03),
    "repaint": (300, {"resample": 2}, 0.03, 0.04),
    "euler": (100, {}, 0.03, 0.03),
    "heun": (40, {"_grid": "karras"}, 0.03, 0.03),  # from sigma/alpha = 80: see test_heun_needs_sigma_max
    "euler_ancestral": (300, {}, 0.03, 0.04),
    "dpmpp_2m": (30, {}, 0.03, 0.03),
    "dpmpp_3m": (30, {}, 0.03, 0.03),
    "dpmpp_2m_sde": (100, {}, 0.03, 0.04),
    "unipc": (30, {"order": 3}, 0.03, 0.03),
    "pc": (300, {"snr": 0.08, "corrector_steps": 1}, 0.05, 0.06),
    "ald": (100, {"steps_per_level": 20, "epsilon": 2e-3}, 0.05, 0.06),
    "ode": (1, {"rtol": 1e-5, "atol": 1e-5}, 0.03, 0.03),
}


def test_oracle_table_covers_every_sampler():
    assert set(ORACLE) == set(SAMPLERS)


@pytest.mark.parametrize("data", ["gaussian", "mixture"])
@pytest.mark.parametrize("name", sorted(ORACLE))
def test_sampler_reproduces_the_data(name, data):
    steps, opts, tol_m, tol_c = ORACLE[name]
    sch = get_schedule("cosine", T=1000)
    den, mean, cov = _gaussian(sch) if data == "gaussian" else _mixture(sch)
    N = 20000
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(N, mean.shape[0], generator=g, dtype=torch.float64)
    opts = dict(opts)
    grid = opts.pop("_grid", "trailing")  # trailing starts at t = 1; leading would start where alpha > 0
    ts = time_grid(sch, steps, grid, **({"sigma_max": 80.0} if grid == "karras" else {}))
    x = SAMPLERS[name].fn(den, x_T, ts, generator=g, **opts)
    assert torch.isfinite(x).all()
    assert torch.allclose(x.mean(0), mean, atol=tol_m), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=tol_c), (torch.cov(x.T), cov)


def test_heun_needs_sigma_max():
    """Heun from t = 1 of the cosine table (sigma/alpha about 3e4) overshoots the variance; started at
    sigma/alpha = 80, as Karras et al. do, it is accurate."""
    sch = get_schedule("cosine", T=1000)
    den, _, cov = _gaussian(sch)
    x_T = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ratio = lambda x: (torch.cov(x.T).trace() / cov.trace()).item()  # noqa: E731
    assert ratio(S.sample_heun(den, x_T, time_grid(sch, 40, "uniform"))) > 1.3
    assert abs(ratio(S.sample_heun(den, x_T, time_grid(sch, 40, "karras", sigma_max=80.0))) - 1) < 0.03


def test_ve_schedules_too():
    for sch in (get_schedule("edm"), get_schedule("ve", sigma_max=20.0)):
        den, mean, cov = _gaussian(sch)
        g = torch.Generator().manual_seed(2)
        x_T = torch.randn(20000, 3, generator=g, dtype=torch.float64) * sch.sigma(torch.tensor(1.0)).item()
        for name, steps, opts in [("heun", 40, {}), ("dpmpp_2m", 40, {}), ("euler_ancestral", 200, {}),
                                  ("pc", 300, {"snr": 0.08})]:
            x = SAMPLERS[name].fn(den, x_T, time_grid(sch, steps, "karras"), generator=g, **opts)
            assert torch.allclose(x.mean(0), mean, atol=0.05), (name, x.mean(0), mean)
            assert torch.allclose(torch.cov(x.T), cov, atol=0.06), (name, torch.cov(x.T), cov)


# -- convergence order --------------------------------------------------------------------------
def _exact_ode_endpoint(den, x_T, sig_T, sig_end):
    """Exact PF-ODE solution for Gaussian data in the VE-equivalent variables: along an eigendirection
    of variance lam, x~(sig) - mu scales as sqrt(lam + sig^2) (Karras et al. eq. 3 solved)."""
    lam, U, mu = den.evals[0], den.evecs[0], den.means[0]
    z = (x_T - mu) @ U
    return mu + (z * ((lam + sig_end**2) / (lam + sig_T**2)).sqrt()) @ U.T


ORDERS = [  # sampler, options, expected order
    ("ddim", {}, 1), ("euler", {}, 1), ("heun", {}, 2), ("dpmpp_2m", {}, 2), ("dpmpp_3m", {}, 3),
    # the reference code's coefficient of DPM-Solver++(3M) (as in diffusers) is second order only
    ("dpmpp_3m", {"dpm_solver_coefficients": True}, 2),
    # UniPC-p: the predictor UniP-p has order p, the corrector UniC raises it to p + 1 (Zhao et al., Thm. 3.1)
    ("unipc", {"order": 2, "corrector": False}, 2), ("unipc", {"order": 2}, 3), ("unipc", {"order": 3}, 4),
]


@pytest.mark.parametrize("name,opts,order", ORDERS)
def test_convergence_order(name, opts, order):
    """Slope of log(max error) against log(steps) between 128 and 256 steps on a log-SNR-uniform grid
    from t=1 to t=0.05 (no jump to 0), continuous cosine schedule, exact Gaussian denoiser, float64.
    The error is against the exact ODE solution at the last grid time; tolerance 0.35 on the slope
    (at 128-256 steps the measured slopes are within 0.25 of the order)."""
    sch = get_schedule("cosine")
    den, _, _ = _gaussian(sch)
    x_T = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errs, ns = [], [128, 256]
    for n in ns:
        ts = time_grid(sch, n, "logsnr", t_min=0.05)[:-1]            # drop the final jump to t = 0
        a, s = sch.alpha_sigma(ts)
        x = SAMPLERS[name].fn(den, x_T, ts, **opts)
        exact = a[-1] * _exact_ode_endpoint(den, x_T / a[0], s[0] / a[0], s[-1] / a[-1])
        errs.append((x - exact).abs().max().item())
    slope = -(math.log(errs[-1]) - math.log(errs[-2])) / math.log(ns[-1] / ns[-2])
    assert abs(slope - order) < 0.35, (name, opts, slope, errs)


def test_adaptive_ode_reports_nfe_and_accuracy():
    sch = get_schedule("cosine")
    den, _, _ = _gaussian(sch)
    from difflab.denoisers import NFECounter
    counted = NFECounter(den)
    x_T = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([1.0, 0.05], dtype=torch.float64)
    stats = {}
    x = S.sample_ode(counted, x_T, ts, rtol=1e-7, atol=1e-7, stats=stats)
    a, s = sch.alpha_sigma(ts)
    exact = a[-1] * _exact_ode_endpoint(den, x_T / a[0], s[0] / a[0], s[-1] / a[-1])
    assert (x - exact).abs().max() < 1e-5
    assert stats["nfe"] == counted.nfe > 0
    loose = NFECounter(den)
    S.sample_ode(loose, x_T, ts, rtol=1e-3, atol=1e-3)
    assert loose.nfe < counted.nfe


# -- identities ---------------------------------------------------------------------------------
def test_ddim_eta0_equals_euler_and_first_order_dpmpp():
    sch = get_schedule("linear", T=1000)
    den, _, _ = _mixture(sch)
    x_T = torch.randn(128, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ts = time_grid(sch, 25)
    ddim = S.sample_ddim(den, x_T, ts)
    euler = S.sample_euler(den, x_T, ts)
    dpm1 = S.dpmpp_multistep(den, x_T, ts, order=1)
    unipc1 = S.sample_unipc(den, x_T, ts, order=1, corrector=False)
    for other in (euler, dpm1, unipc1):
        assert torch.allclose(ddim, other, atol=1e-10)


def test_callback_sees_every_step():
    sch = get_schedule("cosine", T=1000)
    den, _, _ = _gaussian(sch)
    seen = []
    S.sample_heun(den, torch.randn(4, 3, dtype=torch.float64), time_grid(sch, 10),
                  callback=lambda d: seen.append((d["i"], d["x"].shape, d["x0_hat"].shape)))
    assert [i for i, _, _ in seen] == list(range(10))


# -- reference: diffusers' schedulers (test-only dependency) --------------------------------------
def _net_and_denoiser(schedule, clip=None):
    net = OracleEpsNet(schedule)
    return net, Denoiser(net, schedule, "eps", clip_x0=clip).eval()


REFERENCE = [
    # ours, diffusers class, its config, our options, spacing, stochastic
    ("euler", "EulerDiscreteScheduler", {}, {}, "leading"),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}, {}, "leading"),
    ("heun", "HeunDiscreteScheduler", {}, {}, "leading"),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++"}, {}, "trailing"),
    # diffusers' 3M weighs the second-derivative term by half the Taylor coefficient (see samplers.py);
    # with that coefficient difflab agrees with it, and test_dpmpp_3m_differs_from_diffusers_by_that_term
    # checks the exact difference of the default
    ("dpmpp_3m", "DPMSolverMultistepScheduler", {"solver_order": 3, "algorithm_type": "dpmsolver++"},
     {"dpm_solver_coefficients": True}, "trailing"),
    ("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}, {},
     "trailing"),
    ("unipc", "UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2"}, {"order": 2}, "trailing"),
    ("unipc", "UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}, {"order": 3}, "trailing"),
]


@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("ours,cls,cfg,opts,spacing", REFERENCE)
def test_matches_diffusers(ours, cls, cfg, opts, spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    sch = get_schedule("linear", T=1000)
    net, den = _net_and_denoiser(sch)
    ref = getattr(diffusers, cls)(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  timestep_spacing=spacing, **cfg)
    ref.set_timesteps(steps)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x = z * ref.init_noise_sigma
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for t in ref.timesteps:
            eps = net(ref.scale_model_input(x, t), t.float().expand(4))
            x = ref.step(eps, t, x, **({"generator": g} if SAMPLERS[ours].is_stochastic(opts) else {})).prev_sample
        mine = SAMPLERS[ours].fn(den, z, time_grid(sch, steps, spacing), generator=torch.Generator().manual_seed(11),
                                 **opts)
    err = (mine - x).abs().max().item()
    assert err <= 1e-4, err


def test_dpmpp_3m_differs_from_diffusers_by_that_term():
    """The default 3M and the reference-code coefficients (``dpm_solver_coefficients=True``, as diffusers) differ
    only in the weight of the second-derivative term: on a 3-step grid (orders 1, 2, 3; no final jump) the
    first two steps agree exactly and the third differs by exactly one more copy of
    alpha_t h^2 (1/2 - (e^{-h} - 1 + h)/h^2) D2 / h^2, with D2 the divided difference of the three x0_hat
    (Lu et al., arXiv:2211.01095, App. B), computed here from the recorded x0_hat and the log-SNRs."""
    sch = get_schedule("cosine")
    den, _, _ = _gaussian(sch)
    x_T = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = time_grid(sch, 4, "logsnr", t_min=0.2)[:-1]             # 4 times: 3 steps
    runs = {}
    for ref in (False, True):
        seen = []
        runs[ref] = (S.sample_dpmpp_3m(den, x_T, ts, dpm_solver_coefficients=ref, callback=seen.append), seen)
    (x_new, steps_new), (x_ref, steps_ref) = runs[False], runs[True]
    for a, b in zip(steps_new[:2], steps_ref[:2]):
        assert torch.equal(a["x"], b["x"])
    a_t, s_t = sch.alpha_sigma(ts)
    lam = torch.log(a_t / s_t)
    x0 = [d["x0_hat"] for d in steps_new]
    h = lam[3] - lam[2]
    r0, r1 = (lam[2] - lam[1]) / h, (lam[1] - lam[0]) / h
    d2 = ((x0[2] - x0[1]) / r0 - (x0[1] - x0[0]) / r1) / (r0 + r1)
    half_term = a_t[3] * ((torch.expm1(-h) + h) / h**2 - 0.5) * d2
    assert torch.allclose(x_new - x_ref, -half_term, rtol=1e-9, atol=1e-12)
    assert half_term.abs().max() > 1e-4   # the term is not negligible on this grid
