"""Safe, self-describing files: atomic writes, SHA-256 checks, versioned JSON and safetensors.

Every file difflab writes goes through :mod:`.files`: checkpoints, classifiers, cached features, diffusers
exports, sweep records.  Nothing is ever unpickled.
"""
from .files import (atomic_write_bytes, cache_dir, atomic_write_json, atomic_write_text, check_format, fsync_dir,
                    load_bundle_tensors, read_json, save_bundle, save_tensors, sha256_bytes, sha256_file,
                    load_tensors)

__all__ = ["atomic_write_bytes", "cache_dir", "atomic_write_json", "atomic_write_text", "check_format", "fsync_dir",
           "load_bundle_tensors", "read_json", "save_bundle", "save_tensors", "sha256_bytes", "sha256_file",
           "load_tensors"]
