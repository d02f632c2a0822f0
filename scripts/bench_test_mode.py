"""Benchmark animate (stage-3b test mode) end to end at the paper's sizes, with random weights.

    python scripts/bench_test_mode.py [--frames 96] [--batch 16] [--precisions fp32 bf16] [--out bench.json]
    python scripts/bench_test_mode.py --precisions bf16 --quantize none int8   # the int8 encoder, side by side

Builds the real classes with random init: the ViT-B/16 expression encoder at 224 px
(`expression_finetune`), a 'paper' 256 px DCGAN renderer with three avatars (12/18/26 controls,
`rig2img`) and the paper-size rig decoder (512 wide, 2 blocks). Then it times the real test-mode
pipeline (`animate.main.animate`) on the first `--frames` frames of WolfgangLanger_Pexels.mp4
(fetched by scripts/fetch_test_videos.py; else synthetic frames with a fixed fake face box): decode ->
detect / track / crop -> batched encode -> decode rigs -> smooth -> render each avatar once per frame
-> write CSVs + H.264 preview. For each precision it prints end-to-end fps, seconds per step, and the
encoder alone (same batch, same precision, same run) so a loaded machine can be read as a ratio.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from animate.config import QUANTIZE, AnimateSettings  # noqa: E402
from animate.inference import prepare  # noqa: E402
from animate.main import animate, auto_precision  # noqa: E402
from animate.models import Models  # noqa: E402
from animate.sources import open_source  # noqa: E402
from common.device import autocast, setup_cpu  # noqa: E402
from data.face_detect import Box, build_detector  # noqa: E402
from emb2rig.frozen import Frozen  # noqa: E402
from emb2rig.models import DecoderConfig, build_model  # noqa: E402
from expression_finetune import ExpressionEncoder, build_expression_vit  # noqa: E402
from rig2img.models import build_renderer, preset  # noqa: E402
from rig2img.renderer import Renderer  # noqa: E402

NAMES, SIZES = ["robot", "cat", "alien"], [12, 18, 26]


class CentreBox:
    """Stand-in detector for synthetic frames: one fixed face box in the middle."""
    name = "fixed-box"

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        return [Box(w * 0.35, h * 0.2, w * 0.65, h * 0.75, 1.0)]


def build_models(device) -> Models:
    """Paper-size models with random weights (speed does not depend on the weights)."""
    torch.manual_seed(0)
    encoder = ExpressionEncoder(build_expression_vit("mae_vit_base_patch16")).to(device)
    controls = [[f"{n}_{i}" for i in range(k)] for n, k in zip(NAMES, SIZES)]
    rcfg = preset("paper")
    renderer = Renderer(build_renderer(SIZES, rcfg), NAMES, dict(zip(NAMES, controls)), rcfg).to(device)
    frozen = Frozen(encoder, renderer, NAMES, controls)
    model = build_model(torch.randn(3, encoder.feature_dim), SIZES, DecoderConfig()).to(device).eval()
    return Models(model, frozen, NAMES, controls, 0.3, "", "", "random weights")


def synthetic_video(path: Path, n: int) -> Path:
    from data.video import write_video
    rng = np.random.default_rng(0)
    write_video(path, (rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(n)), fps=25)
    return path


@torch.inference_mode()
def encoder_alone(frozen, batch, precision, device, reps=3) -> float:
    """Images/s of the encoder alone on (batch, 3, 224, 224) inputs in [0, 1]."""
    x = torch.rand(batch, 3, 224, 224, device=device)
    with autocast(device, precision):
        frozen.encode(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            frozen.encode(x)
    return batch * reps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--expression-distance-every", type=int, default=AnimateSettings.expression_distance_every,
                    help="re-encode the renders on every k-th frame (default: test mode's)")
    ap.add_argument("--quantize", nargs="+", default=["none"], choices=QUANTIZE,
                    help="encoder settings to time, e.g. --quantize none int8 (int8: CPU only)")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="leave glibc's malloc at its defaults")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "int8" in args.quantize and device.type != "cpu":
        ap.error("--quantize int8 runs on CPU only")
    setup_cpu(device, int(os.environ.get("BENCH_THREADS", 0)), malloc=not args.no_malloc_tuning)  # as animate
    from scripts.fetch_test_videos import available
    tmp = Path(tempfile.mkdtemp(prefix="bench_test_mode_"))
    video = available().get("WolfgangLanger_Pexels.mp4")
    cfg = AnimateSettings(batch_size=args.batch, max_frames=args.frames,
                          expression_distance_every=args.expression_distance_every)
    detector = build_detector(cfg.detector.name, cfg.detector) if video else CentreBox()  # test mode's settings
    video = video or synthetic_video(tmp / "synthetic.mp4", args.frames)
    bf16_ok = auto_precision("auto", device) == "bf16"  # native bf16, as animate decides
    results = {"load_before": os.getloadavg(), "video": str(video), "detector": detector.name,
               "detector_max_side": cfg.detector.max_side, "expression_distance_every": cfg.expression_distance_every,
               "malloc_tuned": device.type == "cpu" and not args.no_malloc_tuning,
               "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "bf16_hardware": bf16_ok, "runs": {}}
    for prec, quantize in itertools.product(args.precisions, args.quantize):
        if prec == "bf16" and not bf16_ok:
            print("skipping bf16: this CPU has no native bf16 (it would be emulated, slower than fp32)")
            continue
        label = prec + (" + int8 encoder" if quantize == "int8" else "")
        models = build_models(device)  # fresh: animate changes the frozen weights per setting
        prepare(models.frozen, prec, quantize)
        cfg.quantize = quantize
        warm = AnimateSettings(batch_size=args.batch, max_frames=args.batch, crop=cfg.crop, quantize=quantize)
        animate(open_source(video), models, detector, warm, device, prec, tmp / f"warm_{prec}_{quantize}")
        s = animate(open_source(video), models, detector, cfg, device, prec, tmp / f"{prec}_{quantize}")
        enc = encoder_alone(models.frozen, args.batch, prec, device)
        results["runs"][label] = {"fps": s["fps"], "frames": s["frames"], "faces_found": s["faces_found"],
                                  "seconds_per_step": s["seconds_per_step"], "encoder_alone_img_s": round(enc, 2),
                                  "fps_over_encoder_alone": round(s["fps"] / enc, 3), "load": os.getloadavg()}
        steps = ", ".join(f"{k} {1000 * v / s['frames']:.1f}" for k, v in s["seconds_per_step"].items())
        print(f"[{label}] {s['fps']:.2f} fps end to end ({s['frames']} frames, {s['faces_found']} with a face); "
              f"encoder alone {enc:.2f} img/s (ratio {s['fps'] / enc:.2f}); ms/frame: {steps}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
