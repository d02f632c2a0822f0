"""Every stage's loss computes in at least float32 and never downcasts: float64 stays float64 (so float64
gradient checks can pass), bf16 is promoted."""
from __future__ import annotations

import pytest
import torch

from common.device import at_least_fp32
from emb2rig.losses import LossConfig, perceptual_distance
from rig2img.losses import compute_losses as rig2img_losses


@pytest.mark.parametrize("dtype, want", [(torch.float64, torch.float64), (torch.bfloat16, torch.float32),
                                         (torch.float32, torch.float32)])
def test_losses_keep_at_least_fp32(dtype, want):
    assert at_least_fp32(torch.zeros(2, dtype=dtype)).dtype == want
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 8, dtype=dtype), torch.rand(2, 3, 8, 8, dtype=dtype)
    region = torch.zeros(2, 1, 8, 8)
    region[..., 2:6, 2:6] = 1
    out = rig2img_losses(pred, target, region.to(dtype), 1.0, 10.0)
    assert out["loss"].dtype == want
    for kind in ("embedding", "feature", "unit_feature"):
        f, e = torch.randn(4, 24, dtype=dtype), torch.randn(4, 16, dtype=dtype)
        d = perceptual_distance(f, e, f.flip(0), e.flip(0), LossConfig(perceptual=kind))
        assert d.dtype == want


def test_rig2img_and_perceptual_losses_pass_float64_gradcheck():
    torch.manual_seed(0)
    target, region = torch.rand(1, 3, 4, 4, dtype=torch.float64), torch.ones(1, 1, 4, 4, dtype=torch.float64)
    pred = torch.rand(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: rig2img_losses(p, target, region, 1.0, 10.0)["loss"], (pred,))
    f = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    e, f_in, e_in = (torch.randn(3, n, dtype=torch.float64) for n in (4, 6, 4))
    cfg = LossConfig(perceptual="unit_feature")
    assert torch.autograd.gradcheck(lambda x: perceptual_distance(x, e, f_in, e_in, cfg), (f,))
