# Tutorial 2: the reverse process and the score. Executed by scripts/tutorials.py (jupytext percent format).

# %% [markdown]
# # 2. The reverse process and the score function
#
# To generate we run the process backwards: start from x_1 ~ N(0, I) and remove noise step by step. All the
# reverse process needs is a *denoiser* D(x_t, t) = x0_hat, a network trained to guess the clean data from
# the noisy data with the loss
#
# $$L = \mathbb E_{x_0, t, \varepsilon}\, w(t)\, \lVert D(\alpha_t x_0 + \sigma_t\varepsilon, t) - x_0 \rVert^2 .$$
#
# Its optimum is the posterior mean E[x_0 | x_t], and Tweedie's formula turns that into the **score**, the
# gradient of the log-density of the noisy data:
#
# $$\nabla_x \log p_t(x) = \frac{\alpha_t \hat x_0 - x}{\sigma_t^2} = -\frac{\hat\varepsilon}{\sigma_t}.$$
#
# The score points towards where the data are more likely; a sampler follows it from noise to data (one DDPM
# step draws x_s from the Gaussian posterior q(x_s | x_t, x0 = x0_hat)). We train on the 2-D checkerboard
# first, where the score can be drawn as arrows.

# %% [markdown] lang=bg
# # 2. Обратният процес и функцията на скора (score)
#
# За да генерираме, изпълняваме процеса наобратно: тръгваме от x_1 ~ N(0, I) и премахваме шума стъпка по
# стъпка. Обратният процес се нуждае само от *денойзър* D(x_t, t) = x0_hat, мрежа, обучена да познава
# чистите данни по зашумените, със загубата
#
# $$L = \mathbb E_{x_0, t, \varepsilon}\, w(t)\, \lVert D(\alpha_t x_0 + \sigma_t\varepsilon, t) - x_0 \rVert^2 .$$
#
# Нейният оптимум е апостериорното средно E[x_0 | x_t], а формулата на Туиди го превръща в **скора** (score),
# градиента на логаритъма на плътността на зашумените данни:
#
# $$\nabla_x \log p_t(x) = \frac{\alpha_t \hat x_0 - x}{\sigma_t^2} = -\frac{\hat\varepsilon}{\sigma_t}.$$
#
# Скорът сочи натам, където данните са по-вероятни; семплерът го следва от шума към данните (една стъпка на
# DDPM тегли x_s от гаусовото апостериорно разпределение q(x_s | x_t, x0 = x0_hat)). Първо обучаваме върху
# двумерната шахматна дъска, където скорът може да се нарисува като стрелки.

# %%
import shutil
import time

import torch

import difflab as dl
from difflab.metrics import sliced_wasserstein
from difflab.viz import points_figure, score_field_figure

