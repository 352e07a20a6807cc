# Tutorial 5: modern improvements and uses beyond images. Executed by scripts/tutorials.py (jupytext percent format).

# %% [markdown]
# # 5. Beyond the basics: guidance, latent space, sound, few steps
#
# Four ideas that made diffusion models practical, each run on small data: classifier-free guidance (steering
# samples to a class), latent diffusion (diffusing in an autoencoder's compact space), audio (the same process on
# spoken digits) and few-step generation by distillation.
#
# ## Classifier-free guidance
#
# One network learns both the conditional denoiser D(x_t, t, y) and the unconditional D(x_t, t, null): during
# training 10% of the labels are replaced by a null label. At sampling time the two are extrapolated,
#
# $$D_w = D(x_t, t, \varnothing) + w\,\big(D(x_t, t, y) - D(x_t, t, \varnothing)\big),$$
#
# where w = 1 is the conditional model itself, w = 0 the unconditional one, and w > 1 pushes towards what makes
# the class the class (Ho & Salimans 2022, arXiv:2207.12598). Each guided step costs 2 network evaluations.

# %% [markdown] lang=bg
# # 5. Отвъд основите: насочване, латентно пространство, звук, малко стъпки
#
# Четири идеи, които направиха дифузионните модели практични, всяка изпълнена върху малки данни: насочване без
# класификатор (classifier-free guidance, насочване на резултатите към клас), латентна дифузия (дифузия в
# компактното пространство на автоенкодер), звук (същият процес върху изговорени цифри) и генериране с малко
# стъпки чрез дестилация.
#
# ## Насочване без класификатор
#
# Една мрежа научава и условния денойзър D(x_t, t, y), и безусловния D(x_t, t, null): по време на обучението
# 10% от етикетите се заменят с празен етикет. При семплиране двата се екстраполират,
#
# $$D_w = D(x_t, t, \varnothing) + w\,\big(D(x_t, t, y) - D(x_t, t, \varnothing)\big),$$
#
# където w = 1 е самият условен модел, w = 0 безусловният, а w > 1 тласка към това, което прави класа този
# клас (Ho & Salimans 2022, arXiv:2207.12598). Всяка насочвана стъпка струва 2 изчисления на мрежата.

# %%
import shutil
import time

import torch

import difflab as dl
from difflab.generators import DiffusionGenerator
from difflab.guidance import guided_denoiser
from difflab.metrics import load_classifier
from difflab.metrics.evaluate import evaluate_samples
from difflab.viz import panels_figure

TRAIN, HELD = "0:1500", "1500:1797"
steps = 300 if QUICK else 6000
small = ["--channels", "16,32", "--layers-per-block", 1]
for p in ("cond", "classifier"):
    shutil.rmtree(WORK / p, ignore_errors=True)
cli("train", "--data", "digits", "--index-range", TRAIN, "--conditional", "--steps", steps, *small,
    "--sample-every", 0, "--seed", 0, "--no-progress", "--out", WORK / "cond")
cli("train-classifier", "--data", "digits", "--index-range", TRAIN, "--steps", 200 if QUICK else 2000, "--seed", 1,
    "--no-progress", "--out", WORK / "classifier")
clf = load_classifier(WORK / "classifier")
cond_model = dl.load(WORK / "cond")
labels = torch.arange(200) % 10
columns = {}
for w in (0.0, 1.0, 3.0):
    res = dl.sample(guided_denoiser(cond_model, w), n=200, sampler="ddim", steps=20, seed=0, progress=False,
                    cond={"label": labels})
    acc = float((clf.probabilities(res.x).argmax(1) == labels).double().mean())
    print(f"w = {w:g}: {res.nfe} NFE a sample, the classifier sees the requested digit in {acc:.0%}")
    record(f"cfg_acc_w{w:g}", acc)
    columns[f"w = {w:g}"] = res.x[:10]
panels_figure(columns, figure("cfg.png"), title="classifier-free guidance: rows are the digits 0-9",
              row_labels=[str(k) for k in range(10)])

