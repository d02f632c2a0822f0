"""Drive every avatar of a trained stage-3b checkpoint from a video or a folder of images.

    python scripts/animate.py clip.mp4 --pretrained outputs/demo/emb2rig/checkpoint-best.pth --out outputs/clip
    python scripts/animate.py clip.mp4 --pretrained CKPT --config configs/configs_emb2rig_multi.yaml precision=bf16

Same as `python train_emb2rig_multichar.py CONFIG mode=test pretrained=CKPT test.input=INPUT test.out_dir=OUT`;
extra `key=value` arguments override the config (e.g. `test.max_frames=100 test.preview=false`).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from common.config import cli  # noqa: E402
from emb2rig.config import Emb2RigConfig  # noqa: E402
from emb2rig.test_mode import run_test_mode  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", help="video file or folder of images")
    ap.add_argument("--pretrained", required=True, help="stage-3b checkpoint (checkpoint-best.pth)")
    ap.add_argument("--out", default="", help="output folder (default <output_dir>/test/<input name>)")
    ap.add_argument("--config", default="configs/demo/emb2rig.yaml", help="stage-3b YAML (encoder, renderer)")
    args, overrides = ap.parse_known_args()
    run_test_mode(cli(Emb2RigConfig, argv=[args.config, "mode=test", f"pretrained={args.pretrained}",
                                           f"test.input={args.input}", f"test.out_dir={args.out}", *overrides]))
