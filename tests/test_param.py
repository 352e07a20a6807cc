import pytest
import torch

from difflab.denoisers import param
from difflab.losses import loss_weight, x0_jacobian_sq


def _random_as(n=64, vp=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    if vp:
        a = torch.rand(n, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
        return a, (1 - a**2).sqrt()
    return torch.ones(n, 1, dtype=torch.float64), torch.rand(n, 1, generator=g, dtype=torch.float64) * 80 + 0.002


@pytest.mark.parametrize("vp", [True, False])
@pytest.mark.parametrize("kind", param.PREDICTIONS)
def test_round_trip(kind, vp):
    a, s = _random_as(vp=vp)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(64, 5, dtype=torch.float64, generator=g)
    eps = torch.randn(64, 5, dtype=torch.float64, generator=g)
    x_t = a * x0 + s * eps
    out = param.target(kind, x0, eps, a, s, 0.5)
    assert torch.allclose(param.to_x0(kind, out, x_t, a, s, 0.5), x0, rtol=1e-9, atol=1e-9)


def test_pairwise_conversions():
    a, s = _random_as()
    x0, eps = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    x_t = a * x0 + s * eps
    v = param.v_from_x0_eps(x0, eps, a, s)
    assert torch.allclose(param.x0_from_v(v, x_t, a, s), x0)
    assert torch.allclose(param.eps_from_v(v, x_t, a, s), eps)
    assert torch.allclose(param.eps_from_x0(x0, x_t, a, s), eps)
    assert torch.allclose(param.x0_from_eps(eps, x_t, a, s), x0)
    score = param.score_from_eps(eps, s)
    assert torch.allclose(param.eps_from_score(score, s), eps)
    # score of N(a x0, s^2) at x_t given x0 is -(x_t - a x0)/s^2
    assert torch.allclose(score, -(x_t - a * x0) / s**2)


@pytest.mark.parametrize("kind", param.PREDICTIONS)
def test_x0_jacobian_by_autograd(kind):
    a, s = _random_as(8)
    x_t = torch.randn(8, 1, dtype=torch.float64)
    out = torch.randn(8, 1, dtype=torch.float64, requires_grad=True)
    param.to_x0(kind, out, x_t, a, s, 0.5).sum().backward()
    assert torch.allclose(out.grad**2, x0_jacobian_sq(kind, a, s, 0.5))


def test_weightings_are_equivalent_across_parameterisations():
    """min-SNR weighting must give the same x0-space loss whatever the network predicts."""
    a, s = _random_as(16)
    for w in ("snr", "min_snr", "edm"):
        vals = [loss_weight(w, k, a, s) / x0_jacobian_sq(k, a, s) for k in param.PREDICTIONS]
        for v in vals[1:]:
            assert torch.allclose(v, vals[0])
    # eps with snr weighting is plain eps-MSE: weight 1
    assert torch.allclose(loss_weight("snr", "eps", a, s), torch.ones_like(a))
