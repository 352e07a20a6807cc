# Tutorial 4: a diffusion model inside a larger system. Executed by scripts/tutorials.py (jupytext percent format).

# %% [markdown]
# # 4. A diffusion model inside a larger system
#
# A trained model is a file that other tools read, a generator whose samples are measured, and one choice among
# several kinds of generative model. This tutorial does the three on the 8x8 digits (images 0-1499 for
# training, 1500-1796 held out): it exports a model in the diffusers format and reads it back, evaluates it
# with `difflab eval`, and compares it with a GAN and a VAE trained on the same data with `difflab compare`.
# Last, the compute a model costs.

# %% [markdown] lang=bg
# # 4. Дифузионният модел в по-голяма система
#
# Обученият модел е файл, който други инструменти четат, генератор, чиито резултати се измерват, и един
# избор сред няколко вида генеративни модели. Този урок прави трите неща върху цифрите 8x8 (изображения
# 0-1499 за обучение, 1500-1796 отделени за проверка): експортира модел във формата на diffusers и го чете
# обратно, оценява го с `difflab eval` и го сравнява с GAN и VAE, обучени върху същите данни, с
# `difflab compare`. Накрая: изчислителната цена на модела.

# %%
import json
import shutil

import numpy as np

TRAIN, HELD = "0:1500", "1500:1797"
steps = 300 if QUICK else 4000
run = WORK / "diffusion"
shutil.rmtree(run, ignore_errors=True)
cli("train", "--data", "digits", "--index-range", TRAIN, "--steps", steps, "--channels", "16,32",
    "--layers-per-block", 1, "--milestones", "0.25,1", "--sample-every", 0, "--seed", 0, "--no-progress", "--out", run)

# %% [markdown]
# ## The diffusers format, out and in
#
# `difflab export` writes a `DDPMPipeline` folder: `model_index.json`, the UNet's `config.json` and
# `diffusion_pytorch_model.safetensors`, and the scheduler's beta table. `difflab sample --pretrained` reads
# such a folder (one of ours, or a pipeline from the Hugging Face cache) and runs any difflab sampler on it.
# The round trip must give the same samples from the same seed.

# %% [markdown] lang=bg
# ## Форматът на diffusers: навън и навътре
#
# `difflab export` записва папка на `DDPMPipeline`: `model_index.json`, `config.json` на UNet и
# `diffusion_pytorch_model.safetensors`, както и таблицата на бетите на планировчика. `difflab sample
# --pretrained` чете такава папка (наша или конвейер от кеша на Hugging Face) и пуска върху нея всеки семплер
# на difflab. Двупосочното преобразуване трябва да дава същите резултати от същия seed.

# %%
pipe = WORK / "pipeline"
shutil.rmtree(pipe, ignore_errors=True)
cli("export", run, "--diffusers", pipe)
print(sorted(str(p.relative_to(pipe)) for p in pipe.rglob("*") if p.is_file()))
cli("sample", run, "--sampler", "ddim", "--steps", 20, "--n", 64, "--no-progress", "--out", WORK / "own")
cli("sample", "--pretrained", pipe, "--sampler", "ddim", "--steps", 20, "--n", 64, "--no-progress",
    "--out", WORK / "imported")
a = np.load(WORK / "own" / "ddim_20_seed0.npz")["samples"].astype(int)
b = np.load(WORK / "imported" / "ddim_20_seed0.npz")["samples"].astype(int)
diff = int(np.abs(a - b).max())
print(f"largest pixel difference between the model and its diffusers round trip: {diff} (of 255)")
record("roundtrip_max_diff", diff)
shutil.copy(WORK / "imported" / "ddim_20_seed0.png", figure("roundtrip_samples.png"))

# %% [markdown]
# The samples of the exported and re-imported model differ from the original's by at most
# {{roundtrip_max_diff}} grey levels of 255 (float rounding can flip a pixel by one level).
#
# ## Evaluation
#
# Sample quality is measured in the feature space of a classifier trained on the data (`difflab
# train-classifier`; for natural images `--inception` uses the standard FID network): the Frechet distance
# (FD) between the Gaussians fitted to the features of samples and of held-out images,
#
# $$\mathrm{FD} = \lVert \mu_s - \mu_r \rVert^2 + \mathrm{tr}\big(\Sigma_s + \Sigma_r - 2 (\Sigma_s \Sigma_r)^{1/2}\big),$$
#
# with KID, precision and recall beside it, each next to the real-vs-real floor of the same size.

