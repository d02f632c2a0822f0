"""Scoring triplet files: the validation / test sets of a run, and `mode=eval` for any encoder checkpoint.

    python train.py configs/demo/expression.yaml mode=eval pretrained=outputs/demo/expression/checkpoint-best.pth \
        test_csv=triplets/fec_test.csv
    python train.py configs/mae_train_expemb.yaml mode=eval pretrained=epoch_90_acc_0.8736.pth precision=fp32 \
        data_root=data/fec test_csv=faceexp-comparison-data-test-public.csv format=fec url_map=url_map.csv

`mode=eval` loads `pretrained` (our stage-2 checkpoint, or the official raw state dict with `main.` keys),
scores `test_csv` with the official rule (overall and per type, see `losses.py`), prints the result
and writes it to `output_dir/eval_<test file name>.json`, with the rows of the file that were skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint
from common.dist import DistInfo, cleanup, init_distributed
from common.run import write_json
from data.triplets import TYPE_INDEX, HeldOutImages, read_triplets, unique_images
from expression_finetune.config import ExpressionConfig
from expression_finetune.engine import evaluate
from expression_finetune.losses import margin_tensor
from expression_finetune.models import ExpressionViT, build_expression_vit, load_pretrained
from expression_finetune.transforms import eval_transform


@dataclass
class TripletSet:
    """A triplet file ready for `engine.evaluate`.

    Attributes:
        path: the file; images: its distinct (cropped) images with the eval transform (unreadable ones flagged);
        index: (T, 3) rows into `images` (anchor, positive, negative); types: (T,) type indices;
        skipped: {reason: rows of the file left out}.
    """

    path: Path
    images: HeldOutImages
    index: torch.Tensor
    types: torch.Tensor
    skipped: dict[str, int]


def read_triplet_set(cfg: ExpressionConfig, csv: str, size: int) -> TripletSet:
    """Read `csv` (relative to `data_root`, in `cfg.format`) as a `TripletSet` of `size` px images."""
    root = Path(cfg.data_root)
    recs = read_triplets(root / csv, root, cfg.format, root / cfg.url_map if cfg.url_map else None)
    if not recs:
        raise ValueError(f"{root / csv}: no triplets left to score (see the [triplets] line above)")
    items, index = unique_images(recs)
    types = torch.tensor([TYPE_INDEX[r.type] for r in recs], dtype=torch.long)
    return TripletSet(root / csv, HeldOutImages(items, eval_transform(size), cfg.crop_margin), index, types,
                      recs.skipped)


def score(model: ExpressionViT, ts: TripletSet, cfg: ExpressionConfig, info: DistInfo) -> dict:
    """Score a `TripletSet`: {'triplet_acc', 'per_type', 'n_per_type', 'n_triplets', 'loss', 'skipped',
    'rows_skipped', 'file'} (accuracy with the official rule; the loss with the configured distance).
    Triplets with an unreadable image are not scored; `skipped` counts them as 'with unreadable images'."""
    stats = evaluate(model, ts.images, ts.index, ts.types, margin_tensor(cfg.margins, info.device), info,
                     num_workers=cfg.num_workers, precision=cfg.precision, distance=cfg.distance)
    n_bad = stats["val/skipped_triplets"]
    skipped = {**ts.skipped, "with unreadable images": n_bad} if n_bad else ts.skipped
    return {"file": str(ts.path), "triplet_acc": stats["val/acc"], "per_type": stats["per_type"],
            "n_per_type": stats["n_per_type"], "n_triplets": len(ts.types) - n_bad, "loss": stats["val/loss"],
            "skipped": skipped, "rows_skipped": sum(skipped.values())}


def describe(res: dict) -> str:
    """One line: overall and per-type accuracy, triplet and skipped-row counts."""
    per = ", ".join(f"{t.split('_')[0]} {a:.4f}" for t, a in res["per_type"].items() if a is not None)
    why = ", ".join(f"{n} {k}" for k, n in res["skipped"].items())
    return (f"triplet accuracy {res['triplet_acc']:.4f} ({per}) on {res['n_triplets']} triplets of {res['file']}; "
            f"rows skipped: {res['rows_skipped']}" + (f" ({why})" if why else ""))


def load_scoring_model(cfg: ExpressionConfig) -> tuple[ExpressionViT, str, dict]:
    """(model, preset name, key report) of the encoder in `cfg.pretrained`, embedding head included. Our
    checkpoints rebuild the architecture from their stored config; other files (the official stage-2
    one) use `cfg.model` / `cfg.emb_dim`."""
    ck = load_checkpoint(cfg.pretrained)
    saved = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    name = saved.get("model", cfg.model)
    model = build_expression_vit(name, saved.get("emb_dim", cfg.emb_dim))
    report = load_pretrained(model, ck, name=str(cfg.pretrained))
    if report["new"] or report["missing_encoder"]:
        raise ValueError(f"{cfg.pretrained}: lacks {report['new'] + report['missing_encoder']} (a stage-1 file has "
                         "no embedding head): mode=eval needs a stage-2 checkpoint (ours or the official one)")
    return model, name, report


def run_eval(cfg: ExpressionConfig) -> dict:
    """`mode=eval`: score `cfg.pretrained` on `cfg.test_csv`; returns (and writes) the result."""
    info = init_distributed(cfg.device)
    model, name, report = load_scoring_model(cfg)
    ts = read_triplet_set(cfg, cfg.test_csv, model.image_size)
    res = {"checkpoint": str(cfg.pretrained), "model": name, **score(model.to(info.device), ts, cfg, info),
           "init_report": report}
    out = Path(cfg.output_dir) / f"eval_{ts.path.stem}.json"
    if info.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, res)
        print(f"[eval] {cfg.pretrained}: {describe(res)} -> {out}")
    cleanup()
    return res
