r"""The Inception-v3 network of FID (Heusel et al. 2017), with the 2015-12-05 TensorFlow weights.

FID is only comparable across papers when it uses this exact network: the TensorFlow graph of
2015-12-05 ported to PyTorch by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``, 91 MB; the same
tensors are shipped by torch-fidelity as ``weights-inception-2015-12-05-6726825d.pth``).  That graph
differs from torchvision's ImageNet Inception-v3 in three places, reproduced here: average pools in
the A, C and first E blocks exclude the padding from the mean, the last E block pools with max
instead of average, and the classifier has 1008 outputs.  Features are the 2048-d global average
pool ("pool3"); images go in as RGB in [0, 1], are resized to 299x299 (bilinear, no corner
alignment, as pytorch-fid) and mapped to [-1, 1].  Grey images are repeated over three channels.

Nothing is downloaded: :func:`find_inception_weights` looks at the path given, ``$DIFFLAB_INCEPTION``
and the torch hub cache of those tools (``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``), and otherwise says which file to fetch and where to put it.
The file is a plain state dict, read with ``torch.load(weights_only=True)``; a file that carries the
published name is checked against the SHA-256 prefix in that name.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DifflabError
from ..data.pixels import to_unit
from ..io import sha256_file
from .classifier import ModuleExtractor

__all__ = ["InceptionV3FID", "find_inception_weights", "load_inception", "FID_WEIGHTS_NAMES", "FID_WEIGHTS_URL"]

FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
_SHA_PREFIX = "6726825d"


class Conv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU; the unit of every Inception block."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """3x3 average pool, stride 1, padding 1, padding excluded from the mean (TF 'SAME' pooling)."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class BlockA(nn.Module):  # 35x35: 1x1 | 5x5 | double 3x3 | pool-proj
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class BlockB(nn.Module):  # 35 -> 17 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class BlockC(nn.Module):  # 17x17: factorised 7x7 convolutions
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = Conv(cin, c7, 1), Conv(c7, c7, **row), Conv(c7, 192, **col)
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = Conv(c7, c7, **col), Conv(c7, c7, **row)
        self.branch7x7dbl_4, self.branch7x7dbl_5 = Conv(c7, c7, **col), Conv(c7, 192, **row)
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):  # 17 -> 8 reduction
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b, F.max_pool2d(x, 3, 2)], 1)


class BlockE(nn.Module):  # 8x8: split 1x3 / 3x1 branches; ``max_pool`` in the last block of the FID graph
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, (1, 3), padding=(0, 1)), Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class InceptionV3FID(nn.Module):
    """FID Inception-v3: ``features(x)`` -> (N, 2048) pool3, ``forward(x)`` -> (N, 1008) logits.

    Module names follow the published state dict, so the weights file loads name by name."""

    feature_dim = 2048

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, max_pool=False), BlockE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)
        self.eval()

    @staticmethod
    def prepare(x: Tensor) -> Tensor:
        """Images (uint8 [0, 255] or float [-1, 1], 1 or 3 channels) -> the network's input, 3x299x299 in [-1, 1]."""
        x = (to_unit(x) + 1) / 2  # [0, 1], as pytorch-fid's loaders give
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise DifflabError(f"the Inception network takes 1 or 3 channels, got {x.shape[1]}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def features(self, x: Tensor) -> Tensor:
        x = self.prepare(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            x = getattr(self, name)(x)
        x = F.max_pool2d(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))

    def extractor(self, batch_size: int = 50, progress: bool = False) -> ModuleExtractor:
        return ModuleExtractor(self.features, self.feature_dim, batch_size, progress=progress, name="inception")

    @torch.no_grad()
    def probabilities(self, images: Tensor, batch_size: int = 50) -> Tensor:
        """Softmax over the 1008 logits (the Inception Score's p(y|x), as in Salimans et al.'s code)."""
        return torch.cat([F.softmax(self(images[i:i + batch_size]), -1).double()
                          for i in range(0, images.shape[0], batch_size)])


def _hub_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(torch_home) / "hub" / "checkpoints"


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The FID weights file: ``path``, else ``$DIFFLAB_INCEPTION``, else the torch hub cache."""
    if path is not None:
        p = Path(path)
        if p.is_dir():
            for name in FID_WEIGHTS_NAMES:
                if (p / name).is_file():
                    return p / name
            raise DifflabError(f"no FID Inception weights ({' or '.join(FID_WEIGHTS_NAMES)}) in {p}")
        if not p.is_file():
            raise DifflabError(f"FID Inception weights not found: {p}")
        return p
    if os.environ.get("DIFFLAB_INCEPTION"):
        return find_inception_weights(os.environ["DIFFLAB_INCEPTION"])
    for name in FID_WEIGHTS_NAMES:
        if (_hub_dir() / name).is_file():
            return _hub_dir() / name
    raise DifflabError(f"the FID Inception weights are not on this machine: download {FID_WEIGHTS_URL} "
                       f"(91 MB) into {_hub_dir()} or pass its path (--inception PATH, $DIFFLAB_INCEPTION)")


def load_inception(path: str | os.PathLike | None = None) -> InceptionV3FID:
    """Build :class:`InceptionV3FID` and load the weights file (see :func:`find_inception_weights`)."""
    p = find_inception_weights(path)
    if p.name in FID_WEIGHTS_NAMES:
        if not sha256_file(p).startswith(_SHA_PREFIX):
            raise DifflabError(f"{p} is named like the FID weights but its SHA-256 does not start with "
                               f"{_SHA_PREFIX}: a damaged or different file; download {FID_WEIGHTS_URL} again")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DifflabError(f"cannot read {p} as a PyTorch state dict: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise DifflabError(f"{p} does not hold a state dict")
    net = InceptionV3FID()
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise DifflabError(f"{p} is not the FID Inception-v3 state dict: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]} ({len(missing)} / {len(unexpected)} in all)")
    bad = [k for k in state if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise DifflabError(f"{p}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                           f"the FID Inception-v3 needs {tuple(own[bad[0]].shape)}")
    net.load_state_dict(state, strict=False)
    return net.eval()