toy = dl.load_dataset("toy2d", name="checkerboard")
den = dl.create_denoiser(toy.shape, schedule="cosine", prediction="eps", clip_x0=None, seed=0)
steps = 1500 if QUICK else 10000
t0 = time.perf_counter()
run = dl.train(den, toy, WORK / "toy", steps=steps, batch_size=256, lr=2e-3, seed=0, progress=False,
               sample_every=0, log_every=max(1, steps // 5))
print(f"{run.step} steps in {time.perf_counter() - t0:.1f} s ({run.it_per_s:.0f} it/s)")
n = 2000 if QUICK else 10000
out = dl.sample(run.ema, n=n, sampler="ddpm", steps=100, seed=0, progress=False)
ref = dl.load_dataset("toy2d", name="checkerboard", n=n, seed=1).x
sw, floor = sliced_wasserstein(out.x, toy.x[:n]), sliced_wasserstein(ref, toy.x[:n])
print(f"DDPM 100 steps: SW to the data {sw:.4f} (real-vs-real floor {floor:.4f})")
record("toy_steps", run.step)
record("toy_sw", sw)
record("toy_floor", floor)
points_figure(out.x, figure("toy_samples.png"), data=toy.x[:n], title=f"DDPM, 100 steps, after {run.step} steps")

# %% [markdown]
# After {{toy_steps}} training steps the samples lie on the squares: sliced Wasserstein distance
# {{toy_sw:.3f}} to the data, where two real samples of the same size are {{toy_floor:.3f}} apart.
#
# ## The score field, and the reverse trajectory with x0_hat
#
# The learned score at four noise levels (arrows: direction, colour: log10 of the size). Near t = 0 every
# square is a sink; at large t the noisy distribution is almost a Gaussian and the field points to the centre.
# We compare the learned score with the exact score of the noised training set, whose density is the mixture
# p_t(x) = (1/N) sum_i N(x; alpha_t x_i, sigma_t^2 I), with score sum_i w_i(x) (alpha_t x_i - x) / sigma_t^2
# (w_i: the posterior weight of point i).

# %% [markdown] lang=bg
# След {{toy_steps}} стъпки на обучение генерираните точки лежат върху квадратите: нарязано разстояние на
# Васерщайн {{toy_sw:.3f}} до данните, докато две реални извадки със същия размер са на {{toy_floor:.3f}}.
#
# ## Полето на скора и обратната траектория с x0_hat
#
# Наученият скор при четири нива на шума (стрелки: посока, цвят: log10 на големината). Близо до t = 0 всеки
# квадрат е привличащ център; при голямо t зашуменото разпределение е почти гаусово и полето сочи към
# центъра. Сравняваме научения скор с точния скор на зашумените обучаващи данни, чиято плътност е сместа
# p_t(x) = (1/N) sum_i N(x; alpha_t x_i, sigma_t^2 I), със скор sum_i w_i(x) (alpha_t x_i - x) / sigma_t^2
# (w_i: апостериорното тегло на точка i).

# %%
from difflab.denoisers import score_hat

score_field_figure(run.ema, [0.05, 0.2, 0.5, 0.9], figure("score_field.png"), data=toy.x[:3000])
x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)) * 1.5
for tt in (0.2, 0.5):
    t = torch.full((1000,), tt)
    a, sg = run.ema.schedule.alpha_sigma(torch.tensor(tt))
    with torch.no_grad():
        learned = score_hat(run.ema.schedule, x, t, run.ema(x, t))
    # the exact score of the noised training set: p_t(x) = mean_i N(x; alpha x_i, sigma^2 I)
    w = torch.softmax(-torch.cdist(x, a * toy.x) ** 2 / (2 * sg**2), dim=1)
    exact = (a * w @ toy.x - x) / sg**2
    cos = torch.nn.functional.cosine_similarity(learned, exact, dim=1).mean()
    rel = ((learned - exact).norm(dim=1) / exact.norm(dim=1)).median()
    print(f"t={tt}: learned vs exact score, mean cosine {float(cos):.3f}, median relative error {float(rel):.3f}")
    record(f"score_cos_t{tt}", float(cos))

res = dl.sample(run.ema, n=2000, sampler="ddpm", steps=50, seed=0, progress=False, trajectory=[0, 25, 40, 49],
                trajectory_n=2000)
tr = res.trajectory
panels = {}
for k in range(len(tr["steps"])):
    panels[f"x_t, t={float(tr['t_next'][k]):.2f}"] = tr["x"][k]
for k in range(len(tr["steps"])):
    panels[f"x0_hat at t={float(tr['t'][k]):.2f}"] = tr["x0_hat"][k]
points_figure(panels, figure("toy_trajectory.png"), data=toy.x[:2000])

# %% [markdown]
# The learned score points where the exact one does: mean cosine {{score_cos_t0.2:.2f}} at t = 0.2 and
# {{score_cos_t0.5:.2f}} at t = 0.5. It is least accurate at low noise, where the exact field changes sharply at
# the edges of the squares and the network has the most to learn.
#
# Top row: the states x_t of 2000 samples along a 50-step DDPM run; bottom row: the denoiser's guess x0_hat
# at the same steps. At high noise x0_hat is the blurred average of the whole board (the posterior mean of
# many squares); as t falls each guess commits to one square, and the state follows it.
#
# ## The same on real images: 8x8 digits, and MNIST
#
# The command line trains and samples the same way (`difflab train`, `difflab sample --trajectory`). On
# scikit-learn's 1,797 digits a small UNet learns in a minute what digits look like:

