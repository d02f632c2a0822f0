"""Masked autoencoder with a ViT backbone (He et al., 2022), stage 1 of FreeAvatar.

A drop-in equivalent of the official facebookresearch/mae ``MaskedAutoencoderViT`` (same
parameter names, so public MAE / MAE-Face checkpoints load; same init, masking and loss), with
fused SDPA attention and no host syncs (works with torch.compile, bf16 autocast, channels_last).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from common.device import at_least_fp32

from .patch_embed import ConvPatchEmbed, PatchEmbed
from .pos_embed import get_2d_sincos_pos_embed

__all__ = ["MAEConfig", "MaskedAutoencoderViT", "MAE_PRESETS", "build_mae", "mae_vit_base_patch16",
           "mae_vit_large_patch16", "mae_vit_huge_patch14", "mae_vit_small_patch8_64", "mae_vit_tiny_patch8_64",
           "mae_vit_tiny_patch16_64", "mae_vit_tiny_conv16_64"]


@dataclass(frozen=True)
class MAEConfig:
    """Hyper-parameters of a masked autoencoder (defaults: the official ViT-B/16)."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = False  # official model default; the stage-1 recipe turns it on
    patch_stem: str = "linear"  # "linear": the official patch projection; "conv": `ConvPatchEmbed`
    stem_width: int = 32  # channels of the first conv of a "conv" stem (doubled at each halving)


