"""The denoiser's public maths against closed forms of Gaussian data: the denoising loss and its
weightings, the input scaling c_in, and eps_hat / v_hat / score_hat."""
import math

import pytest
import torch

import difflab as dl
from difflab.denoisers import param
from difflab.losses import denoising_loss
from oracle_net import random_gaussian

SIGMA_DATA = 0.5


def _c_in(alpha, sigma, vp: bool, kind: str):
    """Karras et al. (arXiv:2206.00364) Table 1: c_in = 1/sqrt(sigma^2 + sigma_data^2) in VE variables, i.e.
    1/sqrt(sigma^2 + alpha^2 sigma_data^2) on x_t; VP networks (DDPM) take x_t unscaled unless they are EDM."""
    if vp and kind != "edm":
        return torch.ones_like(alpha)
    return 1.0 / (sigma**2 + alpha**2 * SIGMA_DATA**2).sqrt()


class ExactNet(torch.nn.Module):
    """A "network" answering in parameterisation ``kind`` with the exact posterior mean of Gaussian data: it
    undoes c_in and the timestep map (1000 t on continuous schedules), asks the oracle for x0_hat and returns
    the output F whose conversion gives that x0_hat."""

    def __init__(self, oracle, kind: str):
        super().__init__()
        self.oracle, self.kind, self.inputs = oracle, kind, []

    def forward(self, x_in, timestep):
        sch = self.oracle.schedule
        t = timestep.double() / 1000
        a, s = sch.alpha_sigma(t)
        a, s = a[:, None], s[:, None]
        x_t = x_in.double() / _c_in(a, s, sch.variance_preserving, self.kind)
        self.inputs.append(x_in)
        x0 = self.oracle(x_t, t)
        return param.target(self.kind, x0, (x_t - a * x0) / s, a, s, SIGMA_DATA).to(x_in.dtype)


def _tr_posterior_cov(cov, alpha, sigma):
    """tr Cov[x0 | x_t] = sum_k l_k sigma^2 / (alpha^2 l_k + sigma^2) over the eigenvalues l_k of Sigma."""
    lam = torch.linalg.eigvalsh(cov)
    return float((lam * sigma**2 / (alpha**2 * lam + sigma**2)).sum())


def _x0_weight(kind: str, weighting: str, a: float, s: float) -> float:
    """The weight on |x0_hat - x0|^2 that each (parameterisation, weighting) puts, derived from the errors of
    each target under an x0 error e: eps -alpha e/sigma, v -(alpha^2 + sigma^2) e/sigma, score alpha e/sigma^2."""
    snr = a**2 / s**2
    if weighting == "uniform":
        return {"x0": 1.0, "eps": snr, "v": (a**2 + s**2) ** 2 / s**2, "score": a**2 / s**4}[kind]
    if weighting == "snr":
        return snr
    if weighting == "min_snr":
        return min(snr, 5.0)
    sig = s / a
    return (sig**2 + SIGMA_DATA**2) / (sig * SIGMA_DATA) ** 2   # edm, eq. 8


CASES = [(k, w) for k in ("x0", "eps", "v", "score") for w in ("uniform", "snr", "min_snr")] + \
        [("edm", "edm"), ("v", "edm")]


@pytest.mark.parametrize("schedule", ["cosine", "edm"])
@pytest.mark.parametrize("kind,weighting", CASES)
def test_denoising_loss_of_the_exact_denoiser_is_the_weighted_posterior_variance(kind, weighting, schedule):
    """With the exact network, E[loss | t] = lambda(t) tr Cov[x0 | x_t] / D, lambda the weighting in x0 space:
    20000 draws at t = 0.2, 0.5, 0.8 agree with the closed form within 5 standard errors."""
    sch = dl.get_schedule(schedule)
    oracle, mean, cov = random_gaussian(sch, D=3)
    den = dl.Denoiser(ExactNet(oracle, kind), sch, kind, sigma_data=SIGMA_DATA)
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.distributions.MultivariateNormal(mean, cov).sample((n,)).double()
    for t in (0.2, 0.5, 0.8):
        tt = torch.full((n,), t, dtype=torch.float64)
        eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
        loss = denoising_loss(den, x0, tt, eps, weighting).double()
        a, s = (float(v) for v in sch.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
        expect = _x0_weight(kind, weighting, a, s) * _tr_posterior_cov(cov, a, s) / 3
        se = float(loss.std()) / math.sqrt(n)
        assert abs(float(loss.mean()) - expect) < 5 * se, (t, float(loss.mean()), expect, se)


@pytest.mark.parametrize("schedule,kind", [("edm", "eps"), ("ve", "v"), ("edm", "edm"), ("cosine", "edm"),
                                           ("cosine", "v")])
def test_input_scaling(schedule, kind):
    """Variance-exploding schedules and EDM preconditioning feed the network c_in x_t with unit variance for
    data of standard deviation sigma_data at every noise level; VP networks see x_t itself."""
    sch = dl.get_schedule(schedule)
    std = torch.full((4,), SIGMA_DATA, dtype=torch.float64)
    oracle = dl.GaussianDenoiser(sch, torch.zeros(4, dtype=torch.float64), torch.diag(std**2))
    net = ExactNet(oracle, kind)
    den = dl.Denoiser(net, sch, kind, sigma_data=SIGMA_DATA)
    g = torch.Generator().manual_seed(1)
    for t in (0.1, 0.5, 0.9):
        x_t = dl.q_sample(sch, torch.randn(20000, 4, generator=g, dtype=torch.float64) * SIGMA_DATA, t,
                          generator=g)
        den(x_t, t)
        var = float(net.inputs[-1].var())
        if sch.variance_preserving and kind != "edm":
            assert torch.equal(net.inputs[-1], x_t)
        else:
            assert abs(var - 1) < 0.03, (t, var)


@pytest.mark.parametrize("schedule", ["cosine", "edm"])
def test_eps_v_and_score_of_the_exact_denoiser(schedule):
    """Tweedie: score_hat of the exact posterior mean is the score of the noisy marginal
    N(alpha mu, alpha^2 Sigma + sigma^2 I), -(alpha^2 Sigma + sigma^2 I)^{-1}(x - alpha mu) (computed by a linear
    solve); eps_hat = -sigma score; v_hat = (alpha x_t - (alpha^2 + sigma^2) x0_hat)/sigma."""
    sch = dl.get_schedule(schedule)
    oracle, mean, cov = random_gaussian(sch, D=3)
    x_t = torch.randn(64, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    for t in (0.05, 0.3, 0.7):
        a, s = (float(v) for v in sch.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
        x0 = oracle(x_t, t)
        marginal = a**2 * cov + s**2 * torch.eye(3, dtype=torch.float64)
        score = -torch.linalg.solve(marginal, (x_t - a * mean).T).T
        assert torch.allclose(dl.score_hat(sch, x_t, t, x0), score, rtol=1e-8, atol=1e-10)
        assert torch.allclose(dl.eps_hat(sch, x_t, t, x0), -s * score, rtol=1e-8, atol=1e-10)
        assert torch.allclose(dl.v_hat(sch, x_t, t, x0), (a * x_t - (a**2 + s**2) * x0) / s, rtol=1e-8, atol=1e-10)
