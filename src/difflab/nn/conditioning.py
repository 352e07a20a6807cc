r"""Class conditioning of a network: a learned embedding of the label added to the time embedding
(Dhariwal & Nichol, arXiv:2105.05233, sec. 4; as diffusers' ``class_embedding``).

Index ``num_classes`` is the learned *null* label: training replaces a fraction of the labels with it
(label dropout), so the same network also gives the unconditional model that classifier-free guidance
needs (Ho & Salimans, arXiv:2207.12598).  ``label=None`` means the null label for every sample.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import DifflabError

__all__ = ["LabelEmbedding", "batch_labels", "check_labels", "embed_label"]


def check_labels(label: Tensor, num_classes: int, allow_null: bool = True) -> Tensor:
    """``label`` as an int64 tensor, refusing (one line) a model without classes and labels it does not have."""
    if num_classes <= 0:
        raise DifflabError("this model is unconditional (it has no classes); it takes no class label")
    label = torch.as_tensor(label)
    if label.dtype.is_floating_point or label.dtype == torch.bool:
        raise DifflabError(f"class labels must be integers, got {label.dtype}")
    top = num_classes if allow_null else num_classes - 1
    if label.numel() and (int(label.min()) < 0 or int(label.max()) > top):
        bad = int(label.min()) if int(label.min()) < 0 else int(label.max())
        raise DifflabError(f"class {bad} is not one of the model's classes 0..{num_classes - 1}")
    return label.long()


def batch_labels(label: Tensor | None, num_classes: int, batch: int, device: torch.device) -> Tensor:
    """One checked int64 label per sample on ``device``; ``None`` is the null label ``num_classes`` for all."""
    if label is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    label = check_labels(label, num_classes).to(device)
    if label.shape != (batch,):
        raise DifflabError(f"expected one class label per sample ({batch}), got shape {tuple(label.shape)}")
    return label


class LabelEmbedding(nn.Module):
    """``num_classes + 1`` learned vectors of size ``dim`` (the last one is the null label)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise DifflabError(f"a class-conditional network needs num_classes >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)

    def forward(self, label: Tensor | None, batch: int) -> Tensor:
        return self.embed(batch_labels(label, self.num_classes, batch, self.embed.weight.device))


def embed_label(module: LabelEmbedding | None, label: Tensor | None, batch: int) -> Tensor | None:
    """The label embedding of a network that may be unconditional (``module`` None): None when there is no
    label, and a one-line error when a label is given to a network without classes."""
    if module is None:
        if label is not None:
            check_labels(label, 0)
        return None
    return module(label, batch)
