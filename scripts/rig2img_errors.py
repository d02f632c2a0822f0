"""Where a trained renderer errs: its held-out L1 inside the eye/mouth boxes, outside them, and over the
pixels that move, per avatar, with a picture of the mean error.

    python scripts/rig2img_errors.py outputs/demo/rig2img/checkpoint-best.pth outputs/demo/world/avatars

A whole-image error is mostly the error of pixels that never change (background, the back of the head),
which any renderer learns; this splits it. A pixel "moves" when its ground truth varies over the held-out
rows (standard deviation of its RGB mean above `--moving`, in [0, 1] units). Prints one JSON object per
avatar and writes `<out>/<avatar>_error.png`: mean absolute error, brightest = the largest, boxes outlined.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.checkpoint import load_checkpoint  # noqa: E402
from data.avatars import AvatarRigDataset, box_mask, load_avatars  # noqa: E402
from rig2img import load_renderer  # noqa: E402


@torch.no_grad()
def error_maps(renderer, dataset: AvatarRigDataset, avatar: int, batch_size: int = 128):
    """Per-pixel mean absolute error and ground-truth standard deviation over the avatar's held-out rows,
    both (H, W) with the three colours averaged."""
    rows = dataset.indices_of(avatar).tolist()
    err_sum, t_sum, t_sq = 0.0, 0.0, 0.0
    for i in range(0, len(rows), batch_size):
        b = dataset.__getitems__(rows[i:i + batch_size])
        target = b["image"].float().div(255.0)  # (B, 3, H, W) uint8 -> [0, 1]
        pred = renderer.render_padded(b["rig"], b["avatar"])
        err_sum = err_sum + (pred - target).abs().mean(1).sum(0)  # (H, W)
        grey = target.mean(1)  # (B, H, W)
        t_sum, t_sq = t_sum + grey.sum(0), t_sq + grey.square().sum(0)
    n = len(rows)
    std = (t_sq / n - (t_sum / n).square()).clamp_min(0).sqrt()
    return err_sum / n, std


def summarise(err: torch.Tensor, std: torch.Tensor, boxes: torch.Tensor, moving: float) -> dict:
    """The mean error over the image, the boxes, outside them, and the moving / still pixels outside them."""
    move = std > moving
    return {"image_l1": err.mean().item(), "box_l1": err[boxes].mean().item(), "outside_l1": err[~boxes].mean().item(),
            "moving_l1": err[move].mean().item() if move.any() else float("nan"),
            "moving_outside_l1": err[move & ~boxes].mean().item() if (move & ~boxes).any() else float("nan"),
            "still_share": 1.0 - move.float().mean().item(), "box_share": boxes.float().mean().item(),
            "box_share_of_motion": (std[boxes].sum() / std.sum().clamp_min(1e-12)).item()}


def save_map(err: torch.Tensor, boxes: list[list[float]], path: Path, scale: int = 4) -> None:
    """PNG of the (H, W) error map, scaled so its largest error is white, `scale`x enlarged, boxes outlined."""
    size = err.shape[-1]
    img = (err / err.max().clamp_min(1e-12) * 255).round().to(torch.uint8).numpy()
    pic = Image.fromarray(img).resize((size * scale, size * scale), Image.NEAREST).convert("RGB")
    draw = ImageDraw.Draw(pic)
    for box in boxes:
        draw.rectangle([v * size * scale for v in box], outline=(255, 80, 0))
    pic.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="a stage-3a checkpoint (checkpoint-best.pth)")
    ap.add_argument("data_root", type=Path, help="the avatar folders it was trained on")
    ap.add_argument("--val-fraction", type=float, default=None,
                    help="share of rows held out (default: the training run's val_fraction, from the checkpoint)")
    ap.add_argument("--moving", type=float, default=0.01, help="a pixel moves above this ground-truth std")
    ap.add_argument("--out", type=Path, default=None, help="folder of the error maps (default: the checkpoint's)")
    args = ap.parse_args()
    renderer = load_renderer(args.checkpoint)
    val_fraction = args.val_fraction or load_checkpoint(args.checkpoint)["config"]["val_fraction"]
    avatars = load_avatars(args.data_root, renderer.avatar_names)
    dataset = AvatarRigDataset(avatars, renderer.image_size, "val", val_fraction)
    out = args.out or args.checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(avatars):
        err, std = error_maps(renderer, dataset, k)
        boxes = box_mask(a.boxes, renderer.image_size)[0].bool()  # (H, W)
        row = {"avatar": a.name, "held_out": len(dataset.indices_of(k)),
               **{key: round(v, 5) for key, v in summarise(err, std, boxes, args.moving).items()}}
        save_map(err, a.boxes, out / f"{a.name}_error.png")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
