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

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..denoisers.denoiser import Denoiser
from ..errors import DifflabError
from ..io import atomic_write_json, load_tensors, read_json, save_tensors
from ..nn import UNet
from ..process.schedules import DiscreteSchedule, schedule_from_spec, zero_terminal_snr_table

__all__ = ["load_pretrained", "export_diffusers", "find_in_hf_cache", "unet_config_from_diffusers",
           "diffusers_to_difflab_keys", "difflab_to_diffusers_keys"]

PREDICTION_IN = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
PREDICTION_OUT = {v: k for k, v in PREDICTION_IN.items()}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}


# -- names ---------------------------------------------------------------------------------------
# Leaf names inside a residual block and an attention block (diffusers -> difflab); attention also has
# the deprecated names of checkpoints saved before diffusers 0.14 (read, never written).
_RES = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "time_proj", "norm2": "norm2", "conv2": "conv2",
        "conv_shortcut": "skip"}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out"}
_ATTN_OLD = {"query": "q", "key": "k", "value": "v", "proj_attn": "out"}
_LEAVES = {"res": (_RES, _RES), "attn": ({**_ATTN, **_ATTN_OLD}, _ATTN), None: ({}, {})}

# (diffusers pattern, difflab pattern, leaf table): {side} is down/up, {i} and {j} block indices, and the
# rest of the key is the leaf, renamed by the table (kept as is for None).
_RULES = [
    ("time_embedding.linear_1", "time_mlp.0", None), ("time_embedding.linear_2", "time_mlp.2", None),
    ("conv_in", "stem", None), ("conv_norm_out", "head_norm", None), ("conv_out", "head", None),
    ("{side}_blocks.{i}.resnets.{j}", "{side}.{i}.res.{j}", "res"),
    ("{side}_blocks.{i}.attentions.{j}", "{side}.{i}.attn.{j}", "attn"),
    ("down_blocks.{i}.downsamplers.0", "down.{i}.resample", None),
    ("up_blocks.{i}.upsamplers.0", "up.{i}.resample", None),
    ("mid_block.resnets.0", "mid_res1", "res"), ("mid_block.resnets.1", "mid_res2", "res"),
    ("mid_block.attentions.0", "mid_attn", "attn"),
]
_GROUPS = {"side": r"(?P<side>down|up)", "i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)"}


def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template)
    for name, group in _GROUPS.items():
        rx = rx.replace(re.escape("{" + name + "}"), group)
    return re.compile(rx + r"\.(?P<leaf>.+)")


def _rename(key: str, to_difflab: bool) -> str:
    for theirs, ours, leaves in _RULES:
        src, dst = (theirs, ours) if to_difflab else (ours, theirs)
        m = _pattern(src).fullmatch(key)
        if m is None:
            continue
        table = _LEAVES[leaves][0] if to_difflab else {v: k for k, v in _LEAVES[leaves][1].items()}
        leaf = m["leaf"]
        if table:
            head = next((name for name in table if leaf.startswith(name + ".")), None)
            if head is None:
                continue
            leaf = table[head] + leaf[len(head):]
        return dst.format(**{k: v for k, v in m.groupdict().items() if k != "leaf"}) + "." + leaf
    raise KeyError(key)


def diffusers_to_difflab_keys(key: str) -> str:
    """``down_blocks.1.resnets.0.conv1.weight`` -> ``down.1.res.0.conv1.weight`` and so on."""
    return _rename(key, to_difflab=True)


def difflab_to_diffusers_keys(key: str) -> str:
    """Inverse of :func:`diffusers_to_difflab_keys` (current diffusers names)."""
    return _rename(key, to_difflab=False)


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
    zero_snr = bool(cfg.get("rescale_betas_zero_snr"))
    if cfg.get("trained_betas") is not None:
        sched = DiscreteSchedule(torch.tensor(cfg["trained_betas"], dtype=torch.float64),
                                 source={"diffusers": "trained_betas"})
        if zero_snr:
            sched = zero_terminal_snr_table(sched)
    else:
        name = cfg.get("beta_schedule", "linear")
        if name not in BETA_SCHEDULES:
            raise _unsupported(where, "beta_schedule", name, ", ".join(BETA_SCHEDULES))
        spec: dict[str, Any] = {"name": BETA_SCHEDULES[name], "T": T, "zero_terminal_snr": zero_snr}
        if name != "squaredcos_cap_v2":
            spec.update(beta_start=float(cfg.get("beta_start", 1e-4)), beta_end=float(cfg.get("beta_end", 0.02)))
        sched = schedule_from_spec(spec)  # type: ignore[assignment]
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
    return read_json(path, "pretrained model file")


def _read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    st = unet_dir / "diffusion_pytorch_model.safetensors"
    binf = unet_dir / "diffusion_pytorch_model.bin"
    if st.is_file():
        return load_tensors(st)
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
    den.data_kind = "images"
    den.info = {"source": str(p), **info}
    return den


# -- export --------------------------------------------------------------------------------------
def export_diffusers(denoiser: Denoiser, out: str | os.PathLike, data_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``denoiser`` as a diffusers ``DDPMPipeline`` folder (UNet2DModel + DDPMScheduler)."""
    net, sched = denoiser.net, denoiser.schedule
    if getattr(denoiser, "encoder", None) is not None:
        raise DifflabError("this model runs in an autoencoder's latent space; a diffusers DDPMPipeline has no "
                           "decoder, so it cannot be exported (sample it with difflab sample)")
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
    save_tensors({difflab_to_diffusers_keys(k): v for k, v in net.state_dict().items()},
                 out / "unet" / "diffusion_pytorch_model.safetensors")
    atomic_write_json(out / "unet" / "config.json", ucfg)
    atomic_write_json(out / "scheduler" / "scheduler_config.json", scfg)
    atomic_write_json(out / "model_index.json", {
        "_class_name": "DDPMPipeline", "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
    return out