# %% [markdown] lang=bg
# Резултатите на експортирания и отново импортиран модел се различават от тези на оригинала с най-много
# {{roundtrip_max_diff}} нива на сивото от 255 (закръглянето може да промени пиксел с едно ниво).
#
# ## Оценяване
#
# Качеството се измерва в пространството на признаците на класификатор, обучен върху данните (`difflab
# train-classifier`; за естествени изображения `--inception` използва стандартната мрежа на FID): разстоянието
# на Фреше (FD) между гаусовите разпределения, напаснати към признаците на генерираните и на отделените
# изображения,
#
# $$\mathrm{FD} = \lVert \mu_s - \mu_r \rVert^2 + \mathrm{tr}\big(\Sigma_s + \Sigma_r - 2 (\Sigma_s \Sigma_r)^{1/2}\big),$$
#
# заедно с KID, точност (precision) и обхват (recall), всяко до долната граница реални-срещу-реални със същия размер.

# %%
clf = WORK / "classifier"
n_eval = 300 if QUICK else 1000
shutil.rmtree(clf, ignore_errors=True)
cli("train-classifier", "--data", "digits", "--index-range", TRAIN, "--steps", 200 if QUICK else 2000, "--seed", 0,
    "--no-progress", "--out", clf)
cli("eval", "--checkpoint", run, "--data", "digits", "--train-range", TRAIN, "--ref-range", HELD,
    "--classifier", clf, "--sampler", "dpmpp_2m", "--steps", 20, "--n", n_eval, "--min-samples", 100,
    "--no-progress", "--out", WORK / "scores.json")
scores = json.loads((WORK / "scores.json").read_text())
print(sorted(scores) if isinstance(scores, dict) else type(scores))
fd, floor = scores["fd_samples"], scores["fd_floor"]
record("eval_fd", fd)
record("eval_fd_floor", floor)
record("eval_precision", scores["precision_samples"])
record("eval_recall", scores["recall_samples"])

# %% [markdown]
# Real training images score FD {{eval_fd_floor:.2f}} against the held-out ones (the floor at this sample
# size); the model's samples reach FD {{eval_fd:.2f}}, precision {{eval_precision:.2f}} and recall
# {{eval_recall:.2f}}.
#
# ## Diffusion against a GAN and a VAE
#
# A GAN learns a generator G(z) in one network evaluation per image, by a game against a discriminator; a VAE
# decodes samples of its latent prior; a diffusion model pays many network evaluations (NFE) per image for a
# training objective that is a plain regression. `difflab compare` samples every model the same way and scores
# them with the same classifier; its report has the grids, FD against training time from the checkpoints kept
# along each run (`--milestones`), and one table.

# %% [markdown] lang=bg
# Реалните обучаващи изображения имат FD {{eval_fd_floor:.2f}} спрямо отделените (долната граница при този
# размер на извадката); резултатите на модела достигат FD {{eval_fd:.2f}}, точност {{eval_precision:.2f}} и
# обхват {{eval_recall:.2f}}.
#
# ## Дифузия срещу GAN и VAE
#
# GAN научава генератор G(z) с едно изчисление на мрежата на изображение, чрез игра срещу дискриминатор; VAE
# декодира извадки от латентното си априорно разпределение; дифузионният модел плаща много изчисления на
# мрежата (NFE) на изображение за цел на обучението, която е обикновена регресия. `difflab compare` семплира
# всеки модел по един и същ начин и го оценява със същия класификатор; отчетът съдържа таблиците с примери,
# FD спрямо времето за обучение от контролните точки по време на всяко обучение (`--milestones`) и една таблица.

# %%
gan, vae = WORK / "gan", WORK / "vae"
for p in (gan, vae, WORK / "compare"):
    shutil.rmtree(p, ignore_errors=True)
