"""Embed face images with a trained stage-2 encoder; optionally plot a 2-D projection by label.

    python scripts/embed.py outputs/demo/expression/checkpoint-best.pth outputs/demo/world/faces/test \
        --out outputs/demo/expression/embeddings_test.npz \
        --labels outputs/demo/world/eval/test_actors.csv --label-argmax     # colour = dominant AU

Images in a folder with a `face_boxes.csv` (`data.face_track`) are cropped to the square face crop
with the margin the encoder was trained with (`--margin` to override), as every stage frames faces.
Writes an .npz with `paths`, `emb` (N, 16) and `feat` (N, D). With `--labels CSV` (an `image` or
`path` column matched to the inputs by path suffix) it also writes `<out>.png`: the embeddings
projected on their first two principal components, coloured by `--label-column` (e.g. `class`) or,
with `--label-argmax`, by the name of the largest numeric column (the demo world's dominant AU);
the title gives the 1-nearest-neighbour label agreement in the full embedding space.
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.face_track import read_face_boxes  # noqa: E402
from data.images import list_images  # noqa: E402
from data.triplets import ImageListDataset  # noqa: E402
from expression_finetune import load_encoder  # noqa: E402


def read_labels(path: Path, column: str | None, argmax: bool, floor: float = 0.25) -> dict[str, str]:
    """{image path as written in the CSV: label}; with `argmax`, rows whose largest value is below
    `floor` are labelled '(none)' (near-neutral faces have no dominant AU)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    key = "image" if "image" in rows[0] else "path"
    if argmax:
        numeric = [c for c in rows[0] if c != key and _is_float(rows[0][c])]
        top = {r[key]: max(numeric, key=lambda c: float(r[c])) for r in rows}
        return {r[key]: top[r[key]] if float(r[top[r[key]]]) >= floor else "(none)" for r in rows}
    if column not in rows[0]:
        raise SystemExit(f"error: {path} has no column '{column}'; columns: {', '.join(rows[0])}")
    return {r[key]: r[column] for r in rows}


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def match(paths: list[Path], labels: dict[str, str]) -> list[str | None]:
    """Label of each path: the CSV entry that equals one of the path's suffixes (a/b.png, b.png, ...)."""
    return [next((labels[k] for k in ("/".join(p.parts[-n:]) for n in range(len(p.parts), 0, -1)) if k in labels),
                 None) for p in paths]


def plot(emb: np.ndarray, labels: list[str], png: Path) -> float:
    """PCA scatter coloured by label; returns the 1-NN label agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = emb - emb.mean(0)
    xy = x @ np.linalg.svd(x, full_matrices=False)[2][:2].T  # (N, 2) first two principal components
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    lab = np.array(labels)
    nn_agree = float((lab[d.argmin(1)] == lab).mean())
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for i, name in enumerate(sorted(set(labels))):
        m = lab == name
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=plt.cm.tab20(i % 20), label=f"{name} ({m.sum()})")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_title(f"{len(lab)} embeddings, PCA of {emb.shape[1]}-d; 1-NN label agreement {nn_agree:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return nn_agree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="stage-2 checkpoint (checkpoint-best.pth)")
    ap.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    ap.add_argument("--out", default="embeddings.npz")
    ap.add_argument("--labels", type=Path, help="CSV with an image/path column and label columns")
    ap.add_argument("--label-column", default="class")
    ap.add_argument("--label-argmax", action="store_true", help="label = name of the largest numeric column")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--margin", type=float, default=None,
                    help="face-crop margin for folders with a face_boxes.csv (default: the encoder's)")
    a = ap.parse_args()
    paths = [p for i in a.inputs for p in (list_images(i) if Path(i).is_dir() else [Path(i)])]
    boxes = read_face_boxes([i for i in a.inputs if Path(i).is_dir()])
    enc = load_encoder(a.checkpoint)
    margin = a.margin if a.margin is not None else enc.crop_margin
    if boxes:
        print(f"{sum(p in boxes for p in paths)}/{len(paths)} images have a face box; crop margin {margin}")
    items = [(p, boxes.get(p)) for p in paths]
    loader = torch.utils.data.DataLoader(ImageListDataset(items, enc.preprocess, margin), a.batch_size)
    with torch.no_grad():
        feat, emb = (torch.cat(t).numpy() for t in zip(*(enc(x) for x in loader)))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, paths=np.array([str(p) for p in paths]), emb=emb, feat=feat)
    print(f"wrote {out}: {len(paths)} images, emb {emb.shape}, feat {feat.shape}")
    if a.labels:
        labels = match(paths, read_labels(a.labels, a.label_column, a.label_argmax))
        keep = [i for i, lab in enumerate(labels) if lab is not None]
        print(f"{len(keep)}/{len(paths)} images have a label in {a.labels}")
        if len(keep) < 3:
            return
        agree = plot(emb[keep], [labels[i] for i in keep], out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')} (1-NN label agreement {agree:.3f})")


if __name__ == "__main__":
    main()
