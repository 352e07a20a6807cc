"""Conditioning, guidance and editing against exact oracles: a Gaussian mixture whose component is the class
label (its exact conditional and unconditional denoisers, and its exact noisy classifier p(k | x_t))."""
import pytest
import torch

import difflab as dl
from difflab.denoisers import GaussianMixtureDenoiser
from difflab.errors import DifflabError
from difflab.guidance import (Autoguidance, ClassifierFreeGuidance, ClassifierGuidance, ConstrainedDenoiser,
                              conjugate_gradient, downsampling_operator, guided_denoiser, img2img, inpaint,
                              inpainting_operator, rescale_guided)

N = 4000
# tolerances: with N = 4000 the standard error of a mean is sqrt(var / N) <= 0.005 and of a covariance entry
# about sqrt(2 / N) var <= 0.022 var; 5 standard errors plus the sampler's discretisation bias at 30 steps
TOL_MEAN, TOL_COV = 0.03, 0.03


def _mixture():
    sch = dl.get_schedule("cosine", T=1000)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    covs = torch.stack([torch.diag(torch.tensor(v, dtype=torch.float64)) for v in ([0.05, 0.1], [0.1, 0.02], [0.03, 0.03])])
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    den = GaussianMixtureDenoiser(sch, means, covs, w)
    den.data_shape = (2,)
    mean = (w[:, None] * means).sum(0)
    second = sum(w[k] * (covs[k] + torch.outer(means[k], means[k])) for k in range(3))
    return den, means, covs, mean, second - torch.outer(mean, mean)


def _moments_match(x, mean, cov, tol_mean=TOL_MEAN, tol_cov=TOL_COV):
    x = x.double()
    assert torch.allclose(x.mean(0), mean, atol=tol_mean), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=tol_cov), (torch.cov(x.T), cov)


def _sample(den, label=None, **kw):
    cond = None if label is None else {"label": torch.full((N,), label)}
    kw = {"sampler": "dpmpp_2m", "steps": 30, "grid": "trailing", **kw}
    return dl.sample(den, n=N, cond=cond, progress=False, batch_size=N, **kw)


def test_cfg_scale_one_samples_the_component_and_zero_the_mixture():
    """w = 1 is the conditional model: component 1 exactly (mean (1, 0.5), covariance diag(0.1, 0.02)); w = 0 is
    the unconditional model: the whole mixture.  Each guided step evaluates the network on a doubled batch: 2 NFE."""
    den, means, covs, mean, cov = _mixture()
    r1 = _sample(ClassifierFreeGuidance(den, 1.0), label=1)
    _moments_match(r1.x, means[1], covs[1])
    assert r1.nfe == 30
    r0 = _sample(ClassifierFreeGuidance(den, 0.0), label=1)
    _moments_match(r0.x, mean, cov, tol_cov=0.05)
    assert r0.nfe == 60


