"""Data sets yielding clean x0."""
from .images import (DATASETS, ImageData, from_uint8, load_dataset, load_digits, load_image_files, load_image_folder,
                     load_mnist, parse_range, read_idx, to_uint8)
from .toy2d import TOY2D, load_toy2d, sample_toy2d

__all__ = ["DATASETS", "ImageData", "from_uint8", "load_dataset", "load_digits", "load_image_files", "load_image_folder",
           "load_mnist", "parse_range", "read_idx", "to_uint8", "TOY2D", "load_toy2d", "sample_toy2d"]