cli("train-gan", "--data", "digits", "--index-range", TRAIN, "--steps", 300 if QUICK else 4000, "--milestones", "0.25,1",
    "--sample-every", 0, "--seed", 0, "--no-progress", "--out", gan)
cli("train-autoencoder", "--data", "digits", "--index-range", TRAIN, "--heldout-range", HELD, "--factor", 2,
    "--loss", "l2", "--kl-weight", 0.02, "--steps", 200 if QUICK else 3000, "--sample-every", 0, "--seed", 0,
    "--no-progress", "--out", vae)
cli("compare", "--group", f"diffusion={run}", "--group", f"gan={gan}", "--group", f"vae={vae}",
    "--opt", "diffusion:steps=20", "--data", "digits", "--train-range", TRAIN, "--ref-range", HELD,
    "--classifier", clf, "--n", n_eval, "--min-samples", 100, "--curve-n", 100 if QUICK else 500,
    "--no-progress", "--out", WORK / "compare")
cmp_res = json.loads((WORK / "compare" / "results.json").read_text())
for m in cmp_res["models"]:
    for key in ("fd_samples", "nfe", "seconds_per_image"):
        record(f"compare_{m['name']}_{key}", float(m[key]))
record("compare_fd_floor", float(cmp_res["real"]["fd_samples"]) if "fd_samples" in cmp_res["real"] else floor)
shutil.copy(WORK / "compare" / "samples.png", figure("compare_samples.png"))
if (WORK / "compare" / "quality_vs_time.png").exists():
    shutil.copy(WORK / "compare" / "quality_vs_time.png", figure("compare_quality_vs_time.png"))

# %% [markdown]
# The table above, measured at this budget: FD {{compare_diffusion_fd_samples:.2f}} for diffusion with
# {{compare_diffusion_nfe:.0f}} NFE ({{compare_diffusion_seconds_per_image:.4f}} s an image), the GAN
# {{compare_gan_fd_samples:.2f}} with 1 NFE ({{compare_gan_seconds_per_image:.5f}} s), the VAE
# {{compare_vae_fd_samples:.2f}}. The difference in kind: the GAN is fast to sample but its game can collapse onto
# a few modes (`train-gan` watches for it), the VAE (by its construction: a Gaussian decoder averages what it cannot tell apart) tends to be
# stable but blurry, the diffusion model is stable, covers the
# modes, and pays at sampling time. At the quick setting every model is undertrained and the ranking can change
# with the budget; the full budget is in `benchmarks/diffusion_vs_gan.py` (BENCHMARKS.md).
#
# ## Compute: speed and memory against image size and batch
#
# Training cost grows with the number of pixels (the UNet's activations) and the batch. We time a training step
# of one UNet (channels 16, 32, 64, as for MNIST) at three image sizes and count the bytes of the activations it keeps for the backward pass (the memory
# that grows with size and batch; the weights and the optimizer's state do not), on this machine's CPU.

# %% [markdown] lang=bg
# Таблицата по-горе, измерена при този бюджет: FD {{compare_diffusion_fd_samples:.2f}} за дифузията с
# {{compare_diffusion_nfe:.0f}} NFE ({{compare_diffusion_seconds_per_image:.4f}} s на изображение), GAN
# {{compare_gan_fd_samples:.2f}} с 1 NFE ({{compare_gan_seconds_per_image:.5f}} s), VAE
# {{compare_vae_fd_samples:.2f}}. Разликата по същество: GAN семплира бързо, но играта му може да се свие до
# няколко моди (`train-gan` следи за това), VAE (по построение: гаусовият декодер осреднява това, което не може да различи) обикновено е
# стабилен, но размазан, дифузионният модел е стабилен, покрива
# модите и плаща при семплирането. С бързата настройка всички модели са недообучени и класирането може да се
# промени с бюджета; пълният бюджет е в `benchmarks/diffusion_vs_gan.py` (BENCHMARKS.md).
#
# ## Изчисления: скорост и памет спрямо размера на изображението и партидата
#
# Цената на обучението расте с броя на пикселите (активациите на UNet) и с партидата. Измерваме времето за
# една стъпка на обучение на един и същ UNet (канали 16, 32, 64, както за MNIST) при три размера на
# изображението и броим байтовете на активациите, които тя пази за
# обратното разпространение (паметта, която расте с размера и партидата; теглата и състоянието на оптимизатора
# не растат), върху процесора на тази машина.