MAE_PRESETS: dict[str, MAEConfig] = {
    "mae_vit_base_patch16": MAEConfig(),
    "mae_vit_large_patch16": MAEConfig(embed_dim=1024, depth=24, num_heads=16),
    "mae_vit_huge_patch14": MAEConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    # CPU demo sizes: 64 px faces, 8 px patches (8x8 grid).
    "mae_vit_small_patch8_64": MAEConfig(img_size=64, patch_size=8, embed_dim=384, depth=12, num_heads=6,
                                         decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8),
    "mae_vit_tiny_patch8_64": MAEConfig(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=3,
                                        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # The demo default: 16 px patches as ViT-B/16 (4x4 grid), 6x faster than 8 px patches on CPU.
    "mae_vit_tiny_patch16_64": MAEConfig(img_size=64, patch_size=16, embed_dim=192, depth=6, num_heads=3,
                                         decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # The same with a small convolutional stem instead of the linear projection (the demo's choice:
    # it learns expressions from few CPU steps far faster; README "Demo encoder").
    "mae_vit_tiny_conv16_64": MAEConfig(img_size=64, patch_size=16, embed_dim=192, depth=6, num_heads=3,
                                        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
                                        patch_stem="conv"),
}


def make_patch_embed(cfg: MAEConfig) -> nn.Module:
    """The patch embedding `cfg.patch_stem` names ("linear" = official, "conv" = `ConvPatchEmbed`)."""
    if cfg.patch_stem == "linear":
        return PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
    if cfg.patch_stem == "conv":
        return ConvPatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.stem_width)
    raise ValueError(f"patch_stem must be 'linear' or 'conv', got {cfg.patch_stem!r}")


class Attention(nn.Module):
    """Multi-head self-attention: one fused qkv projection, fused SDPA (explicit GEMMs for bf16 on CPU)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, C // self.num_heads)  # (B, T, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, T, d)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # The CPU flash kernel is 2-5x slower than two GEMMs in bf16 (fwd + bwd, short sequences).
            attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, h, T, T)
            x = attn.softmax(dim=-1, dtype=torch.float32).to(v.dtype) @ v  # (B, h, T, d)
        else:
            x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v: (B, h, T, d)
        return self.proj(x.transpose(1, 2).reshape(B, T, C))  # (B, h, T, d) -> (B, T, C)


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop a residual branch per sample with probability p, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)  # (N, 1, 1)
    return x * keep / (1.0 - p)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    ``drop_path`` (stochastic depth, used by fine-tuning; 0 in pre-training) adds no parameters.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_prob = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)


class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder: ViT encoder on visible patches, light ViT decoder predicting pixels.

    Args:
        cfg: architecture and loss options (see ``MAEConfig`` and ``MAE_PRESETS``); default ViT-B/16.
    """

    def __init__(self, cfg: MAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MAEConfig()
        D, Dd = cfg.embed_dim, cfg.decoder_embed_dim
        self.norm_pix_loss = cfg.norm_pix_loss
        self.patch_embed = make_patch_embed(cfg)
        L = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, D), requires_grad=False)  # fixed sin-cos
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(D, eps=1e-6)

        self.decoder_embed = nn.Linear(D, Dd, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, Dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(Dd, eps=1e-6)
        self.decoder_pred = nn.Linear(Dd, cfg.patch_size**2 * cfg.in_chans, bias=True)  # pixels per patch
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official init: sin-cos position tables, xavier Linear/patch conv, N(0, 0.02) tokens."""
        grid = self.patch_embed.grid_size[0]
        for param in (self.pos_embed, self.decoder_pos_embed):
            table = get_2d_sincos_pos_embed(param.shape[-1], grid, cls_token=True)  # (1 + L, D)
            param.data.copy_(torch.from_numpy(table).float().unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear on flattened patches
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C), each patch flattened in (row, col, channel) order."""
        p = self.patch_embed.patch_size[0]
        N, C, H, W = imgs.shape
        h, w = H // p, W // p
        x = imgs.reshape(N, C, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)  # (N, h, w, p, p, C)
        return x.reshape(N, h * w, p * p * C)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, p*p*C) -> (N, C, H, W), the inverse of ``patchify``."""
        p = self.patch_embed.patch_size[0]
        h, w = self.patch_embed.grid_size
        C = x.shape[-1] // (p * p)
        x = x.reshape(x.shape[0], h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p, w, p)
        return x.reshape(x.shape[0], C, h * p, w * p)

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Keep a random ``int(L * (1 - mask_ratio))`` patches per sample (lowest noise first).

        Args:
            x: (N, L, D) patch tokens.
            mask_ratio: fraction of patches removed.
            noise: optional (N, L) scores; default uniform in [0, 1) as the official code.

        Returns:
            x_kept (N, len_keep, D), mask (N, L) with 1 = removed, ids_restore (N, L).
        """
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(N, L, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # (N, L) inverse permutation
        ids_keep = ids_shuffle[:, :len_keep]  # (N, len_keep)
        x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (N, len_keep, D)
        # A patch is kept iff its rank in the shuffle is < len_keep (== official gather of 0/1 flags).
        mask = (ids_restore >= len_keep).float()  # (N, L)
        return x_kept, mask, ids_restore

    def _prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (N, 1, D)
        return torch.cat([cls, x], dim=1)  # (N, 1 + T, D)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Encode the visible patches.

        Args:
            imgs: (N, C, H, W) normalised images.
            mask_ratio: fraction of patches removed.
            noise: optional (N, L) masking scores (see ``random_masking``).

        Returns:
            latent (N, 1 + len_keep, D) after the final norm, mask (N, L), ids_restore (N, L).
        """
        if isinstance(self.patch_embed, ConvPatchEmbed):
            # A conv stem sees across patch borders: zero the masked patches' pixels first, so that no
            # visible token carries any pixel the decoder has to reconstruct.
            N, L, p = imgs.shape[0], self.patch_embed.num_patches, self.patch_embed.patch_size[0]
            if noise is None:
                noise = torch.rand(N, L, device=imgs.device)
            mask = self.random_masking(imgs.new_zeros(N, L, 1), mask_ratio, noise)[1]  # (N, L), 1 = removed
            keep = self.unpatchify((1 - mask).unsqueeze(-1).expand(-1, -1, p * p))  # (N, 1, H, W)
            imgs = imgs * keep.to(imgs.dtype)
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]  # (N, L, D)
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)  # (N, len_keep, D)
        x = self._prepend_cls(x)  # (N, 1 + len_keep, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encode all patches without masking: (N, C, H, W) -> tokens (N, 1 + L, D) after the norm."""
        x = self._prepend_cls(self.patch_embed(imgs) + self.pos_embed[:, 1:, :])  # (N, 1 + L, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Latent (N, 1 + len_keep, D) + ids_restore (N, L) -> predicted pixels (N, L, p*p*C)."""
        x = self.decoder_embed(x)  # (N, 1 + len_keep, Dd)
        N, T, Dd = x.shape
        L = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(N, L + 1 - T, -1)  # (N, L - len_keep, Dd)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (N, L, Dd) in shuffled order
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, Dd))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed  # (N, 1 + L, Dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (N, 1 + L, p*p*C)
        return x[:, 1:, :]  # drop the cls token: (N, L, p*p*C)

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE over removed patches only: imgs (N, C, H, W), pred (N, L, p*p*C), mask (N, L) 1 = removed."""
        target = at_least_fp32(self.patchify(imgs))  # (N, L, p*p*C)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as official
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)  # never down
        loss = (pred.to(dtype) - target.to(dtype)).pow(2).mean(dim=-1)  # (N, L) per-patch MSE
        mask = mask.to(dtype)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None):
        """Mask, encode, decode and score.

        Args:
            imgs: (N, C, H, W) normalised images.
            mask_ratio: fraction of patches removed.
            noise: optional (N, L) masking scores; the same noise gives the same mask.

        Returns:
            loss (scalar), pred (N, L, p*p*C), mask (N, L) with 1 = removed.
        """
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask


def build_mae(name: str, **overrides) -> MaskedAutoencoderViT:
    """Build a preset by name (e.g. from YAML), with ``MAEConfig`` field overrides.

    Args:
        name: a key of ``MAE_PRESETS``.
        **overrides: ``MAEConfig`` fields, e.g. ``norm_pix_loss=True`` or ``img_size=112``.
    """
    if name not in MAE_PRESETS:
        raise ValueError(f"unknown MAE model {name!r}; valid names: {', '.join(sorted(MAE_PRESETS))}")
    unknown = set(overrides) - set(asdict(MAE_PRESETS[name]))
    if unknown:
        raise TypeError(f"unknown MAEConfig fields {sorted(unknown)}; valid: {sorted(asdict(MAEConfig()))}")
    return MaskedAutoencoderViT(replace(MAE_PRESETS[name], **overrides))


def mae_vit_base_patch16(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_base_patch16", **overrides)


def mae_vit_large_patch16(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_large_patch16", **overrides)


def mae_vit_huge_patch14(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_huge_patch14", **overrides)


def mae_vit_small_patch8_64(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_small_patch8_64", **overrides)


def mae_vit_tiny_patch8_64(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_tiny_patch8_64", **overrides)


def mae_vit_tiny_patch16_64(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_tiny_patch16_64", **overrides)


def mae_vit_tiny_conv16_64(**overrides) -> MaskedAutoencoderViT:
    return build_mae("mae_vit_tiny_conv16_64", **overrides)
