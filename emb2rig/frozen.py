"""The frozen stage-2 encoder and stage-3a renderer, seen through one small interface.

    frozen = load_frozen(cfg.encoder, cfg.renderer, names, controls, device)
    feat, emb = frozen.encode(img01)     # (B, 3, H, W) in [0, 1] -> (B, D), (B, 16); differentiable
    img01 = frozen.render(rig, avatar)   # (B, max_n) padded rigs, (B,) avatar indices -> (B, 3, H, W)

Both networks are in eval mode with `requires_grad=False` on every parameter, and neither runs
under `no_grad` here: gradients flow through them to the decoder, never into them. This is the
one place where renderer output ([0, 1], renderer size) becomes encoder input (encoder size,
face-normalised by the encoder's `preprocess`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Frozen:
    """Frozen encoder + renderer for a fixed list of avatars.

    Args:
        encoder: `forward(x) -> (pooled (B, D), embedding (B, 16))`, `preprocess(img01)`, `image_size`.
        renderer: has `avatar_names`, `controls[name]`, `image_size`, `render(rig, name)`.
        names: avatar names in the decoder's index order.
        controls: each avatar's control names (from its rigs.csv), checked against the renderer.
    """

    def __init__(self, encoder: nn.Module, renderer: nn.Module, names: list[str], controls: list[list[str]]):
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

    def encode(self, img01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) images in [0, 1] -> encoder (pooled feature (B, D), embedding (B, 16)).

        Uses the encoder's own differentiable `preprocess` (resize to its size, face-normalise)."""
        return self.encoder(self.encoder.preprocess(img01))

    def render(self, rig: torch.Tensor, avatar: torch.Tensor) -> torch.Tensor:
        """(B, max_n) padded rigs + (B,) avatar indices -> (B, 3, S, S) renders in [0, 1].

        Each avatar's renderer sees only its own `n_controls` entries."""
        order = []
        for a in avatar.unique().tolist():
            sel = (avatar == a).nonzero().flatten()
            img = self.renderer.render(rig[sel, :self.n_controls[a]], self.names[a])  # (b, 3, S, S)
            order.append((sel, img))
        imgs = torch.cat([img for _, img in order])
        idx = torch.cat([sel for sel, _ in order])
        out = torch.empty_like(imgs)
        return out.index_copy(0, idx, imgs)  # back to batch order (differentiable w.r.t. imgs)


@torch.no_grad()
def reference_images(frozen: Frozen, rigs: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Each avatar's reference image: the renderer's output at the per-control median of its
    training rigs (the avatar format has no neutral pose; the median rig is its stand-in).

    Args:
        rigs: per avatar, (N_a, n_a) training rigs.
    Returns: (A, 3, S, S) in [0, 1].
    """
    imgs = []
    for a, r in enumerate(rigs):
        med = torch.from_numpy(np.median(r, axis=0)).float().to(device)[None]  # (1, n_a)
        imgs.append(frozen.renderer.render(med, frozen.names[a]))
    return torch.cat(imgs)


@torch.no_grad()
def reference_features(frozen: Frozen, ref_images: torch.Tensor) -> torch.Tensor:
    """(A, 3, S, S) reference images -> (A, D) pooled encoder features (input of the identity MLP)."""
    return frozen.encode(ref_images)[0].float()


def load_frozen(encoder_path: str, renderer_path: str, names: list[str], controls: list[list[str]],
                device: torch.device) -> Frozen:
    """Load the stage-2 encoder and the stage-3a renderer checkpoints, frozen, on `device`."""
    from expression_finetune import load_encoder
    from rig2img import load_renderer

    encoder = load_encoder(encoder_path).to(device)
    renderer = load_renderer(renderer_path).to(device)
    return Frozen(encoder, renderer, names, controls)
