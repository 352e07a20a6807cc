import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
FSDD_DIR = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is not present")
    return MNIST_DIR


@pytest.fixture
def tiny_unet_kwargs() -> dict:
    return dict(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), groups=4)


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    if not (FSDD_DIR / "0_theo_0.wav").exists():
        pytest.skip("../shared/data/fsdd/recordings is not present")
    return FSDD_DIR
