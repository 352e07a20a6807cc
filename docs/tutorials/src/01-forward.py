# Tutorial 1: the forward process. Executed by scripts/tutorials.py (jupytext percent format).

# %% [markdown]
# # 1. The forward process: why and how we add noise
#
# A diffusion model learns to undo a process that is fixed in advance: Gaussian noise added to the data
# little by little until nothing of the data is left. Every noise level t in [0, 1] has a closed form,
#
# $$q(x_t \mid x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I), \qquad x_t = \alpha_t x_0 + \sigma_t \varepsilon,\ \varepsilon \sim \mathcal N(0, I),$$
#
# and the *schedule* (alpha_t, sigma_t) decides how fast the signal fades. With variance-preserving schedules
# alpha_t^2 + sigma_t^2 = 1, and the signal-to-noise ratio SNR = alpha_t^2 / sigma_t^2 falls from infinity at
# t = 0 to about 0 at t = 1, where x_1 is (nearly) the standard normal prior we can sample from.
#
# Why noise? Because at every noise level the noisy data x_t have a density that is smooth and defined
# everywhere, and at t = 1 it is a Gaussian. Learning to go back one noise level at a time is a sequence of
# easy denoising problems, instead of one impossible jump from noise to data.

# %% [markdown] lang=bg
# # 1. Правият процес: защо и как добавяме шум
#
# Дифузионният модел се учи да обръща процес, зададен предварително: гаусов шум, добавян към данните малко
# по малко, докато от тях не остане нищо. Всяко ниво на шума t в [0, 1] има затворена форма,
#
# $$q(x_t \mid x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I), \qquad x_t = \alpha_t x_0 + \sigma_t \varepsilon,\ \varepsilon \sim \mathcal N(0, I),$$
#
# а *графикът на шума* (alpha_t, sigma_t) определя колко бързо изчезва сигналът. При графиците, запазващи
# дисперсията, alpha_t^2 + sigma_t^2 = 1, а отношението сигнал/шум SNR = alpha_t^2 / sigma_t^2 пада от
# безкрайност при t = 0 до почти 0 при t = 1, където x_1 е (почти) стандартното нормално разпределение,
# от което можем да генерираме.
#
# Защо шум? Защото при всяко ниво на шума зашумените данни x_t имат гладка плътност, определена навсякъде,
# а при t = 1 тя е гаусова. Да се научим да се връщаме едно ниво назад е поредица от лесни задачи за
# премахване на шум вместо един невъзможен скок от шума към данните.

# %%
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import difflab as dl
from difflab.process.forward import markov_chain
from difflab.viz import forward_figure, forward_points_figure, plot_schedules

T = 1000
schedules = {name: dl.get_schedule(name, T=T) for name in ("linear", "cosine", "sigmoid", "scaled_linear")}
t = torch.linspace(0, 1, 501, dtype=torch.float64)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for name, s in schedules.items():
    a, sg = s.alpha_sigma(t)
    axes[0].plot(t, a, label=name)
    axes[1].plot(t, sg, label=name)
    axes[2].plot(t, s.logsnr(t).clamp(-20, 20), label=name)
for ax, title in zip(axes, [r"$\alpha_t$ (signal)", r"$\sigma_t$ (noise)", r"log-SNR $\lambda_t = \log \alpha_t^2/\sigma_t^2$"]):
    ax.set(xlabel="t", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure("alpha_sigma_logsnr.png"), dpi=100)
plt.close(fig)
for name, s in schedules.items():
    a1, s1 = s.alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
    lam_half = float(s.logsnr(torch.tensor(0.5, dtype=torch.float64)))
    print(f"{name:14s} alpha_1 = {float(a1):.5f}   log-SNR at t=0.5 = {lam_half:+.2f}")
record("alpha1_linear", float(schedules["linear"].alpha(torch.tensor(1.0, dtype=torch.float64))))
record("logsnr_half_linear", float(schedules["linear"].logsnr(torch.tensor(0.5, dtype=torch.float64))))
record("logsnr_half_cosine", float(schedules["cosine"].logsnr(torch.tensor(0.5, dtype=torch.float64))))

# %% [markdown]
# The linear DDPM schedule keeps a log-SNR of {{logsnr_half_linear:+.2f}} at t = 0.5, the cosine schedule
# {{logsnr_half_cosine:+.2f}}: the linear one destroys the signal early and then spends half of its time on
# nearly pure noise. At t = 1 it keeps alpha_1 = {{alpha1_linear:.4f}} of the signal, close enough to 0 that
# x_1 is practically the prior. On images the same facts look like this (the same noise eps for every
# schedule; `difflab forward --data digits --schedules linear,cosine,sigmoid --out forward.png` draws it too):

# %% [markdown] lang=bg
# Линейният график на DDPM запазва log-SNR {{logsnr_half_linear:+.2f}} при t = 0.5, косинусовият
# {{logsnr_half_cosine:+.2f}}: линейният унищожава сигнала рано и после прекарва половината си време почти в
# чист шум. При t = 1 той запазва alpha_1 = {{alpha1_linear:.4f}} от сигнала, достатъчно близо до 0, за да е
# x_1 на практика априорното разпределение. Върху изображения същото изглежда така (един и същ шум eps за
# всички графици; `difflab forward --data digits --schedules linear,cosine,sigmoid --out forward.png` също го рисува):

