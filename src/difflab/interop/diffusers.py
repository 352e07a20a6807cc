"""diffusers pipelines in and out, without importing diffusers.

In: a folder with ``model_index.json``, ``unet/config.json`` + ``diffusion_pytorch_model.safetensors``
(or ``.bin``, read with ``torch.load(weights_only=True)``) and ``scheduler/scheduler_config.json``,
or a Hugging Face cache entry (``models--ORG--NAME/snapshots/HASH``) found on disk.  The
``UNet2DModel`` becomes a difflab :class:`~difflab.nn.UNet` (the same topology, so the weights map
name by name) and the scheduler config becomes a discrete schedule, a parameterisation and a
clipping range; then every difflab sampler runs on it.

Out: :func:`export_diffusers` writes a difflab UNet so that ``DDPMPipeline.from_pretrained``
loads it.  Anything that cannot be converted is refused with the config field that is not supported.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..denoisers.denoiser import Denoiser
from ..errors import DifflabError
from ..nn import UNet
from ..process.schedules import DiscreteSchedule, get_schedule, zero_terminal_snr_table

__all__ = ["load_pretrained", "export_diffusers", "find_in_hf_cache", "unet_config_from_diffusers",
           "diffusers_to_difflab_keys", "difflab_to_diffusers_keys"]

PREDICTION_IN = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
PREDICTION_OUT = {v: k for k, v in PREDICTION_IN.items()}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


# -- names ---------------------------------------------------------------------------------------
_RES = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "time_proj", "norm2": "norm2", "conv2": "conv2",
        "conv_shortcut": "skip"}
# current diffusers attention names, and the deprecated ones of checkpoints saved before 0.14
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out",
         "query": "q", "key": "k", "value": "v", "proj_attn": "out"}


def _rename_block(rest: str, table: dict[str, str]) -> str:
    for src, dst in table.items():
        if rest.startswith(src + "."):
            return dst + rest[len(src):]
    raise KeyError(rest)


def diffusers_to_difflab_keys(key: str) -> str:
    """``down_blocks.1.resnets.0.conv1.weight`` -> ``down.1.res.0.conv1.weight`` and so on."""
    fixed = {"time_embedding.linear_1.": "time_mlp.0.", "time_embedding.linear_2.": "time_mlp.2.",
             "conv_in.": "stem.", "conv_norm_out.": "head_norm.", "conv_out.": "head."}
    for src, dst in fixed.items():
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        side, i, kind, j, rest = m.groups()
        if kind == "resnets":
            return f"{side}.{i}.res.{j}.{_rename_block(rest, _RES)}"
        if kind == "attentions":
            return f"{side}.{i}.attn.{j}.{_rename_block(rest, _ATTN)}"
        return f"{side}.{i}.resample.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        kind, j, rest = m.groups()
        if kind == "resnets":
            return f"mid_res{int(j) + 1}.{_rename_block(rest, _RES)}"
        return f"mid_attn.{_rename_block(rest, _ATTN)}"
    raise KeyError(key)


def difflab_to_diffusers_keys(key: str) -> str:
    """Inverse of :func:`diffusers_to_difflab_keys` (current diffusers names)."""
    res_inv = {v: k for k, v in _RES.items()}
    attn_inv = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
    fixed = {"time_mlp.0.": "time_embedding.linear_1.", "time_mlp.2.": "time_embedding.linear_2.",
             "stem.": "conv_in.", "head_norm.": "conv_norm_out.", "head.": "conv_out."}
    for src, dst in fixed.items():
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.match(r"(down|up)\.(\d+)\.(res|attn|resample)\.(.+)", key)
    if m:
        side, i, kind, rest = m.groups()
        if kind == "resample":
            return f"{side}_blocks.{i}.{'downsamplers' if side == 'down' else 'upsamplers'}.0.{rest}"
        j, rest = rest.split(".", 1)
        if kind == "res":
            return f"{side}_blocks.{i}.resnets.{j}.{_rename_block(rest, res_inv)}"
        return f"{side}_blocks.{i}.attentions.{j}.{_rename_block(rest, attn_inv)}"
    m = re.match(r"mid_res([12])\.(.+)", key)
    if m:
        return f"mid_block.resnets.{int(m.group(1)) - 1}.{_rename_block(m.group(2), res_inv)}"
    if key.startswith("mid_attn."):
        return f"mid_block.attentions.0.{_rename_block(key[len('mid_attn.'):], attn_inv)}"
    raise KeyError(key)


# -- configs -------------------------------------------------------------------------------------
def _unsupported(where: str, field: str, value: Any, expected: str) -> DifflabError:
    return DifflabError(f"{where}: unsupported {field}={value!r} (difflab converts {expected})")


def unet_config_from_diffusers(cfg: dict[str, Any], where: str = "unet/config.json") -> dict[str, Any]:
    """A UNet2DModel config -> difflab :class:`UNet` keyword arguments (refusing what differs)."""
    cls = cfg.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise _unsupported(where, "_class_name", cls, "UNet2DModel")
    checks = {"act_fn": ("silu", "silu"), "time_embedding_type": ("positional", "positional"),
              "resnet_time_scale_shift": ("default", "default"), "class_embed_type": (None, "None"),
              "num_class_embeds": (None, "None"), "center_input_sample": (False, "false"),
              "downsample_type": ("conv", "conv"), "upsample_type": ("conv", "conv"),
              "mid_block_type": ("UNetMidBlock2D", "UNetMidBlock2D"), "time_embedding_dim": (None, "None"),
              "attn_norm_num_groups": (None, "None"), "mid_block_scale_factor": (1, "1")}
    for field, (ok, text) in checks.items():
        if field in cfg and cfg[field] != ok:
            raise _unsupported(where, field, cfg[field], text)
    channels = list(cfg.get("block_out_channels", (224, 448, 672, 896)))
    down = list(cfg.get("down_block_types", ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")))
    up = list(cfg.get("up_block_types", ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")))
    if len(down) != len(channels) or len(up) != len(channels):
        raise DifflabError(f"{where}: {len(channels)} block_out_channels but {len(down)} down and {len(up)} up blocks")
    attn_down = []
    for i, b in enumerate(down):
        if b not in ("DownBlock2D", "AttnDownBlock2D"):
            raise _unsupported(where, "down_block_types", b, "DownBlock2D and AttnDownBlock2D")
        if b == "AttnDownBlock2D":
            attn_down.append(i)
    attn_up = []
    for k, b in enumerate(up):
        if b not in ("UpBlock2D", "AttnUpBlock2D"):
            raise _unsupported(where, "up_block_types", b, "UpBlock2D and AttnUpBlock2D")
        if b == "AttnUpBlock2D":
            attn_up.append(len(up) - 1 - k)
    if sorted(attn_up) != attn_down:
        raise DifflabError(f"{where}: attention in down blocks {attn_down} but in up blocks {sorted(attn_up)}; "
                           "difflab's UNet mirrors them")
    head_dim = cfg.get("attention_head_dim", 8)  # diffusers' default when the field is absent
    if "norm_num_groups" in cfg and cfg["norm_num_groups"] is None:
        raise _unsupported(where, "norm_num_groups", None, "an integer")
    return dict(in_channels=cfg.get("in_channels", 3), out_channels=cfg.get("out_channels", 3), channels=channels,
                layers_per_block=cfg.get("layers_per_block", 2), attention_levels=attn_down,
                head_dim=head_dim, heads=1, mid_attention=cfg.get("add_attention", True),
                dropout=cfg.get("dropout", 0.0), groups=cfg.get("norm_num_groups", 32),
                norm_eps=cfg.get("norm_eps", 1e-5), flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
                freq_shift=cfg.get("freq_shift", 0), downsample_padding=cfg.get("downsample_padding", 1))


def schedule_from_scheduler_config(cfg: dict[str, Any], where: str = "scheduler/scheduler_config.json"
                                   ) -> tuple[DiscreteSchedule, str, float | None, dict[str, Any]]:
    """diffusers scheduler config -> (schedule, prediction, clip_x0, extra info)."""
    if cfg.get("thresholding"):
        raise _unsupported(where, "thresholding", True, "false (clip_sample is supported)")
    T = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        sched = DiscreteSchedule(torch.tensor(cfg["trained_betas"], dtype=torch.float64),
                                 source={"diffusers": "trained_betas"})
    else:
        name = cfg.get("beta_schedule", "linear")
        if name not in BETA_SCHEDULES:
            raise _unsupported(where, "beta_schedule", name, ", ".join(BETA_SCHEDULES))
        kw = {}
        if name != "squaredcos_cap_v2":
            kw = {"beta_start": float(cfg.get("beta_start", 1e-4)), "beta_end": float(cfg.get("beta_end", 0.02))}
        sched = get_schedule(BETA_SCHEDULES[name], T=T, **kw)  # type: ignore[assignment]
    if cfg.get("rescale_betas_zero_snr"):
        sched = zero_terminal_snr_table(sched)
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_IN:
        raise _unsupported(where, "prediction_type", pred, ", ".join(PREDICTION_IN))
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", False) else None
    variance = cfg.get("variance_type", "fixed_small")
    if variance not in ("fixed_small", "fixed_large", None):
        raise _unsupported(where, "variance_type", variance, "fixed_small and fixed_large")
    info = {"scheduler": cfg.get("_class_name"), "timestep_spacing": cfg.get("timestep_spacing", "leading"),
            "variance_type": variance or "fixed_small"}
    return sched, PREDICTION_IN[pred], clip, info  # type: ignore[return-value]


# -- loading -------------------------------------------------------------------------------------
def find_in_hf_cache(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` (e.g. ``google/ddpm-cifar10-32``) in a Hugging Face cache on
    disk ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub), or None."""
    roots = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE"),
             os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None,
             os.path.expanduser("~/.cache/huggingface/hub")]
    name = "models--" + repo_id.replace("/", "--")
    for root in filter(None, roots):
        entry = Path(root) / name
        if not entry.is_dir():
            continue
        ref = entry / "refs" / "main"
        if ref.is_file():
            snap = entry / "snapshots" / ref.read_text().strip()
            if snap.is_dir():
                return snap
        snaps = sorted((entry / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
        if snaps:
            return snaps[-1]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DifflabError(f"pretrained model is missing {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DifflabError(f"{path} is not valid JSON: {e}") from None


def _read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    st = unet_dir / "diffusion_pytorch_model.safetensors"
    binf = unet_dir / "diffusion_pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file
        try:
            return load_file(str(st))
        except Exception as e:  # safetensors' error types differ across versions
            raise DifflabError(f"weights file {st} is corrupt or truncated: {e}") from None
    if binf.is_file():
        try:
            obj = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as e:
            raise DifflabError(f"weights file {binf} cannot be read safely (weights_only=True): "
                               f"{str(e).splitlines()[0]}") from None
        if not isinstance(obj, dict):
            raise DifflabError(f"weights file {binf} does not hold a state dict")
        return obj
    raise DifflabError(f"pretrained model is missing {st} (or diffusion_pytorch_model.bin)")


def load_pretrained(path: str | os.PathLike) -> Denoiser:
    """A diffusers pipeline folder, a Hugging Face cache snapshot, or a repo id found in the local
    cache -> a difflab :class:`Denoiser` (``.data_shape`` and ``.info`` set)."""
    p = Path(path)
    if not p.exists():
        snap = find_in_hf_cache(str(path)) if "/" in str(path) and not str(path).startswith((".", "/")) else None
        if snap is None:
            raise DifflabError(f"pretrained model not found: {path} (a local pipeline folder, or a repo id "
                               f"present in the Hugging Face cache)")
        p = snap
    if (p / "snapshots").is_dir():  # the cache entry itself
        snaps = sorted((p / "snapshots").glob("*"))
        if not snaps:
            raise DifflabError(f"{p} has no snapshots")
        p = snaps[-1]
    _read_json(p / "model_index.json")
    ucfg = _read_json(p / "unet" / "config.json")
    scfg = _read_json(p / "scheduler" / "scheduler_config.json")
    net_kw = unet_config_from_diffusers(ucfg)
    sched, pred, clip, info = schedule_from_scheduler_config(scfg)
    try:
        net = UNet(**net_kw)
    except DifflabError as e:
        raise DifflabError(f"unet/config.json: {e}") from None
    sd = _read_weights(p / "unet")
    mapped = {}
    for k, v in sd.items():
        try:
            mapped[diffusers_to_difflab_keys(k)] = v
        except KeyError:
            raise DifflabError(f"unet weights: unexpected tensor {k!r}") from None
    missing, unexpected = net.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise DifflabError(f"unet weights do not fit unet/config.json: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    den = Denoiser(net, sched, pred, clip_x0=clip).eval()
    size = ucfg.get("sample_size", 32)
    size = size if isinstance(size, int) else size[0]
    den.data_shape = (net_kw["in_channels"], size, size)
    den.info = {"source": str(p), **info}
    return den


# -- export --------------------------------------------------------------------------------------
def export_diffusers(denoiser: Denoiser, out: str | os.PathLike, data_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``denoiser`` as a diffusers ``DDPMPipeline`` folder (UNet2DModel + DDPMScheduler)."""
    from safetensors.torch import save_file

    from ..train.checkpoint import atomic_write_text

    net, sched = denoiser.net, denoiser.schedule
    if not isinstance(net, UNet):
        raise DifflabError("only difflab UNet models can be exported to diffusers")
    if not isinstance(sched, DiscreteSchedule):
        raise DifflabError("diffusers' DDPMScheduler needs a discrete beta table: train with --timesteps T")
    if denoiser.prediction not in PREDICTION_OUT:
        raise DifflabError(f"prediction {denoiser.prediction!r} has no diffusers prediction_type "
                           f"(eps, v and x0 do)")
    c = net.config
    widths = [c["channels"][i] for i in c["attention_levels"]] + ([c["channels"][-1]] if c["mid_attention"] else [])
    if c["head_dim"]:
        head_dim = c["head_dim"]
    elif len(set(widths)) <= 1:
        head_dim = (widths[0] // c["heads"]) if widths else 8
    else:
        raise DifflabError("diffusers uses one attention_head_dim for all blocks: give the UNet head_dim, or "
                           "attention at one width")
    if c["time_embed_dim"] not in (None, 4 * c["channels"][0]):
        raise DifflabError("UNet2DModel's time embedding is 4x the first width; this UNet's is not")
    shape = tuple(data_shape or getattr(denoiser, "data_shape"))
    n = len(c["channels"])
    ucfg = {
        "_class_name": "UNet2DModel", "sample_size": shape[-1], "in_channels": c["in_channels"],
        "out_channels": c["out_channels"], "center_input_sample": False, "time_embedding_type": "positional",
        "freq_shift": c["freq_shift"], "flip_sin_to_cos": c["flip_sin_to_cos"],
        "down_block_types": ["AttnDownBlock2D" if i in c["attention_levels"] else "DownBlock2D" for i in range(n)],
        "up_block_types": ["AttnUpBlock2D" if i in c["attention_levels"] else "UpBlock2D" for i in reversed(range(n))],
        "block_out_channels": c["channels"], "layers_per_block": c["layers_per_block"], "mid_block_scale_factor": 1,
        "downsample_padding": c["downsample_padding"], "downsample_type": "conv", "upsample_type": "conv",
        "dropout": c["dropout"], "act_fn": "silu", "attention_head_dim": head_dim, "norm_num_groups": c["groups"],
        "norm_eps": c["norm_eps"], "resnet_time_scale_shift": "default", "add_attention": c["mid_attention"],
    }
    src = sched.source or {}
    scfg: dict[str, Any] = {"_class_name": "DDPMScheduler", "num_train_timesteps": sched.T,
                            "prediction_type": PREDICTION_OUT[denoiser.prediction],
                            "clip_sample": denoiser.clip_x0 is not None,
                            "clip_sample_range": float(denoiser.clip_x0 or 1.0), "variance_type": "fixed_small",
                            "timestep_spacing": "leading", "steps_offset": 0}
    standard = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
    if src.get("name") in standard and "alpha_bar" not in sched.config() and \
            src.get("s", 0.008) == 0.008:
        scfg["beta_schedule"] = standard[src["name"]]
        if src["name"] != "cosine":
            scfg.update(beta_start=src["beta_start"], beta_end=src["beta_end"])
    else:
        if "alpha_bar" in sched.config():
            raise DifflabError("a rescaled (zero-terminal-SNR) table cannot be written as diffusers betas exactly")
        scfg["beta_schedule"] = "linear"
        scfg["trained_betas"] = sched.betas_table.tolist()
    out = Path(out)
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    sd = {difflab_to_diffusers_keys(k): v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(sd, str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    atomic_write_text(out / "unet" / "config.json", json.dumps(ucfg, indent=1))
    atomic_write_text(out / "scheduler" / "scheduler_config.json", json.dumps(scfg, indent=1))
    atomic_write_text(out / "model_index.json", json.dumps({
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=1))
    return out