# %%
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import difflab as dl


def step_cost(size: int, batch: int, repeats: int) -> tuple[float, float]:
    """Training steps per second and MiB of activations saved for backward, one step of the default UNet."""
    net = dict(type="unet", in_channels=1, channels=[16, 32, 64], layers_per_block=1, attention_levels=[2])
    den = dl.create_denoiser((1, size, size), network=net, seed=0)
    opt = torch.optim.AdamW(den.net.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 1, size, size)
    saved = []

    seen = set()

    def pack(t):
        # activations only: parameters (saved for the backward of conv and linear layers) are not memory that
        # grows with size and batch, and a tensor saved by several operations is one storage, counted once
        if not isinstance(t, torch.nn.Parameter) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            saved.append(t.untyped_storage().nbytes())
        return t

    def one_step(count: bool):
        t = torch.rand(batch)
        x_t = dl.q_sample(den.schedule, x0, t)
        if count:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = (den(x_t, t) - x0).pow(2).mean()
        else:
            loss = (den(x_t, t) - x0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    one_step(True)
    start = time.perf_counter()
    for _ in range(repeats):
        one_step(False)
    return repeats / (time.perf_counter() - start), sum(saved) / 2**20


sizes = [8, 16, 32]
batches = [16, 64] if QUICK else [16, 64, 256]
cost = {(s, b): step_cost(s, b, 2 if QUICK else 10) for s in sizes for b in batches}
print(f"CPU, {torch.get_num_threads()} torch thread(s)")
for (s, b), (its, mib) in cost.items():
    print(f"{s:3d}x{s:<3d} batch {b:4d}: {its:7.2f} it/s, {its * b:8.0f} images/s, activations {mib:8.1f} MiB")
record("compute_its_8_16", cost[8, 16][0])
record("compute_its_32_64", cost[32, 64][0])
record("compute_mib_8_16", cost[8, 16][1])
record("compute_mib_32_64", cost[32, 64][1])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for b in batches:
    axes[0].plot(sizes, [cost[s, b][0] for s in sizes], "o-", label=f"batch {b}")
    axes[1].plot(sizes, [cost[s, b][1] for s in sizes], "o-", label=f"batch {b}")
axes[0].set(xlabel="image size (pixels a side)", ylabel="training steps / s", yscale="log", title="speed (CPU)")
axes[1].set(xlabel="image size (pixels a side)", ylabel="activation memory (MiB)", yscale="log",
            title="memory kept for backward")
for ax in axes:
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
fig.savefig(figure("compute.png"), dpi=100)
plt.close(fig)

# %% [markdown]
# From 8x8 with batch 16 to 32x32 with batch 64 the step rate falls from {{compute_its_8_16:.1f}} to
# {{compute_its_32_64:.1f}} steps a second and the activations grow from {{compute_mib_8_16:.1f}} to
# {{compute_mib_32_64:.0f}} MiB. This is the pitfall **neglecting compute**: a budget in minutes buys far fewer
# steps on larger images, and the memory of the batch, not of the weights, sets the limit. A GPU changes the
# constants (not measured here), not the growth.

# %% [markdown] lang=bg
# От 8x8 с партида 16 до 32x32 с партида 64 скоростта пада от {{compute_its_8_16:.1f}} на
# {{compute_its_32_64:.1f}} стъпки в секунда, а активациите растат от {{compute_mib_8_16:.1f}} до
# {{compute_mib_32_64:.0f}} MiB. Това е капанът **пренебрегнати изчисления**: бюджет в минути купува много
# по-малко стъпки при по-големи изображения, а границата се определя от паметта на партидата, не от теглата.
# Графичният процесор променя константите (тук не е измерван), не и растежа.
