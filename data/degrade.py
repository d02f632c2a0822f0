"""What real footage does to a face photo, at set strengths: for measuring robustness (scripts/claims.py).

    photo = degrade(Image.open("face.png"), "blur", 1.5, seed=7)

Each degradation acts on the whole photo, before the face crop, as the camera would:
  blur        Gaussian blur, `strength` = sigma in pixels of the photo
  jpeg        JPEG round trip, `strength` = quality (lower is stronger)
  noise       additive Gaussian sensor noise, `strength` = sigma in [0, 1] intensity units
  low_light   exposure gain `strength` (< 1 darkens), then 8-bit quantisation
  low_res     downscale by `strength` (area), back up bilinearly: a face with 1/strength of the pixels
  rotation    in-plane rotation by `strength` degrees (counter-clockwise) about `center` (normalised x, y;
              default the photo's centre; give the face box's centre, as a face tracker would re-centre)
`seed` fixes the noise; every other degradation is deterministic.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

# two strengths each (milder, stronger), the ones scripts/claims.py reports
STRENGTHS = {"blur": (1.0, 2.0), "jpeg": (30, 10), "noise": (0.03, 0.08), "low_light": (0.4, 0.2),
             "low_res": (2, 4), "rotation": (10.0, 25.0)}


def degrade(img: Image.Image, kind: str, strength: float, seed: int = 0,
            center: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """`img` (RGB) degraded by `kind` at `strength` (see the module text); same size and mode."""
    img = img.convert("RGB")
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(float(strength)))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(strength))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "noise":
        x = np.asarray(img, np.float32) / 255
        x = x + np.random.default_rng(seed).normal(0.0, float(strength), x.shape).astype(np.float32)
        return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8))
    if kind == "low_light":
        x = np.asarray(img, np.float32) * float(strength)
        return Image.fromarray(np.round(np.clip(x, 0, 255)).astype(np.uint8))
    if kind == "low_res":
        w, h = img.size
        small = img.resize((max(1, round(w / strength)), max(1, round(h / strength))), Image.Resampling.BOX)
        return small.resize((w, h), Image.Resampling.BILINEAR)
    if kind == "rotation":
        return _rotate(img, float(strength), center)
    raise ValueError(f"unknown degradation {kind!r}; choose one of {sorted(STRENGTHS)}")


def _rotate(img: Image.Image, degrees: float, center: tuple[float, float]) -> Image.Image:
    """Rotate about `center`; the corners that come in take the nearest border pixel (a real tilted
    head has background there, not black)."""
    w, h = img.size
    pad = max(w, h)
    arr = np.pad(np.asarray(img), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    big = Image.fromarray(arr).rotate(degrees, resample=Image.Resampling.BILINEAR,
                                      center=(pad + center[0] * w, pad + center[1] * h))
    return big.crop((pad, pad, pad + w, pad + h))
