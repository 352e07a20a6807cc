import gzip

import numpy as np
import pytest
from PIL import Image

from difflab.data import load_dataset, load_image_folder, load_mnist, read_idx
from difflab.errors import DifflabError


def test_mnist_real_file(mnist_dir):
    d = load_mnist(mnist_dir)
    assert d.x.shape == (8000, 1, 28, 28) and d.x.min() >= -1 and d.x.max() <= 1
    assert d.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # as stated in shared/data/README
    held = load_mnist(mnist_dir, index_range="8000:10000")
    assert len(held) == 2000


def test_idx_errors(tmp_path):
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(bad, "wb") as f:
        f.write(header + b"\0" * 100)
    with pytest.raises(DifflabError, match="truncated or corrupt"):
        read_idx(bad)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DifflabError, match="cannot read"):
        read_idx(bad)
    with pytest.raises(DifflabError, match="MNIST folder not found"):
        load_mnist(tmp_path / "missing")
    with pytest.raises(DifflabError, match="no MNIST images"):
        load_mnist(tmp_path / ".." / tmp_path.name / "..")
    with pytest.raises(DifflabError, match="outside the 10 items"):
        from difflab.data import parse_range
        parse_range("5:20", 10)


def test_image_folder(tmp_path):
    for i in range(3):
        Image.fromarray((np.ones((16, 16)) * 80 * i).astype(np.uint8)).save(tmp_path / f"{i}.png")
    d = load_image_folder(tmp_path)
    assert d.x.shape == (3, 1, 16, 16)
    assert np.isclose(d.x[1].mean().item(), 80 / 127.5 - 1, atol=1e-6)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(DifflabError, match="pass a size"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=8).x.shape == (4, 3, 8, 8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DifflabError, match="cannot read image"):
        load_image_folder(tmp_path, size=8)


def test_digits():
    d = load_dataset("digits")
    assert d.x.shape == (1797, 1, 8, 8) and d.x.min() == -1 and d.x.max() == 1
    with pytest.raises(DifflabError, match="unknown data set"):
        load_dataset("cifar")
