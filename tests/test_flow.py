"""Flow matching / rectified flow: the linear-interpolant schedule, velocity prediction, the flow-matching
loss, logit-normal t, and every sampler and the likelihood on it, against closed forms of Gaussian data."""
import math

import pytest
import torch

import difflab as dl
from difflab.denoisers import param
from difflab.errors import DifflabError
from difflab.losses import denoising_loss, loss_weight
from difflab.process import DiscreteSchedule, logit_normal_density, propose_t
from difflab.sampling import SAMPLERS, time_grid
from flow_oracles import ode_map
from oracle_net import random_gaussian

FLOW = dl.get_schedule("flow")


def test_velocity_is_the_time_derivative_of_the_interpolant():
    """On the flow schedule the velocity target eps - x0 is dx_t/dt (central differences of
    x_t = alpha_t x0 + sigma_t eps, exact for a linear function up to rounding), and the conversions
    velocity <-> (x0, eps) invert each other there and on a VP schedule."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(16, 3, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)
    t = torch.rand(16, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-4
    xt = lambda tt: FLOW.alpha(tt) * x0 + FLOW.sigma(tt) * eps  # noqa: E731
    u = param.target("velocity", x0, eps, FLOW.alpha(t), FLOW.sigma(t))
    assert torch.allclose(u, (xt(t + h) - xt(t - h)) / (2 * h), atol=1e-9)
    for sch in (FLOW, dl.get_schedule("cosine")):
        a, s = sch.alpha_sigma(t)
        x_t = a * x0 + s * eps
        assert torch.allclose(param.x0_from_velocity(u, x_t, a, s), x0, atol=1e-12)
        assert torch.allclose(param.eps_from_velocity(u, x_t, a, s), eps, atol=1e-12)


def test_flow_matching_loss_is_a_weighted_x0_loss():
    """Velocity prediction with uniform weighting is the flow-matching loss |u_hat - (eps - x0)|^2 (computed here
    by hand), and it equals (1/t^2) |x0_hat - x0|^2 on the flow schedule; the "flow" weighting gives the same
    x0-space weight to every parameterisation, and is "uniform" for velocity."""
    torch.manual_seed(0)
    net = dl.nn.MLP(dim=2, hidden=16, layers=1)
    den = dl.Denoiser(net, FLOW, "velocity")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(32, 2, generator=g), torch.randn(32, 2, generator=g)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.98 + 0.01
    with torch.no_grad():
        loss = denoising_loss(den, x0, t, eps, "uniform")
        assert torch.allclose(loss, denoising_loss(den, x0, t, eps, "flow"))
        x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
        u_hat = den.raw(x_t.float(), t)
        fm = (u_hat - (eps - x0)).pow(2).mean(1)
        x0_hat = den(x_t.float(), t)
    assert torch.allclose(loss, fm, rtol=1e-5)
    assert torch.allclose(loss, (x0_hat - x0).pow(2).mean(1) / t.float() ** 2, rtol=1e-4)
    a, s = FLOW.alpha_sigma(t)
    # every parameterisation's weighted residual is the same x0-space loss: the residual in k's own output space
    # is recomputed from param.target (not from the Jacobian the weighting is built on)
    x0d, epsd, xtd = x0.double(), eps.double(), x_t.double()
    x0h = x0_hat.double()
    ah, sh = a[:, None], s[:, None]
    eps_h = param.eps_from_x0(x0h, xtd, ah, sh)
    want = (x0h - x0d).pow(2).mean(1) / t**2
    for k in param.BASE_PREDICTIONS:
        res = (param.target(k, x0h, eps_h, ah, sh) - param.target(k, x0d, epsd, ah, sh)).pow(2).mean(1)
        assert torch.allclose(loss_weight("flow", k, a, s) * res, want, rtol=1e-9), k
    assert torch.allclose(loss_weight("flow", "velocity", a, s), torch.ones_like(a), rtol=1e-12)


def test_logit_normal_proposal():
    """t = sigmoid(m + s z): its logit is N(m, s^2) (Kolmogorov-Smirnov), its density integrates to 1 and is
    what the samples show; on a table t moves up to a knot; the uniform proposal is the schedule's own draw,
    from the same generator state (so default training runs are unchanged)."""
    from scipy import integrate, stats
    g = torch.Generator().manual_seed(0)
    t = propose_t(FLOW, 20000, g, "logit_normal", mean=0.5, std=0.8)
    logit = (t.log() - (-t).log1p()).numpy()
    assert stats.kstest(logit, "norm", args=(0.5, 0.8)).pvalue > 0.01
    total, _ = integrate.quad(lambda v: float(logit_normal_density(torch.tensor(v), 0.5, 0.8)), 0, 1)
    assert total == pytest.approx(1.0, abs=1e-6)
    hist = torch.histc(t.float(), 10, 0, 1) / len(t) / 0.1
    mid = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    assert torch.allclose(hist.double(), logit_normal_density(mid, 0.5, 0.8), atol=0.08)
    table = dl.get_schedule("cosine", T=100)
    assert isinstance(table, DiscreteSchedule)
    tk = propose_t(table, 500, g, "logit_normal")
    assert torch.allclose(tk * 100, (tk * 100).round()) and tk.min() >= 0.01 and tk.max() <= 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(propose_t(FLOW, 7, g1), FLOW.sample_t(7, generator=g2))
    with pytest.raises(DifflabError, match="unknown t proposal"):
        propose_t(FLOW, 3, g, "lognormal")


def test_rectified_flow_ode_transports_the_gaussian_exactly():
    """The ODE dx/dt = u(x, t) with the exact velocity of Gaussian data, u = eps_hat - x0_hat, integrated by Euler
    in t by hand, converges at order 1 to the closed-form transport map z -> x0 (which carries N(0, I) to
    N(mu, Sigma)); DDIM on the flow schedule is that same Euler method (to rounding), and the adaptive ODE
    sampler matches the map to its tolerance.  (The identity DDIM = Euler in t holds where alpha = 1 - t, i.e.
    below the floor alpha_min = 1e-4 at t = 1: from t = 1 the two differ by 1e-4 x0_hat.)"""
    gauss, mean, cov = random_gaussian(FLOW, D=3)
    z = torch.randn(256, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = ode_map(gauss, z, 1.0, 0.0)
    # the map is affine, x0 = mu + M z, with M M^T = Sigma up to the alpha_min floor at t = 1 (1e-4)
    M = torch.linalg.lstsq(z, exact - mean).solution.T
    assert torch.allclose(M @ M.T, cov, atol=1e-3)

    def euler(n, t_max=1.0):
        ts = torch.linspace(t_max, 0, n + 1, dtype=torch.float64)
        x = z
        for t, s in zip(ts[:-1], ts[1:]):
            a, sig = FLOW.alpha_sigma(t)
            x0_hat = gauss(x, t)
            u = param.eps_from_x0(x0_hat, x, a, sig) - x0_hat
            x = x + (s - t) * u
        return x
    errs = [(euler(n) - exact).abs().max().item() for n in (64, 128)]
    assert 1.7 < errs[0] / errs[1] < 2.3 and errs[1] < 0.06, errs
    ddim = SAMPLERS["ddim"].fn(gauss, z, time_grid(FLOW, 20, "trailing", t_max=0.999))
    assert (ddim - euler(20, 0.999)).abs().max() < 1e-12
    ode = SAMPLERS["ode"].fn(gauss, z, time_grid(FLOW, 1, "uniform"), rtol=1e-6, atol=1e-6)
    assert (ode - exact).abs().max() < 1e-4


# sampler -> (steps, grid, options): the multistep solvers on a log-SNR grid (from t = 1 a uniform grid's first
# step spans 12 units of log-SNR: alpha falls from 0.05 to its 1e-4 floor), Heun and ALD from moderate
# sigma/alpha as on VP schedules; the consistency sampler runs on the exact consistency function
FLOW_SETTINGS = {
    "ddpm": (100, "uniform", {}), "repaint": (100, "uniform", {"resample": 2}),
    "ddim": (50, "uniform", {}), "euler": (50, "uniform", {}),
    "heun": (20, "karras", {"sigma_max": 80.0}), "euler_ancestral": (100, "uniform", {}),
    "dpmpp_2m": (20, "logsnr", {}), "dpmpp_3m": (20, "logsnr", {}), "dpmpp_2m_sde": (50, "logsnr", {}),
    "unipc": (20, "logsnr", {"order": 3}), "pc": (100, "uniform", {"snr": 0.05}),
    # ALD: step epsilon = 2 sigma_L^2 (sigma_L = 1e-3): the default 0.1 sigma_L^2 does not mix in 20 steps a level
    "ald": (15, "logsnr", {"sigma_max": 50.0, "steps_per_level": 20, "epsilon": 2e-6}),
    "ode": (1, "uniform", {"rtol": 1e-4}),
    "consistency": (2, "trailing", {}),
}


def test_flow_settings_cover_every_sampler():
    assert set(FLOW_SETTINGS) == set(SAMPLERS)


@pytest.mark.parametrize("name", sorted(FLOW_SETTINGS))
def test_every_sampler_reproduces_gaussian_data_on_the_flow_schedule(name):
    """Driven by the exact denoiser of 2-D Gaussian data under the flow schedule, each sampler reproduces the
    data mean and covariance.  N = 4000: a covariance entry has a standard error <= 0.025 here; tolerances
    0.03 (mean) and 0.08 (covariance) are about 3 standard errors plus the discretisation bias at these steps."""
    from difflab.distill import ODEConsistencyFunction
    gauss, mean, cov = random_gaussian(FLOW, D=2)
    steps, grid, opts = FLOW_SETTINGS[name]
    opts = dict(opts)
    ts = time_grid(FLOW, steps, grid, sigma_max=opts.pop("sigma_max", None))
    den = ODEConsistencyFunction(gauss, rtol=1e-4) if name == "consistency" else gauss
    g = torch.Generator().manual_seed(1)
    x = SAMPLERS[name].fn(den, torch.randn(4000, 2, generator=g, dtype=torch.float64), ts, generator=g, **opts)
    assert torch.allclose(x.mean(0), mean, atol=0.03), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.08), (torch.cov(x.T), cov)


def test_likelihood_on_the_flow_schedule_is_the_gaussian_density():
    """The probability-flow likelihood under the flow schedule equals log N(x; mu, Sigma + sigma~_min^2 I), the
    density at t_min, to 1e-3 nats (the prior at sigma/alpha = 1e4 ignores the mean: about |mu|/1e4)."""
    from difflab.metrics import log_likelihood
    gauss, mean, cov = random_gaussian(FLOW, D=2)
    x = gauss.sample_data(8, torch.Generator().manual_seed(0))
    s_min = float(FLOW.sigma_ratio(FLOW.t_min))
    ref = torch.distributions.MultivariateNormal(mean, cov + s_min**2 * torch.eye(2, dtype=torch.float64))
    assert torch.allclose(log_likelihood(gauss, x), ref.log_prob(x), atol=1e-3)


def test_flow_schedule_refuses_a_table_and_bad_floors():
    with pytest.raises(DifflabError, match="not variance-preserving"):
        dl.get_schedule("flow", T=1000)
    with pytest.raises(DifflabError, match="alpha_min"):
        dl.get_schedule("flow", alpha_min=0.0)
    assert dl.process.schedule_from_spec("flow").name == "flow"   # the CLI's default T does not apply
    assert math.isfinite(float(FLOW.logsnr(1.0))) and float(FLOW.t_of_sigma_ratio(80.0)) == pytest.approx(80 / 81)
