"""What animate's int8 encoder (`quantize: int8`) changes, next to its bf16 encoder.

    python scripts/compare_int8.py configs/demo/expression.yaml outputs/demo/expression/checkpoint-best.pth \
        --decoder outputs/demo/emb2rig/checkpoint-best.pth [config overrides]

Loads a stage-2 checkpoint twice and prepares it as animate runs it in bf16 (`animate.inference.prepare_encoder`,
under bf16 autocast): with bf16 weights, and as int8 with a bf16 attention core. On the
config's held-out triplets it prints the triplet accuracy of each, the cosine between their embeddings
of the same images and, with `--decoder`, the mean absolute difference between the rigs a stage-3b
decoder makes from their features, per avatar.
CPU only (the int8 kernels are).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from animate.inference import prepare_encoder  # noqa: E402
from common.config import load_config  # noqa: E402
from common.device import setup_cpu  # noqa: E402
from common.dist import DistInfo  # noqa: E402
from emb2rig.models import load_decoder  # noqa: E402
from expression_finetune import load_encoder  # noqa: E402
from expression_finetune.config import ExpressionConfig  # noqa: E402
from expression_finetune.engine import embed_images  # noqa: E402
from expression_finetune.losses import accuracy_from_counts, triplet_correct, type_counts  # noqa: E402
from expression_finetune.main import build_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="the stage-2 config (held-out triplets: data_root, val_csv)")
    ap.add_argument("checkpoint", help="stage-2 checkpoint-best.pth")
    ap.add_argument("--decoder", default="", help="a stage-3b checkpoint trained on this encoder")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_intermixed_args()
    setup_cpu(torch.device("cpu"))
    cfg = load_config(ExpressionConfig, [args.config, *args.overrides])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    encoders = {q: prepare_encoder(load_encoder(args.checkpoint), "bf16", q) for q in ("none", "int8")}
    encoders["bf16"] = encoders.pop("none")
    _, (images, index, types) = build_data(cfg, info, encoders["bf16"].image_size)
    feats, embs = {}, {}
    for name, enc in encoders.items():
        with torch.inference_mode():  # as animate runs the encoder
            embs[name], feats[name] = embed_images(enc, images, info, precision="bf16", features=True)
        acc = accuracy_from_counts(type_counts(triplet_correct(embs[name][index]), types))  # as stage 2 evaluates
        per_type = ", ".join(f"{t.split('_')[0]} {v:.3f}" for t, v in acc["per_type"].items() if v is not None)
        print(f"[{name}] held-out triplet accuracy {acc['triplet_acc']:.4f} ({per_type}) on {len(types)} triplets")
    cos = F.cosine_similarity(embs["int8"], embs["bf16"])
    print(f"embedding cosine int8 vs bf16 over {len(cos)} images: mean {cos.mean():.5f}, min {cos.min():.5f}")
    if args.decoder:
        model, meta = load_decoder(args.decoder)
        with torch.inference_mode():
            rigs = {name: torch.stack([model(f, torch.full((len(f),), a)) for a in range(len(meta["avatars"]))])
                    for name, f in feats.items()}  # (A, N, max_n)
        for a, (avatar, ctrl) in enumerate(zip(meta["avatars"], meta["controls"])):
            diff = (rigs["int8"][a, :, :len(ctrl)] - rigs["bf16"][a, :, :len(ctrl)]).abs()
            print(f"rig |int8 - bf16| {avatar}: mean {diff.mean():.4f}, 99th percentile {diff.quantile(0.99):.4f}")


if __name__ == "__main__":
    main()