# %% [markdown]
# The classifier recognises the requested digit in {{cfg_acc_w0:.0%}} of the unguided samples (w = 0: the label
# is ignored, so about 10% by chance), {{cfg_acc_w1:.0%}} at w = 1 and {{cfg_acc_w3:.0%}} at w = 3, for twice the
# network evaluations of w = 1 (the conditional and the unconditional prediction at every step). The price at
# large w is diversity: the samples of a class become alike and over-saturated. On the command line:
# `difflab sample RUN --class all --guidance 3`.
#
# ## Latent diffusion: the same process in an autoencoder's space
#
# Pixels carry much that is cheap to describe. A KL-regularised autoencoder compresses x into z = E(x), the
# diffusion model learns the distribution of z, and samples are decoded, x = Dec(z) (Rombach et al. 2022,
# arXiv:2112.10752). The latents are scaled to unit variance so that the schedule means the same there. The
# gain is in cost: the network works on fewer positions.

# %% [markdown] lang=bg
# Класификаторът разпознава поисканата цифра в {{cfg_acc_w0:.0%}} от ненасочените резултати (w = 0: етикетът се
# пренебрегва, затова около 10% случайно), в {{cfg_acc_w1:.0%}} при w = 1 и в {{cfg_acc_w3:.0%}} при w = 3, срещу
# двойно повече изчисления на мрежата от w = 1 (условното и безусловното предсказание на всяка стъпка). Цената
# при голямо w е разнообразието: резултатите от един клас си приличат и са пренаситени. В командния ред:
# `difflab sample RUN --class all --guidance 3`.
#
# ## Латентна дифузия: същият процес в пространството на автоенкодер
#
# Пикселите носят много, което е евтино за описание. KL-регуляризиран автоенкодер свива x в z = E(x),
# дифузионният модел научава разпределението на z, а резултатите се декодират, x = Dec(z) (Rombach et al.
# 2022, arXiv:2112.10752). Латентите се мащабират до единична дисперсия, за да означава графикът същото и там.
# Печалбата е в цената: мрежата работи върху по-малко позиции.

# %%
import json

for p in ("ae", "latent", "pixel"):
    shutil.rmtree(WORK / p, ignore_errors=True)
cli("train-autoencoder", "--data", "digits", "--index-range", TRAIN, "--heldout-range", HELD, "--factor", 2,
    "--steps", 200 if QUICK else 4000, "--sample-every", 0, "--seed", 0, "--no-progress", "--out", WORK / "ae")
cli("train", "--data", "digits", "--index-range", TRAIN, "--steps", steps, *small, "--sample-every", 0,
    "--seed", 0, "--no-progress", "--out", WORK / "pixel")
cli("train", "--data", "digits", "--index-range", TRAIN, "--latent", WORK / "ae", "--steps", steps, *small,
    "--sample-every", 0, "--seed", 0, "--no-progress", "--out", WORK / "latent")
train_x = dl.load_dataset("digits", index_range=TRAIN).x
held_x = dl.load_dataset("digits", index_range=HELD).x
cost = {}
for name in ("pixel", "latent"):
    den = dl.load(WORK / name)
    log = [json.loads(line) for line in (WORK / name / "log.jsonl").read_text().splitlines()]
    its = [r["it_s"] for r in log if "it_s" in r][-1]
    gen = DiffusionGenerator(den, "ddim", 20)
    start = time.perf_counter()
    x = gen.sample(300, seed=0)
    per_image = (time.perf_counter() - start) / 300
    fd = evaluate_samples(x, train_x, held_x, clf)["fd_samples"]
    cost[name] = (tuple(den.data_shape), its, per_image, fd)
    print(f"{name:6s}: diffuses {tuple(den.data_shape)} = {torch.Size(den.data_shape).numel()} numbers, "
          f"training {its:.1f} it/s, sampling {per_image * 1e3:.2f} ms/image (20 DDIM steps, decoding included), "
          f"FD {fd:.2f}")
    record(f"latent_{name}_numbers", torch.Size(den.data_shape).numel())
    record(f"latent_{name}_its", its)
    record(f"latent_{name}_ms", per_image * 1e3)
    record(f"latent_{name}_fd", fd)
    columns[name] = x[:16]