def test_cfg_is_the_linear_extrapolation_and_the_interval_switches_it_off():
    """D_w = D_uncond + w (D_cond - D_uncond) pointwise; outside the guidance interval the conditional model alone
    (1 evaluation); rescaling with phi = 0 changes nothing and with phi = 1 matches the std of the conditional
    noise prediction."""
    den, *_ = _mixture()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lab = torch.tensor([0, 1, 2, 0, 1, 2])
    null = torch.full_like(lab, 3)
    for t in (0.3, 0.7):
        c, u = den(x, t, label=lab), den(x, t, label=null)
        g = ClassifierFreeGuidance(den, 2.5)
        assert torch.allclose(g(x, t, label=lab), u + 2.5 * (c - u), atol=1e-12) and g.last_nfe == 2
        assert torch.allclose(ClassifierFreeGuidance(den, 2.5, rescale=0.0)(x, t, label=lab), u + 2.5 * (c - u))
    sch = den.schedule
    sig_of = lambda t: float(sch.sigma_ratio(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    g = ClassifierFreeGuidance(den, 3.0, interval=(sig_of(0.4), sig_of(0.6)))
    assert torch.allclose(g(x, 0.8, label=lab), den(x, 0.8, label=lab)) and g.last_nfe == 1      # above the interval
    assert torch.allclose(g(x, 0.2, label=lab), den(x, 0.2, label=lab)) and g.last_nfe == 1      # below it
    assert not torch.allclose(g(x, 0.5, label=lab), den(x, 0.5, label=lab)) and g.last_nfe == 2
    # rescale phi = 1: the guided eps has the per-sample std of the conditional eps
    t = torch.full((6,), 0.5, dtype=torch.float64)
    a, s = sch.alpha_sigma(t)
    c, u = den(x, t, label=lab), den(x, t, label=null)
    out = rescale_guided(u + 4 * (c - u), c, x, a, s, 1.0)
    eps = lambda x0: (x - a[:, None] * x0) / s[:, None]  # noqa: E731
    assert torch.allclose(eps(out).std(1), eps(c).std(1), rtol=1e-10)


def test_classifier_guidance_with_the_exact_posterior_is_the_conditional_model():
    """Bayes: grad log p(x_t | k) = grad log p(x_t) + grad log p(k | x_t), so the unconditional mixture guided at
    scale 1 by its exact posterior p(k | x_t) equals the component's denoiser (to rounding) and samples it."""
    den, means, covs, *_ = _mixture()
    cg = ClassifierGuidance(den, den.class_log_posterior, 1.0, label_to_model=False)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    lab = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    for t in (0.05, 0.4, 0.9):
        assert torch.allclose(cg(x, t, label=lab), den(x, t, label=lab), atol=1e-12)
    r = _sample(cg, label=2)
    _moments_match(r.x, means[2], covs[2])
    assert r.nfe == 60   # the model and the classifier at every step


def test_classifier_guidance_interval_guides_only_inside_it():
    """With interval (lo, hi] the classifier's gradient is added only where sigma/alpha lies inside it, per sample
    of a mixed batch; outside, the output is the model's own and costs 1 evaluation."""
    den, *_ = _mixture()
    sch = den.schedule
    lo, hi = float(sch.sigma_ratio(torch.tensor(0.3, dtype=torch.float64))), \
        float(sch.sigma_ratio(torch.tensor(0.7, dtype=torch.float64)))
    cg = ClassifierGuidance(den, den.class_log_posterior, 2.0, label_to_model=False, interval=(lo, hi))
    full = ClassifierGuidance(den, den.class_log_posterior, 2.0, label_to_model=False)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lab = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(cg(x, 0.8, label=lab), den(x, 0.8)) and cg.last_nfe == 1        # above the interval
    assert torch.allclose(cg(x, 0.2, label=lab), den(x, 0.2)) and cg.last_nfe == 1        # below it
    assert torch.allclose(cg(x, 0.5, label=lab), full(x, 0.5, label=lab)) and cg.last_nfe == 2
    assert not torch.allclose(cg(x, 0.5, label=lab), den(x, 0.5))
    t = torch.tensor([0.2, 0.5, 0.8, 0.5, 0.2, 0.8], dtype=torch.float64)                  # a mixed batch
    inside = torch.tensor([False, True, False, True, False, False])
    want = torch.where(inside[:, None], full(x, t, label=lab), den(x, t))
    assert torch.allclose(cg(x, t, label=lab), want, atol=1e-12)
    with pytest.raises(DifflabError, match="classifier guidance interval"):
        ClassifierGuidance(den, den.class_log_posterior, 1.0, interval=(5.0, 1.0))
    with pytest.raises(DifflabError, match="takes two noise levels"):
        ClassifierGuidance(den, den.class_log_posterior, 1.0, interval=(0.0, 1.0, 2.0))
    from difflab.guidance import guided_denoiser
    with pytest.raises(DifflabError, match="needs classifier guidance"):
        guided_denoiser(den, classifier_interval=(0.0, 80.0))


def test_autoguidance():
    """D_w = D_weak + w (D_main - D_weak): w = 1 is the model, w = 0 the weak one; it works without classes.
    Here the model is component 0 alone and the weak model the whole mixture: at w = 1 the samples are the
    component's, and guidance (w = 2) pushes them further from the weak model's mean."""
    mix, means, covs, *_ = _mixture()
    main = dl.GaussianDenoiser(mix.schedule, means[0], covs[0])
    main.data_shape = (2,)
    weak = GaussianMixtureDenoiser(mix.schedule, means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    x = torch.randn(5, 2, dtype=torch.float64)
    for w in (0.0, 1.0, 2.0):
        ag = Autoguidance(main, weak, w)
        assert torch.allclose(ag(x, 0.5), weak(x, 0.5) + w * (main(x, 0.5) - weak(x, 0.5)), atol=1e-12)
    _moments_match(_sample(Autoguidance(main, weak, 1.0)).x, means[0], covs[0])
    guided = _sample(Autoguidance(main, weak, 2.0))
    assert guided.nfe == 60 and guided.x.double().mean(0)[0] < means[0, 0] - 0.05


def test_guidance_refuses_what_does_not_apply():
    mix, means, covs, *_ = _mixture()
    uncond = dl.GaussianDenoiser(mix.schedule, means[0], covs[0])
    with pytest.raises(DifflabError, match="unconditional"):
        ClassifierFreeGuidance(dl.Denoiser(dl.nn.MLP(), mix.schedule, "eps"), 2.0)
    with pytest.raises(DifflabError, match="unconditional"):
        guided_denoiser(dl.Denoiser(dl.nn.MLP(), mix.schedule, "eps"), 2.0)
    with pytest.raises(DifflabError, match="same noise schedule"):
        Autoguidance(uncond, dl.GaussianDenoiser(dl.get_schedule("linear", T=1000), means[0], covs[0]), 2.0)
    with pytest.raises(DifflabError, match="interval"):
        ClassifierFreeGuidance(mix, 2.0, interval=(5.0, 1.0))
    with pytest.raises(DifflabError, match="needs the class labels"):
        ClassifierFreeGuidance(mix, 2.0)(torch.zeros(2, 2), 0.5)


def _gaussian_4d():
    """The exact denoiser of a 4-D Gaussian N(mu, cov) on the cosine schedule, and the values of its first two
    dimensions that the inpainting tests keep."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.5
    cov = A @ A.T + 0.05 * torch.eye(4, dtype=torch.float64)
    mu = torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)
    den = dl.GaussianDenoiser(dl.get_schedule("cosine", T=1000), mu, cov)
    den.data_shape = (4,)
    return den, mu, cov, torch.tensor([0.8, -0.6], dtype=torch.float64)


def test_inpainting_matches_the_exact_conditional_gaussian():
    """Gaussian data in 4-D with dimensions 0-1 known: the exact conditional is N(mu_u + S_uk S_kk^-1 (x_k - mu_k),
    S_uu - S_uk S_kk^-1 S_ku).  The Tweedie posterior rule is exact for Gaussian data: 4000 samples (DPM-Solver++
    30 steps) match its mean within 0.04 (3.5 standard errors) and covariance within 0.04; the known pixels come
    out as given.  Plain replacement (projection) is biased: it conditions on the noisy known pixels of x_t, not
    on the clean ones (measured mean error 0.33)."""
    den, mu, cov, known = _gaussian_4d()
    s_kk, s_uk, s_uu = cov[:2, :2], cov[2:, :2], cov[2:, 2:]
    mean = mu[2:] + s_uk @ torch.linalg.solve(s_kk, known - mu[:2])
    c = s_uu - s_uk @ torch.linalg.solve(s_kk, s_uk.T)
    images = torch.zeros(N, 4)
    images[:, :2] = known.float()
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    kw = dict(sampler="dpmpp_2m", steps=30, grid="trailing", seed=0, batch_size=N)
    exact = inpaint(den, images, mask, posterior="tweedie", cg_iters=4, **kw)
    plain = inpaint(den, images, mask, **kw)
    assert torch.allclose(exact.x[:, :2].double(), known.expand(N, 2), atol=1e-5)
    _moments_match(exact.x[:, 2:], mean, c, tol_mean=0.04, tol_cov=0.04)
    assert float((plain.x[:, 2:].double().mean(0) - mean).abs().max()) > 0.2
    assert exact.nfe > plain.nfe == 30   # the CG's vector-Jacobian products are counted


def test_repaint_resampling_reduces_the_bias_of_replacement():
    """RePaint's resampling (the repaint sampler) moves plain replacement towards the exact conditional mean:
    on the same 4-D Gaussian, 8 passes per step over 40 steps leave under half the error of one pass."""
    den, mu, cov, known = _gaussian_4d()
    mean = mu[2:] + cov[2:, :2] @ torch.linalg.solve(cov[:2, :2], known - mu[:2])
    images = torch.zeros(400, 4)
    images[:, :2] = known.float()
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    err = {u: float((inpaint(den, images, mask, sampler="ddpm", steps=40, seed=0, resample=u).x[:, 2:].double().mean(0)
                     - mean).abs().max()) for u in (1, 8)}
    assert err[8] < 0.5 * err[1], err


def test_sdedit_of_data_with_the_exact_denoiser_keeps_the_data_distribution():
    """Noising exact data samples to t and integrating the probability-flow ODE back (DDIM) maps p_t to p_0: the
    edited samples have the data's moments, for any strength; the smaller the strength, the nearer they stay to
    their inputs (at 0.05, within the noise level sigma/alpha = 0.08 of that time on average)."""
    den, means, covs, mean, cov = _mixture()
    x0 = den.sample_data(N, generator=torch.Generator().manual_seed(2)).float()
    moved = {}
    for strength in (0.05, 0.3, 1.0):
        r = img2img(den, x0, strength, sampler="ddim", steps=40, seed=1, batch_size=N)
        _moments_match(r.x, mean, cov, tol_cov=0.05)
        moved[strength] = float((r.x - x0).norm(dim=1).mean())
    assert moved[0.05] < 0.1 < moved[0.3] < moved[1.0], moved
    with pytest.raises(DifflabError, match="strength"):
        img2img(den, x0, 1.5)


def test_super_resolution_is_consistent_with_its_input():
    """The constrained denoiser's samples average, over each 2x2 block, exactly to the low-resolution input."""
    sch = dl.get_schedule("cosine", T=1000)
    d = 16
    g = torch.Generator().manual_seed(4)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / 4
    oracle = dl.GaussianDenoiser(sch, torch.zeros(d, dtype=torch.float64), A @ A.T + 0.1 * torch.eye(d, dtype=torch.float64),
                                 shape=(1, 4, 4))
    oracle.data_shape = (1, 4, 4)
    op = downsampling_operator(2)
    low = op.A(oracle.sample_data(6, generator=g).float())
    for posterior in ("projection", "tweedie"):
        res = dl.guidance.super_resolve(oracle, low, 2, sampler="dpmpp_2m", steps=20, seed=0, posterior=posterior)
        assert res.x.shape == (6, 1, 4, 4) and torch.allclose(op.A(res.x), low, atol=1e-4), posterior
    with pytest.raises(DifflabError, match="takes images of"):
        dl.guidance.super_resolve(oracle, torch.zeros(2, 1, 3, 3), 2)
    c = ConstrainedDenoiser(oracle, op, low)
    assert torch.allclose(op.A(c(torch.randn(6, 1, 4, 4), 0.5, row=torch.arange(6))), low, atol=1e-6)
    # the operator's adjoint is the adjoint: <A x, y> = <x, A^T y>
    x, y = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    assert float((op.A(x) * y).sum()) == pytest.approx(float((x * op.adjoint(y)).sum()), rel=1e-12)
    assert torch.allclose(op.A(op.pinv(y)), y)


def test_label_embedding_null_label_and_bad_labels():
    net = dl.UNet(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), groups=4, num_classes=3)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0])
    assert torch.equal(net(x, t), net(x, t, label=torch.tensor([3, 3])))        # None = the null label
    assert not torch.allclose(net(x, t, label=torch.tensor([0, 1])), net(x, t))
    with pytest.raises(DifflabError, match="class 7 is not one of the model's classes 0..2"):
        net(x, t, label=torch.tensor([7, 0]))
    with pytest.raises(DifflabError, match="unconditional"):
        dl.UNet(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), groups=4)(x, t, label=torch.tensor([0, 1]))
    mlp = dl.nn.MLP(num_classes=2)
    assert mlp(torch.randn(3, 2), torch.tensor(5.0), label=torch.tensor([0, 1, 2])).shape == (3, 2)