# %% [markdown] lang=bg
# Наученият скор сочи натам, накъдето и точният: средна косинусова близост {{score_cos_t0.2:.2f}} при t = 0.2 и
# {{score_cos_t0.5:.2f}} при t = 0.5. Най-неточен е при слаб шум, където точното поле се променя рязко по ръбовете
# на квадратите и мрежата има най-много за учене.
#
# Горен ред: състоянията x_t на 2000 точки по време на 50 стъпки на DDPM; долен ред: предположението на
# денойзъра x0_hat в същите стъпки. При силен шум x0_hat е размитото средно на цялата дъска (апостериорното
# средно на много квадрати); когато t намалява, всяко предположение се спира на един квадрат и състоянието
# го следва.
#
# ## Същото върху реални изображения: цифри 8x8 и MNIST
#
# Командният ред обучава и генерира по същия начин (`difflab train`, `difflab sample --trajectory`). Върху
# 1797-те цифри на scikit-learn малък UNet научава за минута как изглеждат цифрите:

# %%
dsteps = 300 if QUICK else 3000
digits_run = WORK / "digits"
shutil.rmtree(digits_run, ignore_errors=True)
cli("train", "--data", "digits", "--steps", dsteps, "--channels", "16,32", "--layers-per-block", "1",
    "--batch-size", 64, "--sample-every", 0, "--seed", 0, "--no-progress", "--out", digits_run)
cli("sample", digits_run, "--sampler", "ddpm", "--steps", 100, "--n", 36, "--trajectory", "--trajectory-points", 8,
    "--no-progress", "--out", WORK / "digits_samples")
shutil.copy(WORK / "digits_samples" / "ddpm_100_seed0.png", figure("digits_samples.png"))
shutil.copy(WORK / "digits_samples" / "ddpm_100_seed0_trajectory.png", figure("digits_trajectory.png"))

# %% [markdown]
# Each column of the trajectory is one step: the upper image of a pair is the state x_t, the lower one the
# denoiser's x0_hat. The guess is a recognisable digit long before the state is.
#
# MNIST (28x28) works the same way; it is read from `../shared/data/mnist` (`--data-dir`), and skipped when
# that folder is absent. Training a 28x28 model takes minutes, so only the full budget trains it
# (`--minutes 10`, README "Train on MNIST"); the quick setting shows the real images and samples from the
# 8x8 model above.

# %% [markdown] lang=bg
# Всяка колона на траекторията е една стъпка: горното изображение от двойката е състоянието x_t, долното
# е x0_hat на денойзъра. Предположението е разпознаваема цифра много преди състоянието да стане такава.
#
# MNIST (28x28) работи по същия начин; чете се от `../shared/data/mnist` (`--data-dir`) и се пропуска, ако
# тази папка липсва. Обучението на модел 28x28 отнема минути, затова само пълният бюджет го обучава
# (`--minutes 10`, раздел "Train on MNIST" на README); бързата настройка показва реалните изображения и
# генерираните от модела 8x8 по-горе.

# %%
mnist = DATA / "mnist"
if (mnist / "t10k-images-idx3-ubyte.gz").exists():
    real = dl.load_dataset("mnist", data_dir=mnist, index_range="0:16")
    dl.save_grid(real.x, figure("mnist_real.png"), nrow=8)
    print(f"MNIST: {len(real)} real images of shape {tuple(real.shape)} shown")
    if not QUICK:
        shutil.rmtree(WORK / "mnist", ignore_errors=True)
        cli("train", "--data", "mnist", "--data-dir", mnist, "--minutes", 10, "--sample-every", 0, "--no-progress",
            "--out", WORK / "mnist")
        cli("sample", WORK / "mnist", "--sampler", "ddpm", "--steps", 200, "--n", 16, "--trajectory",
            "--no-progress", "--out", WORK / "mnist_samples")
        shutil.copy(WORK / "mnist_samples" / "ddpm_200_seed0.png", figure("mnist_samples.png"))
        shutil.copy(WORK / "mnist_samples" / "ddpm_200_seed0_trajectory.png", figure("mnist_trajectory.png"))
else:
    print(f"MNIST skipped: {mnist} has no t10k-images-idx3-ubyte.gz (see ../shared/data/README.md)")