dl.save_grid(DiffusionGenerator(dl.load(WORK / "latent"), "ddim", 20).sample(64, seed=0), figure("latent_samples.png"))

# %% [markdown]
# The pixel model diffuses {{latent_pixel_numbers}} numbers per image, the latent model {{latent_latent_numbers}}.
# Measured here: training at {{latent_pixel_its:.1f}} against {{latent_latent_its:.1f}} steps a second, sampling
# at {{latent_pixel_ms:.2f}} against {{latent_latent_ms:.2f}} ms an image (decoder included), FD
# {{latent_pixel_fd:.2f}} against {{latent_latent_fd:.2f}}. The saving should grow with the image (measured here only on 8x8; the
# arithmetic): on MNIST with f = 4 the latent is 4x8x8 = 256 numbers
# instead of 784 pixels, and for 512x512 colour images Stable Diffusion's f = 8 latent is 48 times smaller.
# Ignoring the latent space is the pitfall of paying pixel prices for detail an autoencoder carries cheaply; the
# other side is that the autoencoder bounds the quality (its reconstruction error is the floor).
# `difflab latent-figures` shows what the latent space holds (README "Latent space").

# %% [markdown] lang=bg
# Пикселният модел дифузира {{latent_pixel_numbers}} числа на изображение, латентният {{latent_latent_numbers}}.
# Измерено тук: обучение с {{latent_pixel_its:.1f}} срещу {{latent_latent_its:.1f}} стъпки в секунда,
# семплиране с {{latent_pixel_ms:.2f}} срещу {{latent_latent_ms:.2f}} ms на изображение (с декодирането), FD
# {{latent_pixel_fd:.2f}} срещу {{latent_latent_fd:.2f}}. Спестяването би трябвало да расте с изображението (тук е измерено само
# при 8x8; аритметиката): при MNIST с f = 4 латентът е 4x8x8 = 256 числа
# вместо 784 пиксела, а при цветни изображения 512x512 латентът с f = 8 на Stable Diffusion е 48 пъти по-малък.
# Пренебрегването на латентното пространство е капанът да плащаш пикселни цени за детайл, който автоенкодерът
# носи евтино; другата страна е, че автоенкодерът ограничава качеството (грешката му при реконструкция е долната
# граница). `difflab latent-figures` показва какво съдържа латентното пространство (раздел "Latent space" на README).

# %% [markdown]
# ## Few-step generation: progressive distillation
#
# A deterministic sampler maps noise to a sample through the probability-flow ODE; a student can learn to take
# two of the teacher's steps in one. Each round halves the steps (Salimans & Ho 2022, arXiv:2202.00512): here
# 4 DDIM steps of the teacher become 2, then 1.

# %% [markdown] lang=bg
# ## Генериране с малко стъпки: прогресивна дестилация
#
# Детерминистичният семплер изобразява шума в резултат чрез обикновеното диференциално уравнение на
# вероятностния поток; ученик може да се научи да прави две стъпки на учителя с една. Всеки кръг намалява
# стъпките наполовина (Salimans & Ho 2022, arXiv:2202.00512): тук 4 стъпки DDIM на учителя стават 2, после 1.

# %%
shutil.rmtree(WORK / "student", ignore_errors=True)
cli("distill", WORK / "pixel", "--method", "progressive", "--rounds", 2, "--data", "digits", "--index-range", TRAIN,
    "--steps", 300 if QUICK else 4000, "--seed", 0, "--no-progress", "--out", WORK / "student")
teacher, student = dl.load(WORK / "pixel"), dl.load(WORK / "student")
few = {}
for name, den, k in (("teacher, 1 step", teacher, 1), ("student, 1 step", student, 1),
                     ("teacher, 20 steps", teacher, 20)):
    x = dl.sample(den, n=300, sampler="ddim", steps=k, seed=0, progress=False).x
    few[name] = evaluate_samples(x, train_x, held_x, clf)["fd_samples"]
    print(f"{name:18s}: FD {few[name]:.2f}")
    columns[name] = x[:10]
