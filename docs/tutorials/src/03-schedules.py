# Tutorial 3: noise schedules and their effect on quality. Executed by scripts/tutorials.py (jupytext percent format).

# %% [markdown]
# # 3. Noise schedules and their effect on quality
#
# The schedule decides where on the log-SNR axis lambda_t = log(alpha_t^2 / sigma_t^2) the training examples
# and the sampling steps fall. Training draws t uniformly, so a schedule that spends most of [0, 1] at very
# low SNR (the linear DDPM table, tutorial 1) trains and samples little at the low noise levels where fine
# detail is decided. With many sampling steps this hardly shows; with few it does. The experiment: the same
# network, data, seed and batches, trained under the linear and the cosine schedule, then sampled with
# DPM-Solver++(2M) at several NFE and measured by the sliced Wasserstein distance (SW) to the data.

# %% [markdown] lang=bg
# # 3. Графиците на шума и тяхното влияние върху качеството
#
# Графикът определя къде по оста на log-SNR lambda_t = log(alpha_t^2 / sigma_t^2) попадат примерите за
# обучение и стъпките на семплирането. Обучението тегли t равномерно, затова график, който прекарва по-голямата
# част от [0, 1] при много ниско SNR (линейната таблица на DDPM, урок 1), обучава и семплира малко при ниските
# нива на шума, където се решават фините детайли. При много стъпки на семплиране това почти не личи; при малко
# личи. Експериментът: една и съща мрежа, данни, seed и партиди, обучени с линейния и с косинусовия график,
# после семплирани с DPM-Solver++(2M) при няколко NFE и измерени с нарязаното разстояние на Васерщайн (SW)
# до данните.

# %%
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import difflab as dl
from difflab.metrics import sliced_wasserstein
from difflab.viz import points_figure

