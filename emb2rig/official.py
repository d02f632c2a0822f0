"""Load a rig decoder trained by the official FreeAvatar code into our `Emb2Rig` built with `model.block=official`.

    model = build_model(ref_feats, n_controls, DecoderConfig(block="official", id_dim=16, mean_prior=False))
    report = load_official_decoder(model, "emb2rig_multi_<timestamp>.pt")   # {'state_dict': FCModel weights}

The official decoder is `models/CascadeNet.py` FCModel (built in `train_emb2rig_multichar.py` with
num_blocks 2, linear_size 512, dropout 0.1, use_multichar, id_embedding_dim 16; input = cat([e_id, f])).
Key map, official -> ours:

    w1.{weight, bias}                  -> decoder.stem.0.*  (weight columns: official [e_id | f], ours [f | e_id])
    batch_norm1.*                      -> decoder.stem.1.*
    res_blocks.{i}.w1 / .batch_norm1   -> decoder.blocks.{i}.body.0 / .1
    res_blocks.{i}.w2 / .batch_norm2   -> decoder.blocks.{i}.body.4 / .5
    w2.{weight, bias}                  -> decoder.head.*
    embedding_layer.weight (10, 16)    -> no counterpart: our e_id comes from the identity MLP over each avatar's
                                          reference feature (dynamic identity); the report returns the table.

Ours without an official counterpart, left as built: `ids.mlp.*` (identity MLP, at init), `ids.ref_feats` and
`n_controls` (from the avatars), `prior_logit` (the mean-rig prior; zeros = none, as the official decoder).
When our `id_dim` differs from the official embedding size, the e_id columns of `decoder.stem.0.weight`
stay at init and only the feature columns are copied.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from common.checkpoint import clean_state_dict, load_checkpoint, load_weights
from emb2rig.models import Emb2Rig, OfficialResBlock

OFFICIAL_ONLY = ("embedding_layer.weight",)
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def official_key_map(n_blocks: int) -> dict[str, str]:
    """Official FCModel key -> our Emb2Rig key, for every tensor the two share."""
    layers = {"w1": "decoder.stem.0", "batch_norm1": "decoder.stem.1", "w2": "decoder.head"}
    for i in range(n_blocks):
        for off, ours in (("w1", "0"), ("batch_norm1", "1"), ("w2", "4"), ("batch_norm2", "5")):
            layers[f"res_blocks.{i}.{off}"] = f"decoder.blocks.{i}.body.{ours}"
    out = {}
    for off, ours in layers.items():
        for p in (_BN if "batch_norm" in off else ("weight", "bias")):
            out[f"{off}.{p}"] = f"{ours}.{p}"
    return out


def is_official_decoder(sd: dict) -> bool:
    """True for an official FCModel state dict (after unwrapping `{'state_dict': ...}`)."""
    return "w1.weight" in sd and "res_blocks.0.w1.weight" in sd


def load_official_decoder(model: Emb2Rig, source: str | Path | dict) -> dict:
    """Copy an official FCModel state dict into `model` (in place); raise when it cannot match exactly.

    Args:
        model: Emb2Rig whose decoder has `block='official'` and `norm='batch'`, the same width, number of
            blocks, feature size and head size as the official one.
        source: the official file (`{'state_dict': ...}`) or its state dict.
    Returns: {'loaded': our keys set from the file, 'official_only': official keys with no counterpart,
        'not_in_official': our keys left as built, 'id_columns': 'copied' or 'left at init',
        'embedding': the official (n, id) identity table or None, 'prior_nonzero': whether our mean-rig
        prior makes outputs differ from the official decoder's}.
    """
    sd = clean_state_dict(load_checkpoint(source) if isinstance(source, (str, Path)) else source)
    dec = model.decoder
    if not all(isinstance(b, OfficialResBlock) for b in dec.blocks) or not isinstance(dec.stem[1], nn.BatchNorm1d):
        raise ValueError("the official decoder has ReLU blocks with BatchNorm: build ours with "
                         "model.block=official model.norm=batch")
    ours = model.state_dict()
    key_map = official_key_map(len(dec.blocks))
    unknown = sorted(k for k in sd if k not in key_map and k not in OFFICIAL_ONLY)
    absent = sorted(k for k in key_map if k not in sd)
    if unknown or absent:
        raise ValueError(f"not the official decoder with {len(dec.blocks)} blocks: unexpected keys {unknown}, "
                         f"missing keys {absent}")
    emb = sd.get("embedding_layer.weight")
    off_id = 0 if emb is None else emb.shape[1]  # official input = [e_id (off_id) | f (D)]
    id_dim = model.ids.mlp[-1].out_features
    feat_dim = dec.stem[0].in_features - id_dim  # ours = [f (feat_dim) | e_id (id_dim)]
    new = {}
    for off, mine in key_map.items():
        t = sd[off]
        if off == "w1.weight":
            if t.shape[0] != ours[mine].shape[0] or t.shape[1] - off_id != feat_dim:
                raise ValueError(f"official w1.weight {tuple(t.shape)} (identity {off_id} + feature "
                                 f"{t.shape[1] - off_id}) does not fit ours {tuple(ours[mine].shape)} "
                                 f"(feature {feat_dim} + identity {id_dim})")
            w = ours[mine].clone()
            w[:, :feat_dim] = t[:, off_id:]  # feature columns, exactly
            if id_dim == off_id:
                w[:, feat_dim:] = t[:, :off_id]  # identity columns, when both identities have one size
            t = w
        elif t.shape != ours[mine].shape:
            raise ValueError(f"official {off} {tuple(t.shape)} does not fit our {mine} {tuple(ours[mine].shape)}; "
                             "build the decoder with the same width and avatars (head = largest rig)")
        new[mine] = t.to(ours[mine].dtype)
    model.load_state_dict(new, strict=False)
    return {"loaded": sorted(new), "official_only": [k for k in OFFICIAL_ONLY if k in sd],
            "not_in_official": sorted(k for k in ours if k not in new), "embedding": emb,
            "id_columns": "copied" if id_dim == off_id else "left at init",
            "prior_nonzero": bool(model.prior_logit.abs().max() > 0)}


def load_pretrained(model: Emb2Rig, path: str | Path) -> None:
    """`pretrained=` for stage 3b: one of our checkpoints, or an official FCModel file (mapped, reported)."""
    sd = clean_state_dict(load_checkpoint(path))
    if not is_official_decoder(sd):
        load_weights(model, path)
        return
    r = load_official_decoder(model, sd)
    print(f"[emb2rig] {path}: official decoder, {len(r['loaded'])} tensors loaded; official only: "
          f"{r['official_only']}; ours left as built: {r['not_in_official']}; identity columns {r['id_columns']}"
          + ("; the mean-rig prior is on (model.mean_prior=false removes it)" if r["prior_nonzero"] else "")
          + ". Not the official outputs: its identity table has no counterpart here (the identity MLP starts at "
            "its init), and it was trained on the pooled feature before fc_norm, ours feeds the one after it")
