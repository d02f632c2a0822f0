"""Everything animate runs, from one stage-3b checkpoint: the decoder, and the frozen encoder and renderer
it was trained through, checked to be the same networks before any frame is read.

    models = load_models("outputs/demo/emb2rig/checkpoint-best.pth", device=torch.device("cpu"))
    models.decoder, models.frozen, models.names, models.controls, models.crop_margin

The checkpoint names the stage-2 encoder and stage-3a renderer files it was trained with (its config);
`encoder=` / `renderer=` override them (a moved file, another machine). Stage 3b also stores each
avatar's reference rig, the reference render the renderer made of it, and the encoder's features of
that render (the identity encoder's input). Here the renderer draws the reference rigs again and the
encoder encodes the stored renders again: a renderer or encoder other than the trained one draws or
encodes differently and is refused, naming both files and what differs. Checkpoints written before
the references were stored can be checked for shapes only, and a warning says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from emb2rig.frozen import Frozen
from emb2rig.models import Emb2Rig, load_decoder
from expression_finetune import load_encoder
from rig2img import load_renderer

RENDER_TOL = 0.005    # mean |pixel difference| at the reference rigs, images in [0, 1] (same net: ~1e-4)
FEATURE_TOL = 0.01    # relative L2 difference of the reference features (same net: ~3e-4)


class ModelMismatch(ValueError):
    """The encoder or renderer given is not the one the stage-3b checkpoint was trained with."""


@dataclass
class Models:
    """A stage-3b decoder with its frozen networks.

    Attributes:
        decoder: Emb2Rig in eval mode. frozen: the encoder and renderer (`emb2rig.frozen.Frozen`).
        names / controls: avatars in decoder order and their control names.
        crop_margin: the face-crop margin the decoder was trained with.
        encoder_path / renderer_path: the files loaded. checked: how they were checked.
        avatars_root: the avatar folders it was trained on (for the exports).
    """
    decoder: Emb2Rig
    frozen: Frozen
    names: list[str]
    controls: list[list[str]]
    crop_margin: float
    encoder_path: str
    renderer_path: str
    checked: str
    avatars_root: str = ""


def _resolve(kind: str, given: str, stored: str, pretrained: str, key: str) -> str:
    path = given or stored
    if not path:
        raise ValueError(f"{pretrained} does not name its {kind}; pass {key}=<{kind} checkpoint>")
    if not Path(path).is_file():
        where = "given" if given else f"that {pretrained} was trained with"
        raise FileNotFoundError(f"the {kind} {where}, '{path}', is not found (from {Path.cwd()}); pass "
                                f"{key}=<the {kind} checkpoint it was trained with>")
    return path


def _load(kind: str, loader, path: str, device: torch.device, pretrained: str, key: str):
    """Load one frozen network; a file of the wrong kind gets a message naming the key to fix."""
    try:
        return loader(path).to(device)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ModelMismatch(f"the {kind} file {path} cannot be loaded for {pretrained}: {e}; pass "
                            f"{key}=<the {kind} checkpoint it was trained with>") from None


@torch.no_grad()
def check_references(frozen: Frozen, decoder: Emb2Rig, refs: dict, names: dict) -> None:
    """Refuse a renderer that does not draw the stored reference renders from the stored reference
    rigs, or an encoder whose features of those renders differ from the decoder's stored ones.

    Args:
        names: 'pretrained', 'encoder', 'renderer' (the files loaded), 'trained_encoder',
            'trained_renderer' (the files the checkpoint names) and the override keys 'encoder_key',
            'renderer_key', for the messages.
    """
    dev = decoder.ids.ref_feats.device
    images = refs["images"].to(dev).float()  # (A, 3, S, S), stored in fp16
    for a, (name, rig) in enumerate(zip(frozen.names, refs["rigs"])):
        drawn = frozen.renderer.render(torch.tensor(rig, dtype=torch.float32, device=dev)[None], name)
        size = f"draws {drawn.shape[-1]} px images, not {images.shape[-1]} px" if drawn.shape != images[a:a + 1].shape \
            else None
        diff = None if size else (drawn[0].float() - images[a]).abs().mean().item()
        if size or diff > RENDER_TOL:
            what = size or (f"draws avatar '{name}' differently (mean pixel difference {diff:.3f} at its "
                            f"reference rig, > {RENDER_TOL})")
            raise ModelMismatch(f"renderer {names['renderer']} is not the renderer {names['pretrained']} was "
                                f"trained with ({names['trained_renderer']}): it {what}; pass "
                                f"{names['renderer_key']}=<the stage-3a checkpoint it was trained with>")
    feats = frozen.encode(images, torch.arange(len(images), device=dev))[0].float()  # (A, D)
    ref = decoder.ids.ref_feats
    rel = ((feats - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-8)).max().item()
    if rel > FEATURE_TOL:
        raise ModelMismatch(f"encoder {names['encoder']} is not the encoder {names['pretrained']} was trained with "
                            f"({names['trained_encoder']}): its features of the stored reference renders differ by "
                            f"{100 * rel:.1f}% (> {100 * FEATURE_TOL:.0f}%); pass {names['encoder_key']}=<the "
                            f"stage-2 checkpoint it was trained with>")


def load_models(pretrained: str, device: torch.device, encoder: str = "", renderer: str = "",
                key_prefix: str = "") -> Models:
    """Load a stage-3b checkpoint and the frozen networks it was trained through, and check them.

    Args:
        encoder / renderer: override the files the checkpoint names ('' = those).
        key_prefix: how the overrides are spelled where they came from ('test.' in the stage-3b script),
            for the messages.
    """
    decoder, meta = load_decoder(pretrained, device)
    keys = {k: f"{key_prefix}{k}" for k in ("encoder", "renderer")}
    enc_path = _resolve("encoder", encoder, meta["encoder"], pretrained, keys["encoder"])
    ren_path = _resolve("renderer", renderer, meta["renderer"], pretrained, keys["renderer"])
    enc = _load("encoder", load_encoder, enc_path, device, pretrained, keys["encoder"])
    ren = _load("renderer", load_renderer, ren_path, device, pretrained, keys["renderer"])
    try:
        frozen = Frozen(enc, ren, meta["avatars"], meta["controls"], meta["face_boxes"], meta["crop_margin"])
    except ValueError as e:  # an avatar or its controls unknown to the renderer
        raise ModelMismatch(f"renderer {ren_path} does not fit {pretrained}: {e}") from None
    dim, want = frozen.encoder.feature_dim, decoder.ids.ref_feats.shape[1]
    if dim != want:
        raise ModelMismatch(f"encoder {enc_path} gives {dim}-d features; {pretrained} was trained on {want}-d "
                            f"features: pass {keys['encoder']}=<the stage-2 checkpoint it was trained with>")
    if meta["references"] is not None:
        names = {"pretrained": pretrained, "encoder": enc_path, "renderer": ren_path,
                 "trained_encoder": meta["encoder"], "trained_renderer": meta["renderer"],
                 "encoder_key": keys["encoder"], "renderer_key": keys["renderer"]}
        check_references(frozen, decoder, meta["references"], names)
        checked = "reference renders and features match"
    else:
        checked = "shapes only (the checkpoint predates stored references)"
        print(f"[animate] warning: {pretrained} stores no reference renders, so the encoder and renderer can be "
              f"checked for shapes only; make sure they are the ones it was trained with")
    return Models(decoder, frozen, meta["avatars"], meta["controls"], meta["crop_margin"], enc_path, ren_path,
                  checked, meta["avatars_root"])