class _IndefiniteDenoiser(torch.nn.Module):
    """x0_hat = clamp(M x_t) with M neither symmetric nor positive definite: the Jacobian of a trained network
    far from the Tweedie ideal (measured on the 10-minute MNIST model at sigma/alpha 13: v^T C v / |v|^2 about
    -1, J and J^T half their size apart)."""

    def __init__(self, d: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.m = torch.randn(d, d, generator=g) * 3.0      # eigenvalues of both signs; far from symmetric
        self.schedule, self.data_shape, self.clip_x0 = dl.get_schedule("cosine", T=1000), (1, 4, 4), 1.0

    def forward(self, x_t, t, **cond):
        return (x_t.flatten(1) @ self.m.T).reshape(x_t.shape).clamp(-1, 1)


def test_tweedie_rule_stays_bounded_and_consistent_when_the_jacobian_is_not_a_covariance():
    """Conjugate gradients on an indefinite operator once took unbounded steps (NaN at high noise, values of
    +-100 in the middle: black inpaintings of MNIST); truncated CG stops at non-positive curvature, no correction
    exceeds twice the data range and the estimate is projected onto the measurements, for inpainting and
    super-resolution alike: finite, within 7 of 0 (x0 clipped to 1 and a correction of at most 2 make at most 3;
    the projection moves a pixel by at most |y| + 3 <= 4), and consistent with y.
    Also: CG on an indefinite 2x2 system stops instead of dividing by its zero curvature."""
    den = _IndefiniteDenoiser()
    g = torch.Generator().manual_seed(6)
    images = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1
    mask = torch.zeros(1, 4, 4)
    mask[..., :2] = 1.0
    for op in (inpainting_operator(mask), downsampling_operator(2)):
        y = op.A(images)
        c = ConstrainedDenoiser(den, op, y, "tweedie", cg_iters=10)
        for ratio in (80.0, 13.0, 1.0, 0.1):
            t = den.schedule.t_of_sigma_ratio(torch.full((8,), ratio, dtype=torch.float64)).float()
            a, s = den.schedule.alpha_sigma(t)
            x_t = a.view(-1, 1, 1, 1) * images + s.view(-1, 1, 1, 1) * torch.randn(images.shape, generator=g)
            out = c(x_t, t)
            assert torch.isfinite(out).all() and float(out.abs().max()) <= 7.0, (ratio, out.abs().max())
            assert torch.allclose(op.A(out), y, atol=1e-5), ratio
    flip = torch.tensor([[0.0, 1.0], [1.0, 0.0]])     # e^T M e = 0 along b = e_1: zero curvature at the first step
    z = conjugate_gradient(lambda v: v @ flip.T, torch.tensor([[1.0, 0.0]]), iters=5)
    assert torch.isfinite(z).all() and torch.equal(z, torch.zeros(1, 2))


def test_truncated_cg_stops_one_sample_and_solves_the_others():
    """A batch of three 3x3 systems: a positive definite one is solved as torch.linalg.solve solves it, while
    an indefinite one (zero curvature along its b) and one whose operator returns inf stay at 0 - their
    stopping must not leak NaN into the batch or move them afterwards."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(3, 3, generator=g, dtype=torch.float64)
    spd = q @ q.T + 0.5 * torch.eye(3, dtype=torch.float64)
    indefinite = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
    b = torch.tensor([[1.0, -2.0, 0.5], [1.0, 1.0, 0.0], [0.3, 0.2, 0.1]], dtype=torch.float64)

    def apply(v):
        out = torch.stack([spd @ v[0], indefinite @ v[1], v[2]])
        out[2] = float("inf")
        return out

    z = conjugate_gradient(apply, b, iters=10)
    assert torch.allclose(z[0], torch.linalg.solve(spd, b[0]), atol=1e-10)
    assert torch.equal(z[1:], torch.zeros(2, 3, dtype=torch.float64))
