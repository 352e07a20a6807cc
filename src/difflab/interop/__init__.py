"""Interoperability with other formats (diffusers pipelines in and out)."""
from .diffusers import export_diffusers, find_in_hf_cache, load_pretrained, unet_config_from_diffusers

__all__ = ["export_diffusers", "find_in_hf_cache", "load_pretrained", "unet_config_from_diffusers"]
