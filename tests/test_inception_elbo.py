"""The FID Inception-v3 (architecture, weights loading, errors) and the discrete-time DDPM ELBO."""
import math

import pytest
import torch
from oracle_net import random_gaussian

import difflab as dl
from difflab.errors import DifflabError
from difflab.metrics.elbo import _discretised_gaussian_logp, ddpm_coefficients, ddpm_elbo
from difflab.metrics.inception import (FID_WEIGHTS_NAMES, FID_WEIGHTS_URL, InceptionV3FID, find_inception_weights,
                                       load_inception)


# -- Inception ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    net = InceptionV3FID()
    with torch.no_grad():  # random running statistics, so that batch norm is not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_inception_architecture(inception):
    """Parameter count of torchvision's Inception-v3 (27,161,264) minus its auxiliary classifier
    (3,326,696) plus 8 more classes (16,392) = 23,850,960; the documented map sizes
    35x35x288 after Mixed_5d, 17x17x768 after Mixed_6e, 8x8x2048 after Mixed_7c."""
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960
    shapes = {}
    for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c"):
        getattr(inception, name).register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, o.shape[1:]))
    with torch.no_grad():
        logits = inception(torch.zeros(1, 3, 64, 64))
    assert shapes == {"Mixed_5d": (288, 35, 35), "Mixed_6e": (768, 17, 17), "Mixed_7c": (2048, 8, 8)}
    assert logits.shape == (1, 1008)


def test_inception_weights_load_and_features(inception, tmp_path):
    """A random network saved in the published layout (plus AuxLogits, minus num_batches_tracked, as
    pytorch-fid's file) loads name by name and gives identical features; features do not depend on
    batch size, uint8 vs float input, or grey vs repeated-RGB input."""
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    torch.save(state, tmp_path / "fid_random.pth")
    net = load_inception(tmp_path / "fid_random.pth")
    g = torch.Generator().manual_seed(1)
    x8 = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=g)
    ext = net.extractor(batch_size=1)
    f1 = ext(x8)
    assert f1.shape == (3, 2048) and f1.dtype == torch.float64
    with torch.no_grad():
        assert torch.allclose(f1, inception.features(x8).double(), atol=1e-5)
    assert torch.allclose(f1, net.extractor(batch_size=3)(x8), atol=1e-4)
    assert torch.allclose(f1, ext(x8.float() / 127.5 - 1), atol=1e-4)
    assert torch.allclose(f1, ext(x8.expand(-1, 3, -1, -1)), atol=1e-4)
    p = net.probabilities(x8)
    assert p.shape == (3, 1008) and torch.allclose(p.sum(1), torch.ones(3, dtype=torch.float64))