record("distill_teacher1_fd", few["teacher, 1 step"])
record("distill_student1_fd", few["student, 1 step"])
record("distill_teacher20_fd", few["teacher, 20 steps"])
panels_figure({k: columns[k] for k in few}, figure("distill.png"), title="DDIM from the same noise")

# %% [markdown]
# With one step the teacher's DDIM reaches FD {{distill_teacher1_fd:.2f}}, the distilled student
# {{distill_student1_fd:.2f}}; the teacher with 20 steps {{distill_teacher20_fd:.2f}}. At the quick setting the
# student has 300 training steps over its two rounds: too few, it closes none of the gap (it is no better than the
# one-step teacher); the full budget gives it
# 4000 (`difflab distill RUN --method progressive --rounds 2 --steps 4000`). Consistency models and
# reflow are the other routes (`difflab distill --method consistency|consistency_training|reflow`, README
# "Few-step generation").
#
# ## Beyond images: spoken digits
#
# Nothing in the process is specific to images. The Free Spoken Digit Dataset (`../shared/data/fsdd`) is turned
# into log-mel spectrograms, (1, 64, 64) images of sound; the same UNet, trainer and samplers run on them, and
# Griffin-Lim turns generated spectrograms back into waveforms. At the quick setting the model is trained for a
# few steps on 100 recordings: the pipeline runs end to end and writes WAV files, but the sound is noise; the
# full budget (`--minutes 30` on all recordings, README "Spoken digits") produces recognisable digits.

# %% [markdown] lang=bg
# С една стъпка DDIM на учителя достига FD {{distill_teacher1_fd:.2f}}, дестилираният ученик
# {{distill_student1_fd:.2f}}; учителят с 20 стъпки {{distill_teacher20_fd:.2f}}. С бързата настройка ученикът
# има 300 стъпки обучение в двата си кръга: твърде малко, той не намалява разликата (не е по-добър от учителя с
# една стъпка); пълният бюджет му дава
# 4000 (`difflab distill RUN --method progressive --rounds 2 --steps 4000`). Моделите на консистентност и
# reflow са другите пътища (`difflab distill --method consistency|consistency_training|reflow`, раздел
# "Few-step generation" на README).
#
# ## Отвъд изображенията: изговорени цифри
#
# Нищо в процеса не е специфично за изображенията. Free Spoken Digit Dataset (`../shared/data/fsdd`) се
# превръща в лог-мел спектрограми, изображения (1, 64, 64) на звука; същият UNet, същото обучение и същите
# семплери работят върху тях, а алгоритъмът на Griffin-Lim връща генерираните спектрограми във вълнови форми. С
# бързата настройка моделът се обучава няколко стъпки върху 100 записа: веригата работи от край до край и
# записва WAV файлове, но звукът е шум; пълният бюджет (`--minutes 30` върху всички записи, раздел "Spoken
# digits" на README) дава разпознаваеми цифри.

# %%
fsdd = DATA / "fsdd"
if (fsdd / "recordings").is_dir():
    shutil.rmtree(WORK / "fsdd", ignore_errors=True)
    budget = (["--index-range", "0:100", "--steps", 20, "--batch-size", 8, "--channels", "8,16",
               "--attention-levels", 1] if QUICK
              else ["--minutes", 30])
    cli("train", "--data", "fsdd", "--data-dir", fsdd, "--conditional", *budget, "--sample-every", 0, "--seed", 0,
        "--no-progress", "--out", WORK / "fsdd")
    cli("sample", WORK / "fsdd", "--class", "all", "--n", 1, "--sampler", "dpmpp_2m",
        "--steps", 10 if QUICK else 25, "--no-progress", "--out", WORK / "fsdd_samples")
    shutil.copy(WORK / "fsdd_samples" / f"dpmpp_2m_{10 if QUICK else 25}_seed0_classall.png",
                figure("fsdd_samples.png"))
else:
    print(f"audio skipped: {fsdd}/recordings is not present (see ../shared/data/README.md)")
