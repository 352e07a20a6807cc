"""Feature extractors behind one interface, and a small CNN classifier difflab trains per data set.

An extractor is called on images (uint8 in [0, 255] or float in [-1, 1], ``(N, C, H, W)``) and returns
float64 features ``(N, dim)``; it runs in batches, in eval mode, so features do not depend on the
batch size.  :class:`ModuleExtractor` adapts any torch module; :class:`SmallCNN` is the classifier
trained by ``difflab train-classifier`` whose penultimate layer gives features (for FD/KID/PR on
MNIST-like data) and whose softmax gives class probabilities (Inception Score, class balance).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.pixels import to_unit
from ..denoisers.denoiser import as_time
from ..errors import DifflabError
from ..io import check_format, load_bundle_tensors, read_json, save_bundle
from ..nn.unet import timestep_embedding
from ..process.forward import q_sample
from ..process.schedules import schedule_from_config

__all__ = ["ModuleExtractor", "SmallCNN", "CLASSIFIERS", "train_classifier", "save_classifier", "load_classifier",
           "classifier_folder"]

FORMAT = "difflab-classifier"


class ModuleExtractor:
    """Features from any module ``fn(x in [-1, 1]) -> (N, ...)``, flattened, in batches, float64.
    ``ndim``: the dimensions of its input (4: images ``(N, C, H, W)``; 3: audio ``(N, 1, L)``)."""

    def __init__(self, module: nn.Module | Callable[[Tensor], Tensor], dim: int | None = None, batch_size: int = 256,
                 progress: bool = False, name: str = "module", ndim: int = 4):
        self.module, self.dim, self.batch_size, self.progress, self.name = module, dim, batch_size, progress, name
        self.ndim = ndim

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != self.ndim:
            what = "images (N, C, H, W)" if self.ndim == 4 else f"inputs of {self.ndim} dimensions"
            raise DifflabError(f"feature extraction takes {what}, got shape {tuple(images.shape)}")
        if isinstance(self.module, nn.Module):
            self.module.eval()
        out = []
        starts = range(0, images.shape[0], self.batch_size)
        if self.progress:
            from ..progress import progress_bar
            starts = progress_bar(starts, desc=f"features ({self.name})", unit="batch", leave=False)
        for i in starts:
            out.append(self.module(to_unit(images[i:i + self.batch_size])).flatten(1).double())
        feats = torch.cat(out)
        if self.dim is not None and feats.shape[1] != self.dim:
            raise DifflabError(f"extractor {self.name} gave {feats.shape[1]} features, expected {self.dim}")
        return feats


class SmallCNN(nn.Module):
    r"""conv(32)-conv(32)-pool-conv(64)-conv(64)-pool-global average-fc(feature_dim)-fc(classes).

    With a ``schedule`` it is a *noise-aware* classifier of :math:`p(y \mid x_t)` for classifier guidance
    (Dhariwal & Nichol, arXiv:2105.05233): the sinusoidal embedding of the schedule's timestep of t goes
    through an MLP and is added, per channel, after each convolution; ``forward(x_t, t)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128, schedule=None):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "feature_dim": feature_dim,
                       "schedule": None if schedule is None else schedule.config()}
        self.schedule = schedule
        c = [in_channels, 32, 32, 64, 64]
        self.convs = nn.ModuleList(nn.Conv2d(c[i], c[i + 1], 3, padding=1) for i in range(4))
        self.fc = nn.Linear(64, feature_dim)
        self.out = nn.Linear(feature_dim, num_classes)
        if schedule is not None:
            self.time_mlp = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 128))
            self.time_proj = nn.ModuleList(nn.Linear(128, c[i + 1]) for i in range(4))

    def features(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        temb = None
        if self.schedule is not None:
            if t is None:
                raise DifflabError("a noise-aware classifier needs the time t of its input")
            steps = self.schedule.timestep(as_time(t, x).to(torch.float64)).to(torch.float32)
            temb = F.silu(self.time_mlp(timestep_embedding(steps, 64).to(x.dtype)))
        for i, conv in enumerate(self.convs):
            h = conv(x)
            if temb is not None:
                h = h + self.time_proj[i](temb)[:, :, None, None]
            x = F.silu(h)
            if i % 2 == 1 and min(x.shape[-2:]) >= 2:
                x = F.max_pool2d(x, 2)
        return F.silu(self.fc(x.mean((2, 3))))

    def forward(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        return self.out(self.features(x, t))

    def extractor(self, batch_size: int = 256, progress: bool = False) -> ModuleExtractor:
        return ModuleExtractor(self.features, self.config["feature_dim"], batch_size, progress, name="classifier")

    @torch.no_grad()
    def probabilities(self, images: Tensor, batch_size: int = 256) -> Tensor:
        self.eval()
        return torch.cat([F.softmax(self(to_unit(images[i:i + batch_size])), -1).double()
                          for i in range(0, images.shape[0], batch_size)])


# classifier config "type" -> builder from the config (other modules add theirs: metrics.audio)
CLASSIFIERS: dict[str, Callable[[dict], nn.Module]] = {
    "small_cnn": lambda cfg: SmallCNN(cfg["in_channels"], cfg["num_classes"], cfg["feature_dim"],
                                      schedule=None if cfg.get("schedule") is None
                                      else schedule_from_config(cfg["schedule"]))}


def train_classifier(x: Tensor, labels: Tensor, steps: int = 1500, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = True, schedule=None, net: nn.Module | None = None) -> nn.Module:
    r"""Train ``net`` (default :class:`SmallCNN`) on images in [-1, 1] with small random shifts (AdamW, cosine
    LR).  With a ``schedule`` the images are first noised to :math:`x_t = \alpha_t x_0 + \sigma_t\epsilon` at t
    from the schedule's training proposal, and the classifier learns :math:`p(y \mid x_t)`."""
    if labels is None:
        raise DifflabError("training a classifier needs labelled data")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SmallCNN(x.shape[1], int(labels.max()) + 1, schedule=schedule) if net is None else net
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    it = range(steps)
    if progress:
        from ..progress import progress_bar
        it = progress_bar(it, desc="classifier", unit="step")
    net.train()
    for step in it:
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        xb = x[idx]
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        xb = torch.roll(xb, shifts=(dx, dy), dims=(2, 3))
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        t = None
        if schedule is not None:
            t = schedule.sample_t(batch_size, generator=g)
            xb = q_sample(schedule, xb, t, eps=torch.randn(xb.shape, generator=g))
        loss = F.cross_entropy(net(xb, t), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def save_classifier(net: nn.Module, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` (format, architecture, SHA-256 of the
    weights, ``info``) into the folder ``path``, each atomically."""
    path = Path(path)
    save_bundle(path, "classifier.json", {"format": FORMAT, "format_version": 1, **net.config, "info": info or {}},
                {"classifier.safetensors": net.state_dict()})
    return path


def load_classifier(path: str | os.PathLike) -> nn.Module:
    """The classifier in folder ``path``; a missing, corrupt or foreign file is refused by name."""
    path = Path(path)
    cfg_file = path / "classifier.json"
    if not cfg_file.is_file():
        raise DifflabError(f"no classifier in {path} (expected classifier.json and classifier.safetensors)")
    cfg = read_json(cfg_file, "classifier config")
    check_format(cfg, FORMAT, (1,), cfg_file)
    try:
        kind = cfg.get("type", "small_cnn")
        if kind not in CLASSIFIERS:
            raise DifflabError(f"classifier config {cfg_file} names an unknown type {kind!r}")
        net = CLASSIFIERS[kind](cfg)
    except KeyError as e:
        raise DifflabError(f"classifier config {cfg_file} is corrupt: it lacks {e}") from None
    state = load_bundle_tensors(path, cfg, "classifier.safetensors", what="classifier weights")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise DifflabError(f"classifier weights in {path} do not fit classifier.json: {str(e).splitlines()[0]}") from None
    return net.eval()


def classifier_folder(path: str) -> str:
    """An argparse ``type`` for a ``difflab train-classifier`` folder (used by the benchmark scripts): the
    classifier is loaded once while the arguments are parsed, so a wrong path fails in one line at once, not
    after an hour of training."""
    import argparse
    try:
        load_classifier(path)
    except DifflabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path
