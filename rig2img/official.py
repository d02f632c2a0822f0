"""Official FreeAvatar renderer weights -> our RigGenerator.

The official stage-3a network (FuxiVirtualHuman/free_avatar, models/DCGAN.py `Generator` L89-182,
built in train_rig2img.py L127 with nz = n_rig, ngf = 128, nc = 3, sigmoid) is our RigGenerator with
the 'official' preset under other module names; its checkpoints are `{'state_dict': model.state_dict()}`
(train_rig2img.py L49, L92):

    official            ours (RigGenerator.net)   shape
    tconv1.weight       0.weight                  (n_rig, 1024, 4, 4)   4x4
    bn1.*               1.*                       (1024,)
    tconv2..6, bn2..6   3.*, 4.* ... 15.*, 16.*   1024 -> 512 -> 256 -> 128 -> 128 -> 128, 8x8 ... 128x128
    tconv8.weight       18.weight                 (128, 3, 4, 4)        256x256, then sigmoid

`bn*` are weight, bias, running_mean, running_var and num_batches_tracked. There is no tconv7 (commented
out upstream) and the official `upsample` module has no state. With `preset('official')` every
official key has a counterpart and every one of ours is filled; a renderer built with
`out_bias=True` has `net.18.bias` left over, which the report names.

    gen = load_official_generator(torch.load("rig2img_XXXX.pt", weights_only=True))   # n_rig from tconv1
    renderer = official_renderer(torch.load(...), "my_avatar", control_names)         # for stage 3b / animate
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rig2img.models import GeneratorConfig, PerAvatarRenderer, RigGenerator, preset
from rig2img.renderer import Renderer

OFFICIAL_LAST = "tconv8"  # the RGB layer's name upstream (tconv7 is commented out there)


def official_key_map(gen: RigGenerator) -> dict[str, str]:
    """Official state-dict key -> our key, for every entry of `gen.state_dict()` that has one.

    Stage i (4x4 first) is `tconv{i+1}` / `bn{i+1}`; the RGB layer is `tconv8`.
    """
    convs = [n for n, m in gen.net.named_children() if isinstance(m, nn.ConvTranspose2d)]
    norms = [n for n, m in gen.net.named_children() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) - 1 > 7:
        raise ValueError(f"the official naming has room for 7 stages before {OFFICIAL_LAST}; this generator has "
                         f"{len(convs) - 1}")
    names = [(f"tconv{i + 1}", c) for i, c in enumerate(convs[:-1])] + [(OFFICIAL_LAST, convs[-1])]
    names += [(f"bn{i + 1}", b) for i, b in enumerate(norms)]
    ours = gen.state_dict()
    out = {}
    for official, idx in names:
        for k in ours:
            if k.startswith(f"net.{idx}."):
                out[f"{official}.{k[len(f'net.{idx}.'):]}"] = k
    return out


def unwrap_official(state: Mapping) -> dict[str, torch.Tensor]:
    """The plain state dict of an official checkpoint: `{'state_dict': sd}` or `sd`; a DataParallel
    `module.` prefix is dropped."""
    sd = state.get("state_dict", state) if isinstance(state, Mapping) else None
    if not isinstance(sd, Mapping):
        raise ValueError("expected an official rig2img checkpoint: {'state_dict': {...}} or the state dict itself")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def convert_official_state_dict(state: Mapping, gen: RigGenerator) -> tuple[dict[str, torch.Tensor], dict]:
    """Rename an official state dict to `gen`'s keys.

    Returns:
        (converted, report): `converted` holds our keys; `report` has sorted lists
        'missing' (our keys with no official value, named as ours), 'unexpected' (official keys with
        no counterpart in `gen`) and 'shape_mismatch' ('official_key: official shape vs ours').
    """
    sd = unwrap_official(state)
    key_map = official_key_map(gen)
    ours = gen.state_dict()
    converted, unexpected, mismatch = {}, [], []
    for k, v in sd.items():
        if k not in key_map:
            unexpected.append(k)
        elif tuple(v.shape) != tuple(ours[key_map[k]].shape):
            mismatch.append(f"{k}: {tuple(v.shape)} vs {tuple(ours[key_map[k]].shape)}")
        else:
            converted[key_map[k]] = v
    missing = sorted(set(ours) - set(converted))
    return converted, {"missing": missing, "unexpected": sorted(unexpected), "shape_mismatch": sorted(mismatch)}


def load_official_generator(state: Mapping, n_rig: int | None = None, cfg: GeneratorConfig | None = None,
                            strict: bool = True) -> RigGenerator:
    """A RigGenerator (eval mode) holding official renderer weights.

    Args:
        state: the loaded official checkpoint (`{'state_dict': ...}`) or its state dict.
        n_rig: the avatar's rig size; None: read from `tconv1.weight`.
        cfg: generator layout; None: `preset('official')` (mode per_avatar, 256 px, official widths).
        strict: raise a ValueError listing missing, unexpected and mis-shaped keys if any; otherwise
            load what matches (see `convert_official_state_dict` for the report).
    """
    sd = unwrap_official(state)
    if "tconv1.weight" not in sd:
        raise ValueError(f"not an official rig2img generator: no 'tconv1.weight' among {sorted(sd)[:8]}...")
    found = int(sd["tconv1.weight"].shape[0])  # (n_rig, 1024, 4, 4)
    if n_rig is not None and n_rig != found:
        raise ValueError(f"the checkpoint's generator takes {found} rig values (tconv1.weight), not n_rig={n_rig}")
    gen = RigGenerator(found, cfg or preset("official"))
    converted, report = convert_official_state_dict(sd, gen)
    if strict and any(report.values()):
        raise ValueError(f"official generator does not fit: missing {report['missing']}, unexpected "
                         f"{report['unexpected']}, shape mismatch {report['shape_mismatch']}")
    gen.load_state_dict(converted, strict=False)
    return gen.eval()


def official_renderer(state: Mapping, avatar: str, controls: Sequence[str]) -> Renderer:
    """A frozen one-avatar Renderer (the object `rig2img.load_renderer` returns) from official weights.

    Args:
        state: the loaded official checkpoint.
        avatar: the avatar's name.
        controls: its control names in rig order (their number must match the checkpoint).
    """
    gen = load_official_generator(state, n_rig=len(controls))
    cfg = preset("official")
    net = PerAvatarRenderer([len(controls)], cfg)
    net.gens[0] = gen
    return Renderer(net, [avatar], {avatar: list(controls)}, cfg)
