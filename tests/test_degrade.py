"""data.degrade: each degradation changes the photo, more at its stronger setting, deterministically."""
import numpy as np
import pytest
from PIL import Image

from data.degrade import STRENGTHS, degrade


def photo() -> Image.Image:
    y, x = np.mgrid[:96, :96]
    img = np.stack([x * 2, y * 2, 128 + 60 * np.sin(x / 5) * np.cos(y / 7)], -1)
    img[30:40, 20:76] = 250  # a sharp bar: blur, resolution and rotation show on it
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("kind", sorted(STRENGTHS))
def test_each_degradation_changes_the_photo_more_when_stronger(kind):
    img = photo()
    ref = np.asarray(img, np.float32)
    diffs = []
    for s in STRENGTHS[kind]:
        out = degrade(img, kind, s, seed=3)
        assert out.size == img.size and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(degrade(img, kind, s, seed=3)))  # deterministic
        diffs.append(np.abs(np.asarray(out, np.float32) - ref).mean())
    assert 0 < diffs[0] < diffs[1], diffs


def test_rotation_turns_about_the_given_centre_and_unknown_kinds_are_refused():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[13:20, 45:52] = 255  # a block around (48, 16)
    out = np.asarray(degrade(Image.fromarray(arr), "rotation", 45, center=(0.75, 0.25)))
    assert out[16, 48].min() == 255 and out[13, 45].max() < 255  # the centre stays put, a corner moves
    assert np.asarray(degrade(Image.fromarray(arr), "rotation", 45))[16, 48].max() == 0  # about the middle: it moves
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(Image.fromarray(arr), "fog", 1)


def test_camera_augmentation_is_fixed_by_torch_seed_and_p():
    import torch

    from expression_finetune.transforms import CameraDegradation

    img = photo()
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append([np.asarray(CameraDegradation(1.0)(img)) for _ in range(6)])
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))  # same seed, same draws
    assert not all(np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))
    assert sum(not np.array_equal(o, np.asarray(img)) for o in outs[0]) >= 5  # p = 1: (nearly) always changed
    assert np.array_equal(np.asarray(CameraDegradation(0.0)(img)), np.asarray(img))
