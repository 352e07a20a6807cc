"""A test "network" with diffusers' interface whose answers are exact (shared by the reference tests)."""
import torch

from difflab.denoisers import GaussianDenoiser


class OracleEpsNet(torch.nn.Module):
    """A "network" in diffusers' interface (x, integer timestep) -> eps whose answer is the exact eps of
    64-dimensional Gaussian data, so trajectories have the magnitudes of real sampling (a random UNet's
    x0 estimates run into the hundreds and float32 rounding then dominates any comparison)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        g = torch.Generator().manual_seed(0)
        A = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
        self.gauss = GaussianDenoiser(schedule, torch.randn(64, generator=g, dtype=torch.float64) * 0.3,
                                      A @ A.T * 0.3 + 0.01 * torch.eye(64, dtype=torch.float64))

    def forward(self, x, timestep):
        t = self.schedule.index_to_t(timestep.double())
        a, s = self.schedule.alpha_sigma(t)
        x64 = x.double().flatten(1)
        x0 = self.gauss(x64, t)
        return ((x64 - a[:, None] * x0) / s[:, None]).reshape(x.shape).to(x.dtype)


def random_gaussian(schedule, D=3, seed=0):
    """The exact denoiser of a random D-dimensional Gaussian, its mean and covariance (float64)."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(D, generator=g, dtype=torch.float64) * 0.5
    A = torch.randn(D, D, generator=g, dtype=torch.float64) * 0.4
    cov = A @ A.T + 0.05 * torch.eye(D, dtype=torch.float64)
    return GaussianDenoiser(schedule, mean, cov), mean, cov
