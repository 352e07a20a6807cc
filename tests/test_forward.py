import math

import torch

from difflab.process import get_schedule, markov_chain, posterior, q_sample, transition


def test_markov_chain_agrees_with_closed_form():
    """Run q(x_i | x_{i-1}) for all 1000 steps of the linear table on N = 1e5 chains from a fixed x0 and
    compare mean and variance with the closed form N(alpha_t x0, sigma_t^2).  Tolerances are 5
    standard errors: sigma/sqrt(N) for the mean, sigma^2 sqrt(2/(N-1)) for the variance."""
    s = get_schedule("linear", T=1000)
    N = 100_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((N,), 0.7, dtype=torch.float64)
    ts = s.index_to_t(torch.arange(1000))
    check = {9, 99, 499, 999}
    stats = {}

    def cb(i, t, x):
        if i in check:
            stats[i] = (x.mean().item(), x.var().item())

    markov_chain(s, x0, ts, generator=g, callback=cb)
    for i, (m, v) in stats.items():
        a, sig = s.alpha_sigma(ts[i])
        a, sig = a.item(), sig.item()
        assert abs(m - a * 0.7) < 5 * sig / math.sqrt(N), (i, m, a * 0.7)
        assert abs(v - sig**2) < 5 * sig**2 * math.sqrt(2 / (N - 1)), (i, v, sig**2)


def test_one_markov_step_is_the_beta_transition():
    s = get_schedule("cosine", T=200)
    for i in [1, 50, 199]:
        a_ts, var = transition(s, s.index_to_t(i - 1), s.index_to_t(i))
        beta = s.betas_table[i]
        assert torch.allclose(a_ts, (1 - beta).sqrt(), atol=1e-12)
        assert torch.allclose(var, beta, atol=1e-12)


def test_posterior_equals_bayes_in_float64():
    """q(x_s | x_t, x0) ∝ q(x_t | x_s) q(x_s | x0): a product of two Gaussians in x_s, computed here
    directly from precisions."""
    g = torch.Generator().manual_seed(1)
    for name, T in [("linear", 1000), ("cosine", None), ("edm", None)]:
        sch = get_schedule(name, T=T)
        for s_, t_ in [(0.1, 0.3), (0.5, 0.51), (0.02, 0.9)]:
            x0 = torch.randn(4, 3, dtype=torch.float64, generator=g)
            x_t = torch.randn(4, 3, dtype=torch.float64, generator=g)
            a_s, sig_s = [v.item() for v in sch.alpha_sigma(torch.tensor(s_, dtype=torch.float64))]
            a_t, sig_t = [v.item() for v in sch.alpha_sigma(torch.tensor(t_, dtype=torch.float64))]
            a_ts = a_t / a_s
            v_ts = sig_t**2 - a_ts**2 * sig_s**2
            prec = a_ts**2 / v_ts + 1 / sig_s**2
            mean_ref = (a_ts * x_t / v_ts + a_s * x0 / sig_s**2) / prec
            mean, var = posterior(sch, x_t, x0, s_, t_)
            assert torch.allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
            assert abs(var.item() - 1 / prec) < 1e-10 * (1 / prec)


def test_posterior_matches_ddpm_beta_tilde():
    s = get_schedule("linear", T=1000)
    ab = s.alpha_bar_table
    for i in [1, 10, 999]:
        z = torch.zeros(1, dtype=torch.float64)
        _, var = posterior(s, z, z, s.index_to_t(i - 1), s.index_to_t(i))
        beta_tilde = (1 - ab[i - 1]) / (1 - ab[i]) * s.betas_table[i]
        assert abs(var.item() - beta_tilde.item()) < 1e-12 * beta_tilde.item() + 1e-15


def test_q_sample_closed_form():
    s = get_schedule("sigmoid")
    x0, eps = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    a, sig = s.alpha_sigma(t)
    assert torch.allclose(q_sample(s, x0, t, eps), a[:, None].float() * x0 + sig[:, None].float() * eps)