def test_inception_errors(inception, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DIFFLAB_INCEPTION", raising=False)
    with pytest.raises(DifflabError, match=r"not on this machine: download .*pt_inception-2015-12-05-6726825d\.pth"):
        find_inception_weights()
    assert FID_WEIGHTS_URL.endswith(FID_WEIGHTS_NAMES[0])
    with pytest.raises(DifflabError, match="not found"):
        load_inception(tmp_path / "nope.pth")
    # found in the hub cache under the published name, but not the published bytes: refused by hash
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, hub / FID_WEIGHTS_NAMES[1])
    assert find_inception_weights() == hub / FID_WEIGHTS_NAMES[1]
    with pytest.raises(DifflabError, match="SHA-256"):
        load_inception()
    partial = {k: v for k, v in list(inception.state_dict().items())[:-4]}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(DifflabError, match="not the FID Inception-v3 state dict"):
        load_inception(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(DifflabError, match="cannot read"):
        load_inception(tmp_path / "junk.pth")
    monkeypatch.setenv("DIFFLAB_INCEPTION", str(tmp_path / "partial.pth"))
    assert find_inception_weights() == tmp_path / "partial.pth"


# -- ELBO -----------------------------------------------------------------------------------------
def _expected_elbo(schedule, mu, cov, variance):
    """E_x0[-ELBO] in nats for N(mu, cov) data and the exact denoiser, in closed form (float64):
    E|x0 - E[x0|x_t]|^2 = tr Cov[x0|x_t] = tr (cov^-1 + a^2/s^2 I)^-1."""
    co = ddpm_coefficients(schedule)
    D, T = len(mu), len(co["t"])
    eye = torch.eye(D, dtype=torch.float64)

    def post_tr(ab):
        return torch.linalg.inv(torch.linalg.inv(cov) + ab / (1 - ab) * eye).trace()

    abT = co["alpha_bar"][-1]
    prior = 0.5 * (abT * (mu**2 + cov.diagonal()).sum() + D * (1 - abT) - D - D * torch.log(1 - abT))
    vq = co["beta_tilde"]
    vp = vq if variance == "fixed_small" else co["beta"]
    kl = sum(0.5 * D * (torch.log(vp[i] / vq[i]) + vq[i] / vp[i] - 1) + co["c0"][i] ** 2 * post_tr(co["alpha_bar"][i])
             / (2 * vp[i]) for i in range(1, T))
    v = vq[1]
    dec = 0.5 * D * math.log(2 * math.pi * v) + post_tr(co["alpha_bar"][0]) / (2 * v)
    return float(prior + kl + dec)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_elbo_of_gaussian_data_matches_closed_form(variance):
    """Monte Carlo ELBO (4000 draws of x0, one x_t per term) = its closed form within 5 standard
    errors; the bound lies above the true NLL (the entropy of the data) and the subsampled-t
    estimate (n_t = 20) is unbiased within 5 standard errors."""
    sch = dl.get_schedule("linear", T=100)
    den, mu, cov = random_gaussian(sch, D=3)
    x0 = torch.distributions.MultivariateNormal(mu, cov).sample((4000,))
    expect = _expected_elbo(sch, mu, cov, variance)
    entropy = float(0.5 * torch.logdet(2 * math.pi * math.e * cov))
    assert expect > entropy
    r = ddpm_elbo(den, x0, decoder="gaussian", variance=variance, seed=1, batch_size=4000)
    se = float(r.total.std()) / math.sqrt(len(x0))
    assert abs(float(r.total.mean()) - expect) < 5 * se, (float(r.total.mean()), expect, se)
    r_sub = ddpm_elbo(den, x0, decoder="gaussian", variance=variance, n_t=20, seed=2, batch_size=4000)
    se_sub = float(r_sub.total.std()) / math.sqrt(len(x0))
    assert abs(float(r_sub.total.mean()) - expect) < 5 * se_sub
    assert torch.allclose(r.bpd, r.total / (3 * math.log(2)))


def test_elbo_coefficients_and_discrete_decoder():
    """Posterior coefficients equal Ho et al.'s from the beta table; the discretised Gaussian gives
    probabilities summing to 1 over the 256 bins and matches the normal CDF difference."""
    from scipy.stats import norm
    sch = dl.get_schedule("linear", T=1000)
    co = ddpm_coefficients(sch)
    assert torch.allclose(co["beta"], sch.betas_table, rtol=1e-9, atol=1e-12)
    ab, b = sch.alpha_bar_table, sch.betas_table
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    assert torch.allclose(co["beta_tilde"], b * (1 - ab_prev) / (1 - ab), rtol=1e-9, atol=1e-15)
    assert torch.allclose(co["c0"], ab_prev.sqrt() * b / (1 - ab), rtol=1e-9)
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, std in ((0.3, 0.01), (-0.99, 0.2), (1.5, 0.05), (0.0, 1e-4)):
        lp = _discretised_gaussian_logp(bins, torch.full_like(bins, mean), torch.full_like(bins, math.log(std)))
        assert abs(float(lp.exp().sum()) - 1) < 1e-9
    k = 140
    lp = _discretised_gaussian_logp(bins[k:k + 1], torch.tensor([0.1], dtype=torch.float64),
                                    torch.tensor([math.log(0.03)], dtype=torch.float64))
    ref = norm.cdf((float(bins[k]) + 1 / 255 - 0.1) / 0.03) - norm.cdf((float(bins[k]) - 1 / 255 - 0.1) / 0.03)
    assert abs(float(lp.exp()) - ref) < 1e-12


def test_elbo_refuses_bad_input():
    den, _, _ = random_gaussian(dl.get_schedule("edm"), D=3)
    with pytest.raises(DifflabError, match="variance-preserving"):
        ddpm_elbo(den, torch.zeros(2, 3), decoder="gaussian")
    den, _, _ = random_gaussian(dl.get_schedule("linear", T=10), D=3)
    with pytest.raises(DifflabError, match="uint8"):
        ddpm_elbo(den, torch.zeros(2, 3))
    with pytest.raises(DifflabError, match="variance"):
        ddpm_elbo(den, torch.zeros(2, 3), decoder="gaussian", variance="learned")
    zt = dl.get_schedule("linear", T=10, zero_terminal_snr=True)
    den, _, _ = random_gaussian(zt, D=3)
    with pytest.raises(DifflabError, match="zero-terminal"):
        ddpm_elbo(den, torch.zeros(2, 3), decoder="gaussian")


def test_likelihoods_run_on_a_float32_network():
    """The ODE likelihood (float64 state) and the ELBO call a float32 network: finite, per-sample values;
    the mean of 16 Hutchinson estimates (fixed probes per seed) is within 5 standard errors of the exact trace."""
    from difflab.metrics import bits_per_dim, log_likelihood
    from difflab.nn import MLP
    torch.manual_seed(0)
    den = dl.Denoiser(MLP(hidden=16, layers=1), dl.get_schedule("cosine", T=100), "eps")
    with torch.no_grad():
        for p in den.net.parameters():
            p.normal_(0, 0.05)
    x = torch.randn(6, 2) * 0.5
    exact = log_likelihood(den, x, exact_trace=True, rtol=1e-4, atol=1e-4)
    hutch = torch.stack([log_likelihood(den, x, exact_trace=False, rtol=1e-4, atol=1e-4, seed=s) for s in range(16)])
    assert exact.shape == (6,) and torch.isfinite(exact).all() and torch.isfinite(hutch).all()
    se = hutch.std(0) / 4
    assert bool(((hutch.mean(0) - exact).abs() < 5 * se + 1e-3).all()), (hutch.mean(0), exact, se)
    assert torch.isfinite(bits_per_dim(den, torch.randint(0, 256, (3, 2), dtype=torch.uint8), rtol=1e-3, atol=1e-3)).all()
    r = ddpm_elbo(den, torch.randint(0, 256, (3, 2), dtype=torch.uint8), n_t=10)
    assert torch.isfinite(r.bpd).all() and (r.bpd > 0).all()