# %%
digits = dl.load_dataset("digits")
x0 = digits.x[:3]
ts = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]
forward_figure(x0, {k: schedules[k] for k in ("linear", "cosine", "sigmoid")}, ts, figure("forward_digits.png"))
plot_schedules(schedules, figure("signal_fraction.png"))

# %% [markdown]
# ## The Markov chain and the closed form agree
#
# The forward process is defined as a Markov chain of small steps. Between two times s < t,
#
# $$q(x_t \mid x_s) = \mathcal N\Big(\tfrac{\alpha_t}{\alpha_s} x_s,\ \big(\sigma_t^2 - \tfrac{\alpha_t^2}{\alpha_s^2}\sigma_s^2\big) I\Big),$$
#
# and composing the 1000 steps of a DDPM table gives exactly q(x_t | x_0) above: the means multiply and the
# variances add up. We check it on the 2-D checkerboard: the chain, run step by step, against one jump with
# the closed form, compared by the sliced Wasserstein distance (SW) and against the distance between two
# independent closed-form draws (the sampling noise floor).

# %% [markdown] lang=bg
# ## Марковската верига и затворената форма съвпадат
#
# Правият процес се дефинира като марковска верига от малки стъпки. Между два момента s < t
#
# $$q(x_t \mid x_s) = \mathcal N\Big(\tfrac{\alpha_t}{\alpha_s} x_s,\ \big(\sigma_t^2 - \tfrac{\alpha_t^2}{\alpha_s^2}\sigma_s^2\big) I\Big),$$
#
# и композицията на 1000-те стъпки на таблицата на DDPM дава точно q(x_t | x_0) отгоре: средните се
# умножават, а дисперсиите се събират. Проверяваме го върху двумерната шахматна дъска: веригата, изпълнена
# стъпка по стъпка, срещу един скок по затворената форма, сравнени чрез нарязаното разстояние на
# Васерщайн (SW) и срещу разстоянието между две независими извадки по затворената форма (шумът на извадката).

# %%
from difflab.metrics import sliced_wasserstein

n = 4000 if QUICK else 20000
toy = dl.load_dataset("toy2d", name="checkerboard", n=n).x.double()
grid = torch.arange(1, T + 1, dtype=torch.float64) / T
g = torch.Generator().manual_seed(0)
panels, worst_ratio, worst_std = {}, 0.0, 0.0
for name in ("linear", "cosine"):
    s = schedules[name]
    chain = markov_chain(s, toy, grid, generator=g)
    for t_show in (0.1, 0.3, 1.0):
        i = round(t_show * T) - 1
        closed = dl.q_sample(s, toy, float(grid[i]), eps=torch.randn(toy.shape, generator=g, dtype=torch.float64))
        closed2 = dl.q_sample(s, toy, float(grid[i]), eps=torch.randn(toy.shape, generator=g, dtype=torch.float64))
        sw, floor = sliced_wasserstein(chain[i], closed), sliced_wasserstein(closed2, closed)
        a, sg = s.alpha_sigma(grid[i])
        std = (a**2 * toy.var(0) + sg**2).sqrt()          # the closed form's standard deviation, per coordinate
        dev = float(((chain[i].std(0) - std).abs() / std).max())
        worst_ratio, worst_std = max(worst_ratio, sw / floor), max(worst_std, dev)
        print(f"{name:7s} t={t_show:.1f}: SW(chain, closed form) = {sw:.4f}   floor SW(closed, closed) = {floor:.4f}"
              f"   chain std {chain[i].std(0).mean():.3f} vs exact {std.mean():.3f}")
        if name == "linear":
            panels[f"closed form, t={t_show}"] = closed
            panels[f"Markov chain, t={t_show}"] = chain[i]
record("chain_vs_closed_ratio", worst_ratio)
record("chain_std_dev", worst_std)
dl.viz.points_figure({k: panels[k] for k in sorted(panels, key=lambda k: (k.split("=")[1], k))},
                     figure("chain_vs_closed.png"), lim=3.5)
forward_points_figure(toy[:2000].float(), {k: schedules[k] for k in ("linear", "cosine")},
                      [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0], figure("forward_points.png"))

# %% [markdown]
# At this sample size the chain is hard to tell from the closed form: their distance is of the order of the
# distance between two independent closed-form draws of the same size (at most {{chain_vs_closed_ratio:.2f}}
# times it; both are sampling noise), and the chain's standard deviation is within {{chain_std_dev:.1%}} of the
# exact sqrt(alpha_t^2 Var[x_0] + sigma_t^2) in every coordinate. This is what makes training cheap: to train at noise level t we never run the chain, we jump to x_t
# in one step.

# %% [markdown] lang=bg
# При този размер на извадката веригата трудно се различава от затворената форма: разстоянието между тях е
# от порядъка на разстоянието между две независими извадки със същия размер по затворената форма (най-много
# {{chain_vs_closed_ratio:.2f}} пъти него; и двете са шум на извадката), а стандартното отклонение на веригата е
# в рамките на {{chain_std_dev:.1%}} от точното sqrt(alpha_t^2 Var[x_0] + sigma_t^2) по всяка координата. Това прави обучението евтино: за да обучаваме при ниво на шума t, никога не изпълняваме
# веригата, а скачаме до x_t с една стъпка.
