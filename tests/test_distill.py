"""Distillation maths against exact Gaussian teachers: progressive distillation's target, the consistency
parameterisation and the exact consistency function, the CD/CT losses, reflow's pairs and straightness."""
import math

import pytest
import torch

import difflab as dl
from difflab.denoisers import param
from difflab.distill import (ConsistencyObjective, ODEConsistencyFunction, ProgressiveObjective, generate_pairs,
                             ict_steps, lognormal_interval_weights, progressive_target, straightness)
from difflab.errors import DifflabError
from difflab.sampling import SAMPLERS, SampleNoise, time_grid
from flow_oracles import consistency_exact, ode_map, oracle_denoiser
from oracle_net import random_gaussian

FLOW = dl.get_schedule("flow")


class AffineStudent(torch.nn.Module):
    """An x0-predicting "network" x0_hat = A_i x + b_i for the grid time t_i it is called at (a table's
    timestep is the step index t T - 1): the function class of the exact students of Gaussian data."""

    def __init__(self, T, times, A, b):
        super().__init__()
        self.T, self.times, self.A, self.b = T, times, A, b

    def forward(self, x, timestep):
        t = (timestep.double() + 1) / self.T
        i = (t[:, None] - self.times[None]).abs().argmin(1)
        return torch.einsum("bij,bj->bi", self.A[i], x.double()) + self.b[i]


def test_one_round_of_progressive_distillation_reproduces_two_teacher_steps():
    """Salimans & Ho (2022), Algorithm 2, with the exact denoiser of Gaussian data as teacher (cosine table,
    T = 1000, N = 4 student steps): the target x~ makes one student DDIM step land where two teacher steps do
    (to rounding); the 2-step teacher map is affine in z_t, so an affine student fits the targets exactly
    (least squares, residual ~1e-12), its loss under the objective is ~0, and its 4-step DDIM samples equal
    the teacher's 8-step DDIM samples (1e-9)."""
    sch = dl.get_schedule("cosine", T=1000)
    teacher, mean, cov = random_gaussian(sch, D=3)
    N = 4
    grid = time_grid(sch, N, "trailing")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 3, generator=g, dtype=torch.float64)
    A, b = [], []
    for i in range(N):
        t, t2 = grid[i].expand(512), grid[i + 1].expand(512)
        a, s = sch.alpha_sigma(t[0])
        z_t = a * teacher.sample_data(512, g) + s * z
        x_tilde, z_next = progressive_target(teacher, z_t, t, t2)
        a2, s2 = (1.0, 0.0) if t2[0] == 0 else sch.alpha_sigma(t2[0])
        one_step = a2 * x_tilde + s2 * (z_t - a * x_tilde) / s      # one DDIM step with x0_hat = x~
        assert torch.allclose(one_step, z_next, atol=1e-10)
        X = torch.cat([z_t, torch.ones(512, 1, dtype=torch.float64)], 1)
        sol = torch.linalg.lstsq(X, x_tilde).solution
        assert (X @ sol - x_tilde).abs().max() < 1e-9
        A.append(sol[:3].T)
        b.append(sol[3])
    student = dl.Denoiser(AffineStudent(1000, grid[:-1], torch.stack(A), torch.stack(b)), sch, "x0")
    loss = ProgressiveObjective(teacher, N)(student, teacher.sample_data(256, g).float(), g, 0, 0.0)
    assert loss.abs().max() < 1e-8
    x_T = torch.randn(256, 3, generator=g, dtype=torch.float64)
    two = SAMPLERS["ddim"].fn(teacher, x_T, time_grid(sch, 2 * N, "trailing"))
    one = SAMPLERS["ddim"].fn(student, x_T, grid)
    assert torch.allclose(one, two, atol=1e-9)
    # the objective does fail a student that is not fit: the teacher itself, as a 4-step student
    assert ProgressiveObjective(teacher, N)(dl.Denoiser(AffineStudent(1000, grid[:-1], torch.stack(A) * 0.9,
                                                                      torch.stack(b)), sch, "x0"),
                                            teacher.sample_data(64, g).float(), g, 0, 0.0).mean() > 1e-3


