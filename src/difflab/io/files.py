"""Atomic writes, SHA-256 checks, and versioned JSON + safetensors bundles.

* A file is written to a temporary name in the same folder, flushed to disk (``fsync``) and renamed
  into place with ``os.replace``: a reader sees the old file or the new one, never half of one.
* A *bundle* is a JSON config with a ``format`` name and ``format_version``, beside safetensors
  files whose SHA-256 the config records (``"files": {name: sha256}``).  The weights are written
  first and the config last, so a config never names a file that is not complete; a truncated or
  replaced weights file is refused by name on loading.
* Tensors are only ever read from safetensors (no pickle); user errors (missing, corrupt, foreign
  files) are :class:`~difflab.errors.DifflabError` with the path in the message.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import DifflabError

__all__ = ["cache_dir", "sha256_file", "sha256_bytes", "fsync_dir", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "save_tensors", "load_tensors", "read_json", "check_format", "save_bundle",
           "load_bundle_tensors"]

PathLike = str | os.PathLike


def cache_dir(*parts: str) -> Path:
    """difflab's cache folder, ``$DIFFLAB_CACHE`` (default ``~/.cache/difflab``), joined with ``parts``."""
    return Path(os.environ.get("DIFFLAB_CACHE", Path.home() / ".cache" / "difflab")).joinpath(*parts)


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(parts: Iterable[bytes | str | torch.Tensor | np.ndarray]) -> str:
    """Hex SHA-256 of a sequence of byte strings, strings (UTF-8), arrays and tensors (their raw bytes)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        elif isinstance(p, torch.Tensor):
            p = p.detach().cpu().contiguous().numpy().tobytes()
        elif isinstance(p, np.ndarray):
            p = np.ascontiguousarray(p).tobytes()
        h.update(p)
    return h.hexdigest()


def fsync_dir(path: PathLike) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file, ``fsync`` and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1))


def save_tensors(tensors: dict[str, torch.Tensor], path: PathLike) -> str:
    """Write a safetensors file atomically; returns its SHA-256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        _replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def load_tensors(path: PathLike, sha256: str | None = None, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing a missing one, one whose SHA-256 differs from ``sha256`` and
    one safetensors cannot parse."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"{what} missing: {path}")
    if sha256 is not None and sha256_file(path) != sha256:
        raise DifflabError(f"{what} {path} is corrupt or truncated (its SHA-256 does not match the one recorded "
                           f"beside it)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types (names differ across versions)
        raise DifflabError(f"{what} {path} is corrupt or truncated: {str(e).splitlines()[0]}") from None


def read_json(path: PathLike, what: str = "config") -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unparsable or non-object file is a one-line error."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise DifflabError(f"{what} missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DifflabError(f"{what} {path} is corrupt: {e}") from None
    if not isinstance(obj, dict):
        raise DifflabError(f"{what} {path} does not hold a JSON object")
    return obj


def check_format(cfg: dict[str, Any], fmt: str, versions: Iterable[int], path: PathLike) -> int:
    """Check a bundle config's ``format`` and ``format_version``; returns the version."""
    if cfg.get("format") != fmt:
        raise DifflabError(f"{path} is not a {fmt} file (format {cfg.get('format')!r})")
    versions = tuple(versions)
    v = cfg.get("format_version")
    if v not in versions:
        raise DifflabError(f"{path} has format version {v}; this difflab reads version "
                           f"{' or '.join(map(str, versions))}")
    return int(v)


def save_bundle(folder: PathLike, config_name: str, config: dict[str, Any],
                files: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write each ``files[name]`` as safetensors, then ``config_name`` (JSON) with their SHA-256 under
    ``"files"``; all atomically.  Returns the config's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    digests = {name: save_tensors(tensors, folder / name) for name, tensors in files.items()}
    return atomic_write_json(folder / config_name, {**config, "files": digests})


def load_bundle_tensors(folder: PathLike, config: dict[str, Any], name: str,
                        what: str = "weights file") -> dict[str, torch.Tensor]:
    """The tensors of file ``name`` of a bundle, checked against the SHA-256 its config records (files
    written before checksums were recorded are read unchecked)."""
    return load_tensors(Path(folder) / name, config.get("files", {}).get(name), what)
