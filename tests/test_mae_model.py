"""Stage-1 MAE model: official key names, masking, loss, numerics against a plain reference, loading."""

import argparse
import math

import numpy as np
import pytest
import torch

from mae_pretrain import (
    MaskedAutoencoderViT,
    build_mae,
    get_2d_sincos_pos_embed,
    interpolate_pos_embed,
    load_mae_checkpoint,
    mae_vit_base_patch16,
    mae_vit_tiny_patch8_64,
)

BLOCK_KEYS = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]


def official_keys(depth: int, decoder_depth: int, decoder: bool = True) -> set[str]:
    """State-dict keys of the official facebookresearch/mae MaskedAutoencoderViT."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    keys |= {f"blocks.{i}.{m}.{t}" for i in range(depth) for m in BLOCK_KEYS for t in ("weight", "bias")}
    if decoder:
        keys |= {"mask_token", "decoder_pos_embed", "decoder_embed.weight", "decoder_embed.bias",
                 "decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"}
        keys |= {f"decoder_blocks.{i}.{m}.{t}" for i in range(decoder_depth) for m in BLOCK_KEYS
                 for t in ("weight", "bias")}
    return keys


@pytest.fixture(scope="module")
def tiny() -> MaskedAutoencoderViT:
    torch.manual_seed(0)
    return mae_vit_tiny_patch8_64().eval()


@pytest.fixture(scope="module")
def imgs() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- architecture and keys
def test_vit_base_keys_and_shapes_match_official():
    model = mae_vit_base_patch16()
    sd = model.state_dict()
    assert set(sd) == official_keys(12, 8)
    shapes = {"cls_token": (1, 1, 768), "pos_embed": (1, 197, 768), "mask_token": (1, 1, 512),
              "decoder_pos_embed": (1, 197, 512), "patch_embed.proj.weight": (768, 3, 16, 16),
              "blocks.0.attn.qkv.weight": (2304, 768), "blocks.11.mlp.fc1.weight": (3072, 768),
              "decoder_embed.weight": (512, 768), "decoder_blocks.7.attn.qkv.weight": (1536, 512),
              "decoder_pred.weight": (768, 512), "decoder_pred.bias": (768,)}  # 512 -> 16*16*3 pixels
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert model.blocks[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6 and model.decoder_norm.eps == 1e-6
    assert model.blocks[0].mlp.act.approximate == "none"
    assert model.blocks[0].attn.num_heads == 12 and model.decoder_blocks[0].attn.num_heads == 16


def test_init_as_official(tiny):
    assert torch.equal(tiny.blocks[0].attn.qkv.bias, torch.zeros_like(tiny.blocks[0].attn.qkv.bias))
    assert torch.equal(tiny.norm.weight, torch.ones_like(tiny.norm.weight))
    w = tiny.blocks[0].mlp.fc1.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))  # xavier_uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    pw = tiny.patch_embed.proj.weight.flatten(1)
    assert pw.abs().max() <= math.sqrt(6 / (pw.shape[0] + pw.shape[1]))
    expected = torch.from_numpy(get_2d_sincos_pos_embed(192, 8, cls_token=True)).float()[None]
    assert torch.equal(tiny.pos_embed, expected)


def test_build_mae_by_name_and_errors():
    assert build_mae("mae_vit_tiny_patch8_64", norm_pix_loss=True).norm_pix_loss
    with pytest.raises(ValueError, match="mae_vit_base_patch16"):
        build_mae("vit_b")
    with pytest.raises(TypeError, match="embed_dims"):
        build_mae("mae_vit_tiny_patch8_64", embed_dims=3)


# ---------------------------------------------------------------- masking
def test_masking_counts_restore_and_noise(tiny):
    N, L, D, ratio = 3, 64, 5, 0.75
    x = torch.randn(N, L, D)
    kept, mask, ids_restore = tiny.random_masking(x, ratio)
    len_keep = int(L * (1 - ratio))
    assert kept.shape == (N, len_keep, D)
    assert torch.equal(mask.sum(1), torch.full((N,), float(L - len_keep)))
    shuffled = torch.cat([kept, torch.zeros(N, L - len_keep, D)], 1)  # kept first, as the decoder does
    restored = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, D))
    assert torch.equal(restored * (1 - mask[..., None]), x * (1 - mask[..., None]))  # visible back in place

    noise = torch.rand(N, L)
    k1, m1, r1 = tiny.random_masking(x, ratio, noise)
    k2, m2, r2 = tiny.random_masking(x, ratio, noise.clone())
    assert torch.equal(m1, m2) and torch.equal(r1, r2) and torch.equal(k1, k2)
    ids_shuffle = noise.argsort(1)  # reference: lowest noise kept, official 0/1 flags unshuffled
    ref_mask = torch.ones(N, L)
    ref_mask[:, :len_keep] = 0
    ref_mask = torch.gather(ref_mask, 1, ids_shuffle.argsort(1))
    assert torch.equal(m1, ref_mask)
    assert torch.equal(k1, x[torch.arange(N)[:, None], ids_shuffle[:, :len_keep]])


def test_unmasked_encoder_equals_forward_features(tiny, imgs):
    with torch.no_grad():
        latent, mask, ids_restore = tiny.forward_encoder(imgs, mask_ratio=0.0)
        feats = tiny.forward_features(imgs)
    assert mask.sum() == 0 and feats.shape == (2, 65, 192)
    unshuffled = torch.gather(latent[:, 1:], 1, ids_restore[..., None].expand(-1, -1, 192))
    torch.testing.assert_close(unshuffled, feats[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(latent[:, 0], feats[:, 0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- loss
def ref_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """Row-major patches, each flattened as (row in patch, column in patch, channel)."""
    N, C, H, W = imgs.shape
    patches = [imgs[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].permute(0, 2, 3, 1).reshape(N, -1)
               for i in range(H // p) for j in range(W // p)]
    return torch.stack(patches, 1)


def test_patchify_layout_and_roundtrip(tiny, imgs):
    assert torch.equal(tiny.patchify(imgs), ref_patchify(imgs, 8))
    assert torch.equal(tiny.unpatchify(tiny.patchify(imgs)), imgs)


def test_loss_only_on_masked_patches(tiny, imgs):
    pred = torch.randn(2, 64, 192)
    _, mask, _ = tiny.forward_encoder(imgs, 0.75, torch.rand(2, 64))
    visible = (mask == 0)[..., None]
    base = tiny.forward_loss(imgs, pred, mask)
    # Changing the prediction at visible patches changes nothing; at a removed patch it does.
    assert torch.equal(tiny.forward_loss(imgs, torch.where(visible, pred + 5, pred), mask), base)
    assert tiny.forward_loss(imgs, torch.where(visible, pred, pred + 5), mask) != base
    # Changing the pixels of visible patches changes nothing in the target part of the loss.
    imgs2 = tiny.unpatchify(torch.where(visible, torch.randn(2, 64, 192), tiny.patchify(imgs)))
    assert torch.equal(tiny.forward_loss(imgs2, pred, mask), base)
    per_patch = ((pred - ref_patchify(imgs, 8)) ** 2).mean(-1)
    torch.testing.assert_close(base, per_patch[mask.bool()].mean())


def test_norm_pix_target_matches_hand_computation(imgs):
    model = mae_vit_tiny_patch8_64(norm_pix_loss=True)
    mask = torch.zeros(2, 64)
    mask[:, ::3] = 1
    pred = torch.zeros(2, 64, 192)
    target = ref_patchify(imgs, 8)
    mean = target.sum(-1, keepdim=True) / 192
    var = ((target - mean) ** 2).sum(-1, keepdim=True) / 191  # unbiased
    target = (target - mean) / torch.sqrt(var + 1e-6)
    expected = (target**2).mean(-1)[mask.bool()].mean()
    torch.testing.assert_close(model.forward_loss(imgs, pred, mask), expected)


# ---------------------------------------------------------------- numerics vs a plain reference
def ref_forward(sd: dict, imgs: torch.Tensor, noise: torch.Tensor, ratio: float, heads: int, dec_heads: int,
                p: int = 8, depth: int = 6, dec_depth: int = 2, norm_pix: bool = False):
    """Straightforward MAE forward from a state dict: manual LayerNorm, GELU and softmax attention."""
    def ln(x, pre):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-6) * sd[pre + ".weight"] + sd[pre + ".bias"]

    def lin(x, pre):
        return x @ sd[pre + ".weight"].T + sd[pre + ".bias"]

    def block(x, pre, h):
        B, T, C = x.shape
        q, k, v = lin(ln(x, pre + ".norm1"), pre + ".attn.qkv").split(C, -1)
        q, k, v = (t.reshape(B, T, h, C // h).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // h), -1)
        x = x + lin((att @ v).transpose(1, 2).reshape(B, T, C), pre + ".attn.proj")
        hid = lin(ln(x, pre + ".norm2"), pre + ".mlp.fc1")
        hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))
        return x + lin(hid, pre + ".mlp.fc2")

    N = imgs.shape[0]
    patches = ref_patchify(imgs, p)  # (N, L, p*p*3) in (row, col, channel) order
    w = sd["patch_embed.proj.weight"].permute(0, 2, 3, 1).reshape(sd["patch_embed.proj.weight"].shape[0], -1)
    x = patches @ w.T + sd["patch_embed.proj.bias"] + sd["pos_embed"][:, 1:]
    L = x.shape[1]
    len_keep = int(L * (1 - ratio))
    ids_shuffle = noise.argsort(1)
    ids_restore = ids_shuffle.argsort(1)
    rows = torch.arange(N)[:, None]
    x = x[rows, ids_shuffle[:, :len_keep]]
    mask = torch.ones(N, L)
    mask[:, :len_keep] = 0
    mask = mask[rows, ids_restore]
    x = torch.cat([(sd["cls_token"] + sd["pos_embed"][:, :1]).repeat(N, 1, 1), x], 1)
    for i in range(depth):
        x = block(x, f"blocks.{i}", heads)
    x = lin(ln(x, "norm"), "decoder_embed")
    y = torch.cat([x[:, 1:], sd["mask_token"].repeat(N, L - len_keep, 1)], 1)[rows, ids_restore]
    x = torch.cat([x[:, :1], y], 1) + sd["decoder_pos_embed"]
    for i in range(dec_depth):
        x = block(x, f"decoder_blocks.{i}", dec_heads)
    pred = lin(ln(x, "decoder_norm"), "decoder_pred")[:, 1:]
    target = patches
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return loss, pred, mask


@pytest.mark.parametrize("norm_pix", [False, True])
def test_matches_plain_reference(imgs, norm_pix):
    torch.manual_seed(3)
    model = mae_vit_tiny_patch8_64(norm_pix_loss=norm_pix).eval()
    with torch.no_grad():  # perturb zero-initialised biases/norms so every parameter matters
        for name, param in model.named_parameters():
            if "bias" in name or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loss, pred, mask = model(imgs, mask_ratio=0.75, noise=noise)
        loss2, _, mask2 = model(imgs, mask_ratio=0.75, noise=noise)
        ref_loss, ref_pred, ref_mask = ref_forward(model.state_dict(), imgs, noise, 0.75, 3, 4, norm_pix=norm_pix)
    assert torch.equal(mask, ref_mask) and torch.equal(mask, mask2) and torch.equal(loss, loss2)
    torch.testing.assert_close(pred, ref_pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_channels_last_and_backward(tiny, imgs):
    model = mae_vit_tiny_patch8_64()
    x = imgs.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, pred, mask = model(x, noise=torch.rand(2, 64))
    assert torch.isfinite(loss) and pred.shape == (2, 64, 192)
    loss.backward()
    assert model.pos_embed.grad is None and model.cls_token.grad is not None and model.mask_token.grad is not None


def test_bf16_attention_keeps_an_fp32_softmax_and_only_animate_takes_the_bf16_one():
    """The model's attention always rounds softmax(fp32) to bf16; only animate's InferenceAttention takes
    the bf16 softmax kernel (which rounds a few in a million differently)."""
    from animate.inference import InferenceAttention
    from mae_pretrain.models_mae import Attention

    torch.manual_seed(0)
    B, T, D, h = 4, 197, 128, 8
    attn = Attention(D, h).bfloat16()
    x = torch.randn(B, T, D).bfloat16()
    with torch.no_grad():
        qkv = attn.qkv(x).reshape(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)
        scores = (qkv[0] * (D // h) ** -0.5) @ qkv[1].transpose(-2, -1)
        fp32_softmax, bf16_softmax = scores.softmax(-1, dtype=torch.float32).bfloat16(), scores.softmax(-1)
        assert not torch.equal(fp32_softmax, bf16_softmax)  # this input tells the two apart ...
        expected = [attn.proj((w @ qkv[2]).transpose(1, 2).reshape(B, T, D)) for w in (fp32_softmax, bf16_softmax)]
        assert not torch.equal(*expected)  # ... in the output too
        assert torch.equal(attn(x), expected[0])
    with torch.inference_mode():
        assert torch.equal(attn(x), expected[0])
        assert torch.equal(InferenceAttention(attn)(x), expected[1])
    x.requires_grad_(True)
    assert torch.equal(attn(x).detach(), expected[0])


# ---------------------------------------------------------------- position embeddings
def test_conv_stem_tokens_and_mae_hides_masked_pixels_from_visible_tokens(imgs):
    torch.manual_seed(0)
    mae = build_mae("mae_vit_tiny_conv16_64").eval()
    assert mae.patch_embed(imgs).shape == (2, 16, 192)  # the linear stem's token grid
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(2))
    latent, mask, _ = mae.forward_encoder(imgs, 0.75, noise)
    assert mask.sum(1).tolist() == [12, 12]
    # any change to the masked patches' pixels leaves every visible token unchanged
    pixel_mask = mask.view(2, 1, 4, 1, 4, 1).expand(-1, 3, -1, 16, -1, 16).reshape(2, 3, 64, 64)
    other = torch.where(pixel_mask > 0, torch.randn_like(imgs) * 3, imgs)
    torch.testing.assert_close(mae.forward_encoder(other, 0.75, noise)[0], latent)
    # ... while a visible patch's pixels do reach its neighbours (the stem sees across borders)
    i = int(torch.nonzero(mask[0] == 0)[0])
    r, c = divmod(i, 4)
    bumped = imgs.clone()
    bumped[:, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16] += 1.0
    changed = (mae.patch_embed(bumped) - mae.patch_embed(imgs)).abs().amax(dim=(0, 2)) > 1e-6
    neighbours = [j for j in range(16) if max(abs(j // 4 - r), abs(j % 4 - c)) == 1]
    assert changed[i] and changed[neighbours].all()
    mae.train()  # training mode (batch statistics), bf16: gradients reach the first conv of the stem
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = mae(imgs, mask_ratio=0.75, noise=noise)
    loss.backward()
    assert mae.patch_embed.stem[0].weight.grad.abs().sum() > 0


def test_sincos_pos_embed_formula():
    G, D = 3, 8
    table = get_2d_sincos_pos_embed(D, G, cls_token=True)
    assert table.shape == (1 + G * G, D) and np.all(table[0] == 0)
    omega = 1.0 / 10000 ** (np.arange(D // 4) / (D // 4))
    for r in range(G):
        for c in range(G):
            expected = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)])
            np.testing.assert_allclose(table[1 + r * G + c], expected, atol=1e-6)


def test_interpolate_pos_embed_14_to_4():
    model = mae_vit_tiny_patch8_64(img_size=32)  # 4x4 grid
    cls = torch.randn(1, 1, 192)
    grid = torch.randn(1, 1, 192).expand(1, 196, 192)  # constant over the grid: bicubic keeps it
    sd = {"pos_embed": torch.cat([cls, grid], 1)}
    interpolate_pos_embed(model, sd)
    assert sd["pos_embed"].shape == (1, 17, 192)
    assert torch.equal(sd["pos_embed"][:, :1], cls)
    torch.testing.assert_close(sd["pos_embed"][:, 1:], grid[:, :16], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- checkpoint loading
def test_load_encoder_only_official_file(tiny, tmp_path):
    enc_keys = official_keys(6, 2, decoder=False)
    sd = {f"module.{k}": v.clone() + 1 for k, v in tiny.state_dict().items() if k in enc_keys}
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model="mae_vit_tiny_patch8_64", blr=1.5e-4),
                "epoch": 3, "optimizer": {"state": {}, "param_groups": []}}, path)
    model = mae_vit_tiny_patch8_64()
    missing, unexpected = load_mae_checkpoint(model, path)
    assert unexpected == []
    assert set(missing) == official_keys(6, 2) - enc_keys  # exactly the decoder, no encoder key
    torch.testing.assert_close(model.blocks[5].mlp.fc2.weight, tiny.blocks[5].mlp.fc2.weight + 1)


def test_load_full_file_with_prefixes_and_resized_grid(tiny, tmp_path):
    path = tmp_path / "full.pth"
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in tiny.state_dict().items()}}, path)
    model = mae_vit_tiny_patch8_64(img_size=32)  # 8x8 checkpoint grid -> 4x4
    assert load_mae_checkpoint(model, path) == ([], [])
    torch.testing.assert_close(model.cls_token, tiny.cls_token)
    assert model.pos_embed.shape == (1, 17, 192) and model.decoder_pos_embed.shape == (1, 17, 128)


def test_wrong_file_raises_clear_error(tmp_path):
    model = mae_vit_tiny_patch8_64()
    wrong = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(ValueError, match="resnet.pth.*no MAE encoder key"):
        load_mae_checkpoint(model, wrong)
    bad_shape = tmp_path / "vit_b.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 768)}}, bad_shape)
    with pytest.raises(ValueError, match="cls_token"):
        load_mae_checkpoint(model, bad_shape)
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(RuntimeError, match="notes.pth"):
        load_mae_checkpoint(model, garbage)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_mae_checkpoint(model, tmp_path / "missing.pth")