@pytest.mark.parametrize("base", ["velocity", "v", "edm"])
def test_consistency_parameterisation(base):
    """f(x, t_min) = x / alpha(t_min) whatever the network outputs (the boundary condition of Song et al. 2023,
    built in: float64 conversions exact to rounding, the float32 Denoiser to float32 rounding); for
    consistency_edm the coefficients are the paper's c_skip = s_d^2 / ((s - s_min)^2 + s_d^2),
    c_out = s_d (s - s_min) / sqrt(s^2 + s_d^2) on x~ = x / alpha; far above s_min the consistency function of a
    network is its base x0_hat (the student starts as its teacher)."""
    kind = f"consistency_{base}"
    g = torch.Generator().manual_seed(0)
    x, F = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    s_min = float(FLOW.sigma_ratio(FLOW.t_min))
    a, s = FLOW.alpha_sigma(torch.tensor(FLOW.t_min, dtype=torch.float64))
    assert (param.to_x0(kind, F, x, a, s, 0.5, s_min) - x / a).abs().max() < 1e-12
    assert (param.to_x0(base, F, x, a, s, 0.5) - x / a).abs().max() > 1e-4     # the base alone is off by ~1e-3 F
    torch.manual_seed(0)
    net = dl.nn.MLP(dim=2, hidden=16, layers=1)
    cm, plain = dl.Denoiser(net, FLOW, kind), dl.Denoiser(net, FLOW, base)
    assert cm.sigma_min == pytest.approx(1e-3 / (1 - 1e-3)) and plain.sigma_min == 0.0
    with torch.no_grad():
        assert torch.allclose(cm(x.float(), FLOW.t_min), x.float() / float(a), atol=1e-6)
        assert torch.allclose(cm(x.float(), 0.7), plain(x.float(), 0.7), atol=2e-3)
    if base == "edm":
        t = torch.tensor(0.4, dtype=torch.float64)
        a, s = FLOW.alpha_sigma(t)
        sig, sd = float(s / a), 0.5
        c_skip = sd**2 / ((sig - s_min) ** 2 + sd**2)
        c_out = sd * (sig - s_min) / math.sqrt(sig**2 + sd**2)
        assert torch.allclose(param.to_x0(kind, F, x, a, s, sd, s_min), c_skip * x / a + c_out * F, atol=1e-12)


@pytest.mark.parametrize("schedule", ["flow", "cosine"])
def test_consistency_function_of_the_exact_denoiser_maps_a_trajectory_to_its_end(schedule):
    """Along a probability-flow trajectory of Gaussian data (the closed-form ODE map from t = 1), the
    consistency function of the exact denoiser - the adaptive ODE solved down to t_min - sends every point to
    the same end, the closed-form x~(t_min) (1e-4, the solver tolerance); a consistency-parameterised network
    that answers with that closed form reproduces it through the param conversions (1e-8)."""
    sch = dl.get_schedule(schedule)
    gauss, _, _ = random_gaussian(sch, D=2)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    end = consistency_exact(gauss, z, 1.0)
    f = ODEConsistencyFunction(gauss, rtol=1e-7)
    cm = oracle_denoiser(lambda x, t: consistency_exact(gauss, x, t), sch, "consistency_x0")
    for t in (0.95, 0.6, 0.3, 0.05, sch.t_min):
        x_t = ode_map(gauss, z, 1.0, t)
        assert torch.allclose(f(x_t, t), end, atol=1e-4), t
        assert torch.allclose(cm(x_t, t), end, atol=1e-8), t
    # the posterior mean is not the consistency function: at t = 0.6 it is far from the end
    assert (gauss(ode_map(gauss, z, 1.0, 0.6), 0.6) - end).abs().max() > 0.1


