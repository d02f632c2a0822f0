"""The frozen stage-2 encoder and stage-3a renderer, seen through one small interface.

    frozen = load_frozen(cfg.encoder, cfg.renderer, names, controls, device)
    feat, emb = frozen.encode(img01)     # (B, 3, H, W) face crops in [0, 1] -> (B, D), (B, 16); differentiable
    img01 = frozen.render(rig, avatar)   # (B, max_n) padded rigs, (B,) avatar indices -> (B, 3, H, W)
    feat, emb = frozen.encode(img01, avatar)   # renders: each cropped to its avatar's face square first

Both networks are in eval mode with `requires_grad=False` on every parameter, and neither runs
under `no_grad` here: gradients flow through them to the decoder, never into them. This is the
one place where renderer output ([0, 1], renderer size) becomes encoder input: the square face crop
of the avatar's `face_box` (the same framing as the actor faces, `data.face_track`), resized to the
encoder size and face-normalised by the encoder's `preprocess`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.face_track import square_from_norm_box


def per_group(group: torch.Tensor, fn) -> torch.Tensor:
    """Run `fn(g, rows)` once per distinct value g of `group` (B,) on the rows holding it; return the
    results stacked back in batch order (differentiable w.r.t. them)."""
    rows, outs = [], []
    for g in group.unique().tolist():
        sel = (group == g).nonzero().flatten()
        rows.append(sel)
        outs.append(fn(g, sel))
    out = torch.cat(outs)
    return torch.empty_like(out).index_copy(0, torch.cat(rows), out)


def crop_pad(x: torch.Tensor, corners: tuple[int, int, int, int]) -> torch.Tensor:
    """(B, C, H, W)[..., y0:y1, x0:x1] with zeros (black) outside the image; differentiable."""
    x0, y0, x1, y1 = corners
    h, w = x.shape[-2:]
    pad = (max(-x0, 0), max(x1 - w, 0), max(-y0, 0), max(y1 - h, 0))
    if any(pad):
        x = F.pad(x, pad)
    return x[..., y0 + pad[2]:y1 + pad[2], x0 + pad[0]:x1 + pad[0]]


class Frozen:
    """Frozen encoder + renderer for a fixed list of avatars.

    Args:
        encoder: `forward(x) -> (pooled (B, D), embedding (B, 16))`, `preprocess(img01)`, `image_size`.
        renderer: has `avatar_names`, `controls[name]`, `image_size`, `render(rig, name)`.
        names: avatar names in the decoder's index order.
        controls: each avatar's control names (from its rigs.csv), checked against the renderer.
        face_boxes: each avatar's normalised head box (`avatar.yaml` `face_box`; None = whole render).
        margin: face-crop margin (the one the actor faces and test-mode crops use).
    """

    def __init__(self, encoder: nn.Module, renderer: nn.Module, names: list[str], controls: list[list[str]],
                 face_boxes: list | None = None, margin: float = 0.3):
        for name, ctrl in zip(names, controls):
            if name not in renderer.avatar_names:
                known = list(renderer.avatar_names)
                raise ValueError(f"avatar '{name}' is not known to the renderer (it has {known}); "
                                 f"train rig2img on this avatar or drop it from 'avatars'")
            if list(renderer.controls[name]) != list(ctrl):
                raise ValueError(f"avatar '{name}': the renderer's controls {list(renderer.controls[name])} "
                                 f"differ from rigs.csv {list(ctrl)}; retrain the renderer on this avatar folder")
        self.encoder, self.renderer = encoder.eval(), renderer.eval()
        for p in [*encoder.parameters(), *renderer.parameters()]:
            p.requires_grad_(False)
        self.names, self.n_controls = list(names), [len(c) for c in controls]
        self.image_size = int(renderer.image_size)
        boxes = face_boxes or [None] * len(names)
        S = self.image_size
        self.corners = [square_from_norm_box(b, S, S, margin).corners() if b is not None else None for b in boxes]

    def encoder_input(self, img01: torch.Tensor, avatar: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] -> (B, 3, s, s) encoder input. `avatar` (B,) marks avatar
        renders (index >= 0), cropped to that avatar's face square; -1 (or no `avatar`) = a face crop
        already. Differentiable (the encoder's `preprocess`: resize to its size, face-normalise)."""
        pre = self.encoder.preprocess
        if avatar is None or all(c is None for c in self.corners):
            return pre(img01)

        def view(a: int, sel: torch.Tensor) -> torch.Tensor:
            c = self.corners[a] if a >= 0 else None
            return pre(crop_pad(img01[sel], c) if c is not None else img01[sel])

        return per_group(avatar, view)

    def encode(self, img01: torch.Tensor, avatar: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) images in [0, 1] -> encoder (pooled feature (B, D), embedding (B, 16));
        `avatar` as in `encoder_input`."""
        return self.encoder(self.encoder_input(img01, avatar))

    def render(self, rig: torch.Tensor, avatar: torch.Tensor) -> torch.Tensor:
        """(B, max_n) padded rigs + (B,) avatar indices -> (B, 3, S, S) renders in [0, 1].

        Each avatar's renderer sees only its own `n_controls` entries."""
        return per_group(avatar, lambda a, sel: self.renderer.render(rig[sel, :self.n_controls[a]], self.names[a]))


@torch.no_grad()
def reference_images(frozen: Frozen, rigs: list, device: torch.device) -> torch.Tensor:
    """Each avatar's reference image: the renderer's output at its reference rig (stage 3b uses the
    per-control median of the avatar's training rigs: the avatar format has no neutral pose).

    Args:
        rigs: per avatar, its (n_a,) reference rig.
    Returns: (A, 3, S, S) in [0, 1].
    """
    imgs = []
    for a, r in enumerate(rigs):
        rig = torch.as_tensor(np.asarray(r, np.float32), device=device)[None]  # (1, n_a)
        imgs.append(frozen.renderer.render(rig, frozen.names[a]))
    return torch.cat(imgs)


@torch.no_grad()
def reference_features(frozen: Frozen, ref_images: torch.Tensor) -> torch.Tensor:
    """(A, 3, S, S) reference images -> (A, D) pooled encoder features (input of the identity MLP)."""
    return frozen.encode(ref_images, torch.arange(len(ref_images), device=ref_images.device))[0].float()


def load_frozen(encoder_path: str, renderer_path: str, names: list[str], controls: list[list[str]],
                device: torch.device, face_boxes: list | None = None, margin: float = 0.3) -> Frozen:
    """Load the stage-2 encoder and the stage-3a renderer checkpoints, frozen, on `device`."""
    from expression_finetune import load_encoder
    from rig2img import load_renderer

    encoder = load_encoder(encoder_path).to(device)
    renderer = load_renderer(renderer_path).to(device)
    return Frozen(encoder, renderer, names, controls, face_boxes, margin)
