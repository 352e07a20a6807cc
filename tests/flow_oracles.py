"""Closed forms for Gaussian data shared by the flow and distillation tests: the probability-flow ODE map,
the exact consistency function, and a "network" that makes any Denoiser answer with a given function."""
import torch

from difflab.denoisers import param


def ode_map(gauss, x_t, t, s):
    """The exact probability-flow ODE solution from time t to time s for the data N(mu, Sigma) of the
    GaussianDenoiser ``gauss`` (any schedule): along an eigendirection of variance l, x - alpha mu scales as
    sqrt(alpha^2 l + sigma^2) (the flow keeps each sample's quantile).  t, s: floats."""
    sch = gauss.schedule
    a_t, s_t = sch.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
    a_s, s_s = sch.alpha_sigma(torch.tensor(float(s), dtype=torch.float64))
    lam, U, mu = gauss.evals[0], gauss.evecs[0], gauss.means[0]
    z = (x_t.double() - a_t * mu) @ U
    return a_s * mu + (z * ((a_s**2 * lam + s_s**2) / (a_t**2 * lam + s_t**2)).sqrt()) @ U.T


def consistency_exact(gauss, x_t, t):
    """The exact consistency function: the ODE solution at the schedule's t_min, as x/alpha there."""
    sch = gauss.schedule
    a_min = sch.alpha(torch.tensor(sch.t_min, dtype=torch.float64))
    return ode_map(gauss, x_t, t, sch.t_min) / a_min


class OracleNet(torch.nn.Module):
    """net(x_in, timestep) for a Denoiser of a continuous schedule (timestep = 1000 t): undoes the denoiser's
    c_in and returns the output F of its parameterisation whose conversion is ``fn(x_t, t)`` for a scalar t."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.owner = fn, None

    def forward(self, x_in, timestep):
        den = self.owner
        t = timestep.double() / 1000
        a, s = den.schedule.alpha_sigma(t)
        a, s = a[:, None], s[:, None]
        x_t = x_in.double() / den.c_in(a, s)
        x0 = torch.empty_like(x_t)
        for tv in torch.unique(t):
            x0[t == tv] = self.fn(x_t[t == tv], float(tv))
        return param.target(den.prediction, x0, (x_t - a * x0) / s, a, s, den.sigma_data, den.sigma_min)


def oracle_denoiser(fn, schedule, prediction):
    """A difflab Denoiser (parameterisation ``prediction``) whose x0_hat is ``fn(x_t, t)``."""
    from difflab.denoisers import Denoiser
    net = OracleNet(fn)
    den = Denoiser(net, schedule, prediction, clip_x0=None)
    net.owner = den
    return den