def test_consistency_losses():
    """The CD loss (Heun teacher steps between Karras neighbours) of the exact consistency function is only the
    Heun steps' error, 1/50 of that of a denoiser read as a consistency function (measured: 1/220 with 18
    levels, 1/570 with 40); CT's loss is finite and positive; the curriculum is Song & Dhariwal's
    N(k) = min(s0 2^floor(k / K'), s1) + 1 for every step of a K = 800 run."""
    gauss, _, _ = random_gaussian(FLOW, D=2)
    g = torch.Generator().manual_seed(0)
    x0 = gauss.sample_data(128, g).float()
    exact = oracle_denoiser(lambda x, t: consistency_exact(gauss, x, t), FLOW, "consistency_x0")
    wrong = oracle_denoiser(lambda x, t: gauss(x, t), FLOW, "consistency_x0")
    cd = ConsistencyObjective(gauss, boundaries=18, metric="l2", weighting="unit")   # the measured ratios
    err = cd(exact, x0, torch.Generator().manual_seed(1), 0, 0.0).mean()
    assert err < 0.02 * cd(wrong, x0, torch.Generator().manual_seed(1), 0, 0.0).mean()
    ct = ConsistencyObjective(None)(exact, x0, torch.Generator().manual_seed(1), 0, 0.5)
    assert torch.isfinite(ct).all() and (ct > 0).all()
    K = 800
    kp = math.floor(K / (math.log2(math.floor(1280 / 10)) + 1))
    assert all(ict_steps(k / K) == min(10 * 2 ** (k // kp), 1280) + 1 for k in range(K))
    with pytest.raises(DifflabError, match="unknown ODE solver"):
        ConsistencyObjective(gauss, solver="rk4")
    # iCT's discretised lognormal (eq. 10): interval n gets P(sigma_n < sigma < sigma_n+1) for
    # log sigma ~ N(P_mean, P_std^2), here up to the factor 2 of erf = 2 Phi - 1 (scipy's lognormal as reference)
    from scipy import stats
    sig = torch.tensor([0.002, 0.01, 0.1, 0.5, 1.0, 3.0, 20.0, 80.0], dtype=torch.float64)
    ref = torch.from_numpy(stats.lognorm(s=2.0, scale=math.exp(-1.1)).cdf(sig.numpy())).diff()
    assert torch.allclose(lognormal_interval_weights(sig, -1.1, 2.0), 2 * ref, rtol=1e-12, atol=0)


def test_consistency_weightings():
    """CD's loss with ``weighting="inverse_interval"`` is the unit-weighted loss divided by the width of each
    sample's interval in sigma/alpha (same generator: same intervals, noises and teacher steps); inverse-interval is
    the default of both distillation and training; other weightings are refused."""
    from difflab.distill.consistency import karras_boundaries
    sch = dl.get_schedule("cosine")
    gauss, *_ = random_gaussian(sch, D=2)
    student = oracle_denoiser(lambda x, t: 0.9 * gauss(x, t), sch, "consistency_x0")
    x0 = gauss.sample_data(256, torch.Generator().manual_seed(0)).float()
    unit = ConsistencyObjective(gauss, boundaries=18, weighting="unit")
    inv = ConsistencyObjective(gauss, boundaries=18)
    assert ConsistencyObjective(None).weighting == "inverse_interval" == inv.weighting
    assert inv.config()["weighting"] == "inverse_interval"
    l_unit = unit(student, x0, torch.Generator().manual_seed(3), 0, 0.0)
    l_inv = inv(student, x0, torch.Generator().manual_seed(3), 0, 0.0)
    widths = karras_boundaries(sch, 18)[1].diff()
    ratio = (l_unit / l_inv).double()
    assert (ratio[:, None] - widths[None, :]).abs().div(widths).min(1).values.max() < 1e-4   # each is a width
    assert ratio.max() / ratio.min() > 100                                                   # of many intervals
    with pytest.raises(DifflabError, match="unknown consistency weighting 'snr'"):
        ConsistencyObjective(gauss, weighting="snr")


def test_cd_crosses_the_top_interval_with_ddim():
    """CD's teacher step over the top interval, from t = 1 of the cosine table (sigma/alpha about 1e4) down to
    sigma/alpha = 80, with the exact denoiser of Gaussian data, against the closed-form flow: the DDIM step that
    CD takes there misses by under 2 % of the data's standard deviation (measured 0.6 %), where a Heun step (what
    CD took before) misses by over 100 % (measured 229 %).  Below 80 a mixed batch still takes Heun steps."""
    from difflab.distill.common import ddim_step, heun_step
    from difflab.distill.consistency import karras_boundaries
    sch = dl.get_schedule("cosine")
    gauss, _, cov = random_gaussian(sch, D=2)
    ts, sig = karras_boundaries(sch, 18)
    assert len(ts) == 19 and float(ts[-1]) == 1.0 and sig[-1] > 1e3 and abs(float(sig[-2]) / 80 - 1) < 1e-3
    B = 4096
    g = torch.Generator().manual_seed(0)
    x0 = gauss.sample_data(B, g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    j = torch.where(torch.arange(B) < B // 2, 17, 9)       # first half: the top interval; second: a middle one
    t_hi, t_lo = ts[j + 1], ts[j]
    a_hi, s_hi = sch.alpha_sigma(t_hi)
    x_hi = a_hi[:, None] * x0 + s_hi[:, None] * z
    cd = ConsistencyObjective(gauss, boundaries=18)
    x_lo = cd.teacher_step(x_hi, t_hi, t_lo, j == 17)
    top = slice(0, B // 2)
    exact = ode_map(gauss, x_hi[top], 1.0, float(ts[-2]))
    a_lo = float(sch.alpha(ts[-2]))
    std = (cov.trace() / 2).sqrt()
    miss = lambda x: float(((x - exact) / a_lo).square().mean().sqrt() / std)  # noqa: E731
    assert miss(x_lo[top]) < 0.02, miss(x_lo[top])
    heun = heun_step(gauss, x_hi[top], t_hi[top], t_lo[top])
    assert miss(heun) > 1.0, miss(heun)
    assert torch.equal(x_lo[top], ddim_step(gauss, x_hi[top], t_hi[top], t_lo[top]))
    rest = slice(B // 2, B)
    assert torch.equal(x_lo[rest], heun_step(gauss, x_hi[rest], t_hi[rest], t_lo[rest]))
    # the loss routes exactly the samples drawn on the top interval (t_hi = 1) through DDIM
    seen = {}
    inner = cd.teacher_step
    def spy(x, th, tl, top, **c):
        seen.update(t_hi=th, top=top)
        return inner(x, th, tl, top, **c)
    cd.teacher_step = spy
    student = oracle_denoiser(lambda x, t: consistency_exact(gauss, x, t), sch, "consistency_x0")
    cd(student, x0[:512].float(), torch.Generator().manual_seed(2), 0, 0.0)
    assert seen["top"].any() and torch.equal(seen["top"], seen["t_hi"] == 1.0)


def test_consistency_sampler_needs_a_consistency_function():
    """Multistep consistency sampling (Song et al. Algorithm 1) on the exact consistency function reproduces the
    data covariance with 1 and 2 steps; on the posterior mean (an ordinary denoiser) one step returns about the
    mean: the variance collapses (0.1 of it)."""
    gauss, mean, cov = random_gaussian(FLOW, D=2)
    f = ODEConsistencyFunction(gauss, rtol=1e-5)
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(3000, 2, generator=g, dtype=torch.float64)
    for steps in (1, 2):
        x = SAMPLERS["consistency"].fn(f, x_T, time_grid(FLOW, steps, "trailing"), generator=g)
        assert torch.allclose(torch.cov(x.T), cov, atol=0.08) and torch.allclose(x.mean(0), mean, atol=0.04)
    x = SAMPLERS["consistency"].fn(gauss, x_T, time_grid(FLOW, 1, "trailing"), generator=g)
    assert torch.cov(x.T).trace() < 0.1 * cov.trace()


def test_consistency_sampler_midpoints():
    """``sigma_ratios`` moves the re-noising levels: the second evaluation happens where sigma/alpha is the level
    asked for (to bisection precision), the exact consistency function still samples the Gaussian from any
    midpoint, and levels that do not fit the steps are refused by name."""
    gauss, mean, cov = random_gaussian(FLOW, D=2)
    f = ODEConsistencyFunction(gauss, rtol=1e-5)
    seen = []

    class Spy:
        schedule = FLOW

        def __call__(self, x, t):
            seen.append(float(torch.as_tensor(t).reshape(-1)[0]))
            return f(x, t)
    spy = Spy()
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(3000, 2, generator=g, dtype=torch.float64)
    for level in (0.3, 2.5):
        seen.clear()
        x = SAMPLERS["consistency"].fn(spy, x_T, time_grid(FLOW, 2, "trailing"), generator=g, sigma_ratios=str(level))
        assert seen[0] == 1.0 and abs(float(FLOW.sigma_ratio(torch.tensor(seen[1], dtype=torch.float64))) - level) < 1e-9
        assert torch.allclose(torch.cov(x.T), cov, atol=0.08) and torch.allclose(x.mean(0), mean, atol=0.04)
    seen.clear()
    SAMPLERS["consistency"].fn(spy, x_T[:4], time_grid(FLOW, 4, "trailing"), generator=g, sigma_ratios=[3, 1, 0.2])
    assert [round(float(FLOW.sigma_ratio(torch.tensor(t, dtype=torch.float64))), 9) for t in seen[1:]] == [3, 1, 0.2]
    for bad, msg in (([0.5, 0.2], "gives 2 noise levels; 2 steps re-noise 1 times"), ([1e9], "must decrease"),
                     ([-1.0], "must decrease")):
        with pytest.raises(DifflabError, match=msg):
            SAMPLERS["consistency"].fn(f, x_T[:4], time_grid(FLOW, 2, "trailing"), generator=g, sigma_ratios=bad)


def test_straightness():
    """For N(0, l I) data the rectified-flow paths are rays, x_t = c(t) z with c(t) = sqrt((1 - t)^2 l + t^2), run
    at varying speed and through a turning point at t = l/(1 + l): Liu et al.'s S = int (c(1) - c(0) - c'(t))^2 dt
    E|z|^2/D (scipy quadrature) and the excess length (|c(1) - c_min| + |c(0) - c_min|)/|c(1) - c(0)| - 1 are
    matched by the 400-step Euler estimates to 2%; for (almost) a point mass mu the flow is the straight,
    constant-speed x_t = (1 - t) mu + t z: S and the excess length vanish."""
    from scipy.integrate import quad
    lam = 4.0
    gauss = dl.GaussianDenoiser(FLOW, torch.zeros(2, dtype=torch.float64), lam * torch.eye(2, dtype=torch.float64))
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = lambda t: math.sqrt((max(1 - t, 1e-4)) ** 2 * lam + t**2)  # noqa: E731
    dc = lambda t: ((1 - t) * -lam + t) / c(t)  # noqa: E731
    integral, _ = quad(lambda t: (c(1) - c(0) - dc(t)) ** 2, 0, 1)
    got = straightness(gauss, z, steps=400)
    expected = integral * float(z.pow(2).mean()) / c(1) ** 2
    c_min = c(lam / (1 + lam))
    excess = (abs(c(1) - c_min) + abs(c(0) - c_min)) / abs(c(1) - c(0)) - 1
    assert got["S"] == pytest.approx(expected, rel=0.02) and got["excess_length"] == pytest.approx(excess, rel=0.02)
    point = dl.GaussianDenoiser(FLOW, torch.tensor([1.5, -1.0], dtype=torch.float64),
                                1e-12 * torch.eye(2, dtype=torch.float64))
    flat = straightness(point, z, steps=20)
    assert flat["S"] < 1e-5 and abs(flat["excess_length"]) < 1e-5   # (the alpha_min floor at t = 1 bends 1e-4)


def test_reflow_pairs_are_the_teachers_samples_and_feed_the_trainer(tmp_path, monkeypatch):
    """generate_pairs returns the noise of sample i's stream and exactly what difflab.sample draws from it; a
    stochastic setting is refused; a data set with noise makes the trainer use that noise for its samples."""
    gauss, _, _ = random_gaussian(FLOW, D=2)
    z, x = generate_pairs(gauss, 10, sampler="dpmpp_2m", steps=5, seed=3, batch_size=4, progress=False, shape=(2,))
    ref = dl.sample(gauss, n=10, shape=(2,), sampler="dpmpp_2m", steps=5, grid="trailing", seed=3, progress=False)
    assert torch.equal(x, ref.x) and torch.equal(z, SampleNoise(3, range(10)).randn((2,)))
    with pytest.raises(DifflabError, match="deterministic"):
        generate_pairs(gauss, 4, sampler="ddim", steps=3, eta=1.0, shape=(2,), progress=False)
    from difflab.data import PointData
    from difflab.train import loop
    seen = []
    real = loop.denoising_loss
    monkeypatch.setattr(loop, "denoising_loss", lambda den, x0, t, eps, *a, **k: seen.append((x0, eps)) or
                        real(den, x0, t, eps, *a, **k))
    data = PointData(x=x.float(), noise=z)
    den = dl.Denoiser(dl.nn.MLP(dim=2, hidden=8, layers=1), FLOW, "velocity")
    dl.train(den, data, tmp_path / "r", steps=2, batch_size=6, progress=False, sample_every=0, sample_n=2,
             sample_steps=1, weighting="flow")
    for x0, eps in seen:
        rows = [int((data.x == r).all(1).nonzero()[0]) for r in x0]
        assert torch.equal(eps, z[rows])
    with pytest.raises(DifflabError, match="noise of shape"):
        PointData(x=x.float(), noise=z[:3])
