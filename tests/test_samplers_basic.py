"""DDPM and DDIM: oracle, identities, batch independence and the diffusers reference."""
import pytest
import torch

from difflab.denoisers import Denoiser
from difflab.nn import UNet
from difflab.process import get_schedule
from difflab.sampling import discrete_timesteps, sample, sample_ddim, sample_ddpm, time_grid
from oracle_net import OracleEpsNet, random_gaussian


gaussian_oracle = random_gaussian


def _check_moments(x, mean, cov, tol_mean, tol_cov):
    x = x.double()
    assert torch.allclose(x.mean(0), mean, atol=tol_mean), (x.mean(0), mean)
    assert torch.allclose(torch.cov(x.T), cov, atol=tol_cov), (torch.cov(x.T), cov)


@pytest.mark.parametrize("sampler,steps,kw", [("ddpm", 1000, {}), ("ddim", 100, {}), ("ddim", 100, {"eta": 0.5})])
def test_reproduces_gaussian_data(sampler, steps, kw):
    """N = 20000 samples: the standard error of a mean is sqrt(var/N) <= 0.006 here, of a covariance
    entry about sqrt(2/N) var <= 0.01; tolerances 0.03 allow that plus the discretisation bias."""
    sch = get_schedule("linear", T=1000)
    den, mean, cov = gaussian_oracle(sch)
    ts = time_grid(sch, steps)
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    fn = {"ddpm": sample_ddpm, "ddim": sample_ddim}[sampler]
    x = fn(den, x_T, ts, generator=g, **kw)
    _check_moments(x, mean, cov, 0.03, 0.03)


def test_few_step_ancestral_sampling_loses_variance():
    """The pitfall "removing noise too fast loses detail", measured: with the exact x0 denoiser, each
    coarse ancestral step ignores Var[x0 | x_t] (Bao et al., Analytic-DPM, arXiv:2201.06503), so the
    sample variance falls short, the more so the fewer the steps; 1000 steps are exact (above)."""
    sch = get_schedule("linear", T=1000)
    den, _, cov = gaussian_oracle(sch)
    x_T = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ratio = {}
    for steps in (10, 100, 1000):
        x = sample_ddpm(den, x_T, time_grid(sch, steps), generator=torch.Generator().manual_seed(2))
        ratio[steps] = (torch.cov(x.T).trace() / cov.trace()).item()
    assert ratio[10] < ratio[100] < 0.95 and abs(ratio[1000] - 1) < 0.04, ratio


def test_ddim_eta1_equals_ddpm_on_the_same_grid():
    sch = get_schedule("cosine", T=1000)
    den, _, _ = gaussian_oracle(sch)
    ts = time_grid(sch, 50)
    x_T = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = sample_ddpm(den, x_T, ts, generator=torch.Generator().manual_seed(5))
    b = sample_ddim(den, x_T, ts, generator=torch.Generator().manual_seed(5), eta=1.0)
    assert torch.allclose(a, b, atol=1e-10)


def _tiny_eps_denoiser(schedule, seed=0):
    torch.manual_seed(seed)
    net = UNet(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), groups=4)
    den = Denoiser(net, schedule, "eps", clip_x0=1.0).eval()
    den.data_shape = (1, 8, 8)
    return den


def test_sample_i_depends_only_on_seed_and_index():
    den = _tiny_eps_denoiser(get_schedule("linear", T=1000))
    a = sample(den, n=6, sampler="ddpm", steps=20, seed=3, batch_size=6, progress=False).x
    b = sample(den, n=6, sampler="ddpm", steps=20, seed=3, batch_size=4, progress=False).x
    c = sample(den, n=3, sampler="ddpm", steps=20, seed=3, batch_size=1, progress=False).x
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a[:3], c, atol=1e-5)
    d = sample(den, n=3, sampler="ddpm", steps=20, seed=4, progress=False).x
    assert (a[:3] - d).abs().max() > 0.1


def test_nfe_is_counted():
    den = _tiny_eps_denoiser(get_schedule("linear", T=1000))
    assert sample(den, n=2, sampler="ddim", steps=7, progress=False).nfe == 7


# -- reference: diffusers (test-only dependency) -----------------------------------------------
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_matches_diffusers(steps):
    diffusers = pytest.importorskip("diffusers")
    sch = get_schedule("linear", T=1000)
    net = OracleEpsNet(sch)
    den = Denoiser(net, sch, "eps", clip_x0=1.0)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                                  variance_type="fixed_small")
    ref.set_timesteps(steps)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(7)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            eps = net(x, t.float().expand(4))
            x = ref.step(eps, t, x, generator=g).prev_sample
        ours = sample_ddpm(den, x_T, time_grid(sch, steps), generator=torch.Generator().manual_seed(7))
    assert torch.equal(ref.timesteps, discrete_timesteps(1000, steps, "leading"))
    assert (ours - x).abs().max().item() <= 1e-4


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers(eta, spacing, clip):
    """Same network, same x_T, same noise stream (both draw from one torch.Generator in the same order).

    With clipping, difflab's contract D(x_t, t) -> clipped x0_hat re-derives eps from the clipped x0
    (the GLIDE convention); diffusers does that with ``use_clipped_model_output=True`` and otherwise
    keeps the raw network eps, so the clipped case is compared with that flag set.

    Not compared: ``timestep_spacing="linspace"``, for which diffusers' DDIM evaluates the network at
    the listed timesteps but steps to ``t - T // N``, which is not the next listed one; difflab always
    steps to the next grid time.  The linear schedule keeps 1/alpha at t = 1 near 160: the cosine
    table's last alpha_bar (about 1e-9) would amplify float32 rounding in unclipped x0 by 3e4."""
    diffusers = pytest.importorskip("diffusers")
    sch = get_schedule("linear", T=1000)
    net = OracleEpsNet(sch)
    den = Denoiser(net, sch, "eps", clip_x0=1.0 if clip else None)
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=clip,
                                  set_alpha_to_one=True, timestep_spacing=spacing)
    ref.set_timesteps(20)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(9)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            eps = net(x, t.float().expand(4))
            x = ref.step(eps, t, x, eta=eta, generator=g, use_clipped_model_output=clip).prev_sample
        ours = sample_ddim(den, x_T, time_grid(sch, 20, spacing), eta=eta, generator=torch.Generator().manual_seed(9))
    assert torch.equal(ref.timesteps, discrete_timesteps(1000, 20, spacing))
    assert (ours - x).abs().max().item() <= 1e-4
