"""Configs: defaults -> YAML -> overrides; unknown keys and wrong types are errors naming the key."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from common.config import ConfigError, check_choice, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class Toy:
    name: str = "toy"
    epochs: int = 2
    precision: str = "fp32"
    optim: Optim = field(default_factory=Optim)
    weights: dict[str, float] = field(default_factory=dict)
    pretrained: str | None = None

    def __post_init__(self):
        check_choice("precision", self.precision, ["fp32", "bf16", "fp16"])


def write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_layers_defaults_yaml_overrides(tmp_path):
    path = write(tmp_path, {"epochs": 5, "optim": {"lr": 0.1}, "weights": {"pix": 2.0}})
    cfg = load_config(Toy, [path, "optim.lr=0.5", "pretrained=ckpt.pth", "optim.betas=[0.0,0.99]"])
    assert isinstance(cfg, Toy) and isinstance(cfg.optim, Optim)
    assert (cfg.epochs, cfg.optim.lr, cfg.pretrained, cfg.optim.betas) == (5, 0.5, "ckpt.pth", [0.0, 0.99])
    assert cfg.weights == {"pix": 2.0} and cfg.name == "toy"


def test_default_file_used_when_no_path(tmp_path):
    path = write(tmp_path, {"epochs": 7})
    assert load_config(Toy, ["name=x"], default=path).epochs == 7


@pytest.mark.parametrize("args,key,hint", [
    (["epoch=3"], "epoch", "epochs"),
    (["optim.lrr=3"], "optim.lrr", "optim.lr"),
])
def test_unknown_override_names_key_and_spelling(args, key, hint):
    with pytest.raises(ConfigError, match=rf"'{key}'.*Did you mean '{hint}'"):
        load_config(Toy, args)


def test_unknown_yaml_key_names_file(tmp_path):
    path = write(tmp_path, {"optim": {"betaz": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match=r"c\.yaml.*'optim\.betaz'.*'optim\.betas'"):
        load_config(Toy, [path])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="epochs"):
        load_config(Toy, ["epochs=three"])


def test_validation_in_post_init():
    with pytest.raises(ConfigError, match="precision.*'bf16'"):
        load_config(Toy, ["precision=bf61"])


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Toy, ["nope.yaml"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Toy, ["epochs=9", "weights.gan=0.5"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Toy, [str(tmp_path / "config.yaml")]) == cfg


def test_entry_script_rejects_bad_key_with_exit_code(tmp_path):
    """A real entry point: a misspelt key exits non-zero and names it."""
    code = ("from tests.test_config import Toy; from common.config import cli; cli(Toy)")
    r = subprocess.run([sys.executable, "-c", code, "epoch=3"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "epoch" in r.stderr and "epochs" in r.stderr


def test_a_renamed_key_is_refused_with_its_new_name():
    from mae_pretrain.config import MAEPretrainConfig

    for old, new in (("iters_per_epoch", "steps_per_epoch"), ("grid_images", "grid_samples")):
        with pytest.raises(ConfigError, match=f"'{old}' is now called '{new}'"):
            load_config(MAEPretrainConfig, [f"{old}=3"])


def test_an_mae_epoch_shorter_than_one_accumulation_is_refused():
    """The paper config accumulates 8 batches: a 3-step smoke run would train nothing; it is refused by name."""
    from mae_pretrain.config import MAEPretrainConfig

    with pytest.raises(ConfigError, match="'steps_per_epoch' \\(3\\) is below 'accum_iter' \\(8\\)"):
        load_config(MAEPretrainConfig, ["configs/mae_pretrain.yaml", "steps_per_epoch=3"])
    assert load_config(MAEPretrainConfig, ["configs/mae_pretrain.yaml", "steps_per_epoch=8"]).accum_iter == 8


def test_crop_margin_null_is_refused_in_stage_2_and_tensorboard_is_a_key_of_every_stage():
    from emb2rig.config import Emb2RigConfig
    from expression_finetune.config import ExpressionConfig
    from mae_pretrain.config import MAEPretrainConfig
    from rig2img.config import Rig2ImgConfig

    with pytest.raises(ConfigError, match="exact FEC box"):
        load_config(ExpressionConfig, ["crop_margin=null"])
    for schema in (MAEPretrainConfig, ExpressionConfig, Rig2ImgConfig, Emb2RigConfig):
        assert load_config(schema, ["tensorboard=true"]).tensorboard


def test_the_four_paper_configs_chain_stage_to_stage():
    """Each stage's default input is the previous stage's default output."""
    from animate.config import Emb2RigCommand
    from expression_finetune.config import ExpressionConfig
    from mae_pretrain.config import MAEPretrainConfig
    from rig2img.config import Rig2ImgConfig

    mae = load_config(MAEPretrainConfig, ["configs/mae_pretrain.yaml"])
    exp = load_config(ExpressionConfig, ["configs/mae_train_expemb.yaml"])
    r2i = load_config(Rig2ImgConfig, ["configs/configs_rig2img.yaml"])
    e2r = load_config(Emb2RigCommand, ["configs/configs_emb2rig_multi.yaml"])
    assert exp.pretrained == f"{mae.output_dir}/checkpoint-last.pth"
    assert e2r.encoder == f"{exp.output_dir}/checkpoint-best.pth"
    assert e2r.renderer == f"{r2i.output_dir}/checkpoint-best.pth"
    assert r2i.data_root == f"{e2r.data_root}/{e2r.avatars_root}"  # the same avatars in 3a and 3b
    assert mae.train_roots == [f"{e2r.data_root}/{f}" for f in e2r.faces]  # the same unlabeled faces in 1 and 3b
    assert mae.crop_margin == exp.crop_margin == e2r.crop_margin  # one face framing