toy = dl.load_dataset("toy2d", name="checkerboard")
N = 2000 if QUICK else 10000
ref = dl.load_dataset("toy2d", name="checkerboard", n=N, seed=1).x
floor = sliced_wasserstein(ref, toy.x[:N])
steps = 1500 if QUICK else 10000
nfes = [5, 10, 20, 50]
runs, quality = {}, {}
for name in ("linear", "cosine"):
    den = dl.create_denoiser(toy.shape, schedule=name, prediction="eps", clip_x0=None, seed=0)
    t0 = time.perf_counter()
    runs[name] = dl.train(den, toy, WORK / name, steps=steps, batch_size=256, seed=0, progress=False, sample_every=0,
                          log_every=max(1, steps // 5), milestones=(0.1, 0.3, 1.0))
    quality[name] = {}
    for nfe in nfes:
        x = dl.sample(runs[name].ema, n=N, sampler="dpmpp_2m", steps=nfe, seed=0, progress=False).x
        quality[name][nfe] = sliced_wasserstein(x, toy.x[:N])
    print(f"{name:6s} ({time.perf_counter() - t0:.0f} s): " +
          "  ".join(f"NFE {k}: SW {v:.4f}" for k, v in quality[name].items()))
    for nfe in (5, 10, 50):
        record(f"sched_{name}_nfe{nfe}", quality[name][nfe])
record("sched_floor", floor)
print(f"real-vs-real floor: {floor:.4f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
for name, q in quality.items():
    ax.plot(list(q), list(q.values()), "o-", label=name)
ax.axhline(floor, color="grey", ls="--", label="real vs real")
ax.set(xscale="log", xlabel="NFE (DPM-Solver++ 2M)", ylabel="sliced Wasserstein to data", title="quality against NFE")
ax.set_xticks(nfes, [str(n) for n in nfes])
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(figure("quality_vs_nfe.png"), dpi=100)
plt.close(fig)
points_figure({f"{name}, NFE {nfe}": dl.sample(runs[name].ema, n=N, sampler="dpmpp_2m", steps=nfe, seed=0,
                                               progress=False).x
               for name in ("linear", "cosine") for nfe in (5, 10)}, figure("samples_low_nfe.png"), data=toy.x[:N])

# %% [markdown]
# At 5 NFE the linear schedule is at SW {{sched_linear_nfe5:.3f}}, the cosine at {{sched_cosine_nfe5:.3f}}; at
# 10 NFE {{sched_linear_nfe10:.3f}} against {{sched_cosine_nfe10:.3f}}; at 50 NFE they are at
# {{sched_linear_nfe50:.3f}} and {{sched_cosine_nfe50:.3f}} (real-vs-real floor {{sched_floor:.3f}}). This is
# the pitfall **a wrong schedule**: the error of few-step sampling depends on the schedule, while with many steps
# the difference closes. The larger experiment, eight variants with their report, is
# `difflab sweep sweeps/schedules-toy2d.yaml` (README "Experiments").
#
# ## Removing noise too fast: the variance loss of few-step ancestral sampling
#
# A DDPM step draws x_s from q(x_s | x_t, x0 = x0_hat) as if x0_hat were the true x0; it ignores the
# uncertainty Var[x0 | x_t]. With many small steps that costs nothing; with a few large ones the samples come
# out with too little variance, even with a perfect denoiser. We measure it with the *exact* denoiser of
# Gaussian data N(0, diag(1, 0.25)), so that the network is not to blame.

# %% [markdown] lang=bg
# При 5 NFE линейният график е на SW {{sched_linear_nfe5:.3f}}, косинусовият на {{sched_cosine_nfe5:.3f}}; при
# 10 NFE {{sched_linear_nfe10:.3f}} срещу {{sched_cosine_nfe10:.3f}}; при 50 NFE са на {{sched_linear_nfe50:.3f}} и
# {{sched_cosine_nfe50:.3f}} (долна граница реални-срещу-реални {{sched_floor:.3f}}). Това е капанът
# **грешен график**: грешката при семплиране с малко стъпки зависи от графика, а при много стъпки разликата
# изчезва. По-големият експеримент, осем варианта с отчет, е `difflab sweep sweeps/schedules-toy2d.yaml`
# (раздел "Experiments" на README).
#
# ## Твърде бързо премахване на шума: загубата на дисперсия при анцестрално семплиране с малко стъпки
#
# Една стъпка на DDPM тегли x_s от q(x_s | x_t, x0 = x0_hat), все едно x0_hat е истинското x0; тя пренебрегва
# неопределеността Var[x0 | x_t]. При много малки стъпки това не струва нищо; при няколко големи генерираните
# данни излизат с твърде малка дисперсия, дори при перфектен денойзър. Измерваме го с *точния* денойзър на
# гаусови данни N(0, diag(1, 0.25)), за да не е виновна мрежата.

# %%
cov = torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64))
exact = dl.GaussianDenoiser(dl.get_schedule("linear", T=1000), torch.zeros(2, dtype=torch.float64), cov, shape=(2,))
ratios = {}
for k in (2, 5, 10, 20, 100, 1000):
    x = dl.sample(exact, n=2000 if QUICK else 20000, shape=(2,), sampler="ddpm", steps=k, seed=0,
                  progress=False).x.double()
    ratios[k] = float(x.var(0).sum() / cov.diagonal().sum())
    print(f"DDPM {k:4d} steps: sample variance / data variance = {ratios[k]:.3f}")
record("var_ratio_ddpm5", ratios[5])
record("var_ratio_ddpm10", ratios[10])
record("var_ratio_ddpm1000", ratios[1000])
x_ddim = dl.sample(exact, n=2000 if QUICK else 20000, shape=(2,), sampler="ddim", steps=5, seed=0,
                   progress=False).x.double()
record("var_ratio_ddim5", float(x_ddim.var(0).sum() / cov.diagonal().sum()))
print(f"DDIM    5 steps: sample variance / data variance = {float(x_ddim.var(0).sum() / cov.diagonal().sum()):.3f}")
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(list(ratios), list(ratios.values()), "o-", label="DDPM (ancestral)")
ax.axhline(1.0, color="grey", ls="--", label="data")
ax.set(xscale="log", xlabel="sampling steps", ylabel="sample variance / data variance",
       title="few-step ancestral sampling loses variance\n(exact denoiser of Gaussian data)")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(figure("variance_vs_steps.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# With the exact denoiser, 5 DDPM steps keep {{var_ratio_ddpm5:.2f}} of the data variance and 10 steps
# {{var_ratio_ddpm10:.2f}}; 1000 steps {{var_ratio_ddpm1000:.2f}} (at the quick setting the sample size limits
# this to about +-0.03). The deterministic DDIM with 5 steps keeps {{var_ratio_ddim5:.2f}}: coarse steps of
# either kind fall short, through the discretisation error of the ODE for DDIM, and for DDPM also through the
# certainty it grants x0_hat. On images the lost variance is lost detail: samples come out smooth and washed out.
#
# ## An undertrained score: quality against training time
#
# The training above kept checkpoints at 10%, 30% and 100% of its budget (`milestones=`, on the command line
# `difflab train ... --milestones 0.1,0.3,1`). Sampling each with 20 NFE:

# %% [markdown] lang=bg
# С точния денойзър 5 стъпки на DDPM запазват {{var_ratio_ddpm5:.2f}} от дисперсията на данните, а 10 стъпки
# {{var_ratio_ddpm10:.2f}}; 1000 стъпки {{var_ratio_ddpm1000:.2f}} (с бързата настройка размерът на извадката
# ограничава точността до около +-0.03). Детерминистичният DDIM с 5 стъпки запазва {{var_ratio_ddim5:.2f}}:
# грубите стъпки и от двата вида не достигат, при DDIM заради грешката от дискретизацията на уравнението, а при
# DDPM и заради сигурността, която се приписва на x0_hat. При изображенията изгубената дисперсия е изгубен
# детайл: резултатите излизат гладки и бледи.
#
# ## Недообучен скор: качеството спрямо времето за обучение
#
# Обучението по-горе запази контролни точки при 10%, 30% и 100% от бюджета си (`milestones=`, в командния ред
# `difflab train ... --milestones 0.1,0.3,1`). Семплиране на всяка с 20 NFE:

# %%
curve = {}
for ck in sorted((WORK / "cosine" / "milestones").glob("step_*"), key=lambda p: int(p.name.split("_")[1])):
    x = dl.sample(dl.load(ck), n=N, sampler="dpmpp_2m", steps=20, seed=0, progress=False).x
    curve[int(ck.name.split("_")[1])] = sliced_wasserstein(x, toy.x[:N])
    print(f"cosine after {ck.name}: SW {curve[int(ck.name.split('_')[1])]:.4f}")
first, last = min(curve), max(curve)
record("undertrained_steps", first)
record("undertrained_sw", curve[first])
record("trained_steps", last)
record("trained_sw", curve[last])
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(list(curve), list(curve.values()), "o-", label="cosine, 20 NFE")
ax.axhline(floor, color="grey", ls="--", label="real vs real")
ax.set(xlabel="training steps", ylabel="sliced Wasserstein to data", title="quality against training time")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(figure("quality_vs_training.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# After {{undertrained_steps}} steps the model is at SW {{undertrained_sw:.3f}}, after {{trained_steps}} at
# {{trained_sw:.3f}}. An undertrained score still produces samples, but blurred between the modes: the
# denoiser has not yet learned the sharp posterior at low noise, so the samples are drawn towards averages.

# %% [markdown] lang=bg
# След {{undertrained_steps}} стъпки моделът е на SW {{undertrained_sw:.3f}}, след {{trained_steps}} на
# {{trained_sw:.3f}}. Недообученият скор пак генерира, но размазано между модите: денойзърът още не е научил
# острото апостериорно разпределение при нисък шум, затова резултатите се теглят към средните стойности.
