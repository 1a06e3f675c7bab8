"""The pretrain config: defaults, per-method resolution, every validation error, YAML and CLI overrides,
the shipped configs, and the README documenting every field."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from pretrain_helpers import CONFIG_DIR, REPO_ROOT

from contrastkit.pipelines.config import (
    SECTIONS,
    JointTrainingConfig,
    PretrainConfig,
    apply_overrides,
    check_raw_config,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)
from contrastkit.pipelines.methods import METHODS, method_names

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_registry_finds_every_method_module() -> None:
    # The registry is built from the method modules; the config validates against it.
    assert list(METHODS) == [
        "barlow_twins", "byol", "dino", "isd", "moco", "mocov3", "nnclr", "npair", "simclr",
        "simsiam", "supcon", "swav", "vicreg",
    ]  # fmt: skip
    # Each method lives in the module named as it, so the names are known without importing
    # (method_names reads the module names; the command line checks method.name with it).
    assert method_names() == list(METHODS)
    for name, cls in METHODS.items():
        assert cls.__module__ == f"contrastkit.pipelines.methods.{name}", cls


def test_defaults_resolve_per_method() -> None:
    simclr = config_from_dict({})
    assert simclr.method.name == "simclr" and simclr.method.temperature == 0.5
    assert simclr.method.momentum is None  # simclr has no teacher
    assert simclr.data.augment == "simclr_views" and simclr.data.image_size == 32
    assert simclr.data.loader == "device"
    moco = config_from_dict({"method": {"name": "moco"}})
    # MoCo v2's constant 0.999 (facebookresearch/moco main_moco.py --moco-m; i-Mix --emam).
    assert (moco.method.temperature, moco.method.momentum, moco.method.momentum_final) == (
        0.2,
        0.999,
        0.999,
    )
    assert moco.data.augment == "mocov2_views"
    byol = config_from_dict({"method": {"name": "byol"}})
    assert (byol.method.momentum, byol.method.momentum_final) == (0.996, 1.0)
    isd = config_from_dict({"method": {"name": "isd"}})
    assert (isd.method.student_temperature, isd.method.teacher_temperature) == (0.02, 0.02)
    assert isd.data.augment == "isd_views"
    plus = config_from_dict({"method": {"name": "isd", "isd_plus": True}})
    assert (plus.method.student_temperature, plus.method.teacher_temperature) == (0.1, 0.01)
    folder = config_from_dict({"data": {"dataset": "image_folder", "image_size": 64}})
    assert folder.data.loader == "dataloader"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = config_from_dict(
        {"method": {"name": "isd", "isd_plus": True}, "optimizer": {"betas": [0.8, 0.9]}}
    )
    path = save_config(config, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == config
    assert config_to_dict(again)["optimizer"]["betas"] == [0.8, 0.9]


BAD_VALUES = [
    ({"method": {"name": "simclr2"}}, r"method\.name must be one of .*'simclr2'.*did you mean 'simclr'"),
    ({"method": {"name": "simclr", "imix": "mixup"}}, r"method\.imix='mixup' is defined only for methods \['byol', 'moco', 'mocov3', 'nnclr', 'npair', 'simsiam'\]"),
    ({"method": {"name": "isd", "imix": "cutmix"}}, r"method\.imix='cutmix' is defined only for methods"),
    ({"method": {"name": "npair", "imix": "mix"}}, r"method\.imix must be one of \['none', 'mixup', 'cutmix'\], got 'mix'"),
    ({"method": {"temperature": 0}}, r"method\.temperature must be > 0.0, got 0"),
    ({"method": {"queue_size": 0}}, r"method\.queue_size must be >= 1, got 0"),
    ({"method": {"queue_size": 1.5}}, r"method\.queue_size must be a int, got 1.5"),
    ({"method": {"momentum": 1.5}}, r"method\.momentum must be in \[0, 1\], got 1.5"),
    ({"method": {"name": "moco", "isd_plus": True}}, r"isd_plus=true is a preset of the isd method"),
    ({"method": {"name": "isd", "isd_plus": True, "student_temperature": 0.2}}, r"isd_plus=true sets method\.student_temperature=0.1, got method\.student_temperature=0.2"),
    ({"method": {"imix_alpha": -1}}, r"method\.imix_alpha must be > 0.0"),
    ({"model": {"projection_dim": 0}}, r"model\.projection_dim must be >= 1, got 0"),
    ({"model": {"channels_last": "yes"}}, r"model\.channels_last must be true or false, got 'yes'"),
    ({"model": {"backbone_kwargs": [1]}}, r"model\.backbone_kwargs must be a mapping"),
    ({"model": {"backbone": "mlp"}}, r"model\.backbone='mlp' takes \(N, F\) rows and needs data\.dataset=tabular"),
    ({"data": {"dataset": "tabular"}}, r"data\.dataset=tabular gives \(N, F\) rows; model\.backbone must be 'mlp'"),
    ({"data": {"dataset": "imagenet"}}, r"data\.dataset must be one of \['cifar10', 'cifar100', 'image_folder', 'tabular'\]"),
    ({"data": {"dataset": "image_folder"}}, r"data\.image_size is required for data\.dataset=image_folder"),
    ({"data": {"train_subset": 0}}, r"data\.train_subset must be >= 1, got 0"),
    ({"data": {"tabular_options": {"val_start": 3}}}, r"data\.tabular_options is only for data\.dataset=tabular"),
    ({"data": {"loader": "dataloader"}}, r"data\.loader=dataloader is only for data\.dataset=image_folder"),
    ({"method": {"name": "npair", "imix": "cutmix"}, "model": {"backbone": "mlp"}, "data": {"dataset": "tabular"}}, r"method\.imix=cutmix pastes image boxes and needs images"),
    ({"optimizer": {"name": "adam"}}, r"optimizer\.name must be one of \['sgd', 'lars', 'adamw'\], got 'adam' \(did you mean 'adamw'\?\)"),
    ({"optimizer": {"lr": "fast"}}, r"optimizer\.lr must be a float, got 'fast'"),
    ({"optimizer": {"lr": -0.1}}, r"optimizer\.lr must be > 0.0, got -0.1"),
    ({"optimizer": {"momentum": 1.0}}, r"optimizer\.momentum must be in \[0, 1\), got 1.0"),
    ({"optimizer": {"betas": [0.9]}}, r"optimizer\.betas must be a list of 2 numbers, got \[0.9\]"),
    ({"optimizer": {"nesterov": True, "momentum": 0}}, r"optimizer\.nesterov=true needs optimizer\.momentum > 0"),
    ({"train": {"batch_size": 0}}, r"train\.batch_size must be >= 1, got 0"),
    ({"train": {"epochs": True}}, r"train\.epochs must be a int, got True"),
    ({"train": {"warmup_epochs": 20, "epochs": 10}}, r"train\.warmup_epochs must be <= train\.epochs \(10\), got 20.0"),
    ({"train": {"clip_grad": 0}}, r"train\.clip_grad must be > 0.0, got 0"),
    ({"train": {"output_dir": None}}, r"train\.output_dir must be a str \(not empty\), got None"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BAD_VALUES)
def test_bad_values_name_field_value_and_allowed(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


def test_unknown_keys_list_valid_keys_and_suggest() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown key 'optimiser' in the config's top level; valid keys: \[.*'optimizer'.*\]\. Did you mean 'optimizer'\?",
    ):
        config_from_dict({"optimiser": {}})
    with pytest.raises(
        ValueError,
        match=r"unknown key 'batchsize' in section 'train'; valid keys: \[.*'batch_size'.*\]\. Did you mean 'batch_size'\?",
    ):
        config_from_dict({"train": {"batchsize": 64}})
    with pytest.raises(
        ValueError,
        match=r"unknown key 'lrate' in section 'optimizer' \(override 'optimizer.lrate=1'\)",
    ):
        apply_overrides({}, ["optimizer.lrate=1"])
    with pytest.raises(ValueError, match=r"config section 'train' must be a mapping"):
        config_from_dict({"train": [1, 2]})


def test_numeric_strings_and_ints_are_coerced_for_float_fields() -> None:
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field accepts it.
    config = config_from_dict(yaml.safe_load("optimizer: {lr: 1e-3, weight_decay: 0}"))
    assert config.optimizer.lr == 0.001 and isinstance(config.optimizer.weight_decay, float)


def test_overrides_parse_yaml_values_and_nested_keys() -> None:
    assert parse_override("optimizer.lr=0.3") == (["optimizer", "lr"], 0.3)
    assert parse_override("data.train_subset=15000") == (["data", "train_subset"], 15000)
    assert parse_override("train.clip_grad=null") == (["train", "clip_grad"], None)
    assert parse_override("model.backbone_kwargs={width: 64}") == (
        ["model", "backbone_kwargs"],
        {"width": 64},
    )
    raw = apply_overrides(
        {
            "model": {"backbone": "mlp", "backbone_kwargs": {"width": 32}},
            "data": {"dataset": "tabular"},
        },
        [
            "model.backbone_kwargs.num_layers=3",
            "method.name=byol",
            "method.imix=cutmix",
            "method.imix=mixup",
        ],
    )
    config = config_from_dict(raw)
    assert config.model.backbone_kwargs == {"width": 32, "num_layers": 3}
    assert (config.method.name, config.method.imix) == ("byol", "mixup")
    for bad in ("optimizer.lr", "lr=0.3", "optimizer..lr=1", "=3"):
        with pytest.raises(ValueError, match=r"an override must look like section\.field=value"):
            parse_override(bad)
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_override("optimizer.lr=[1")


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config file .*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ValueError, match="must hold a mapping of sections"):
        load_config(scalar)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_load(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    # The joint training configs (joint_*.yaml) add a `joint:` section to the pretrain sections.
    config_class = JointTrainingConfig if "joint" in raw else PretrainConfig
    config = load_config(path, config_class=config_class)
    assert isinstance(config, config_class)
    assert config.method.name == raw["method"]["name"]


def test_shipped_config_names() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "simclr_cifar10",
        "moco_cifar10",
        "byol_cifar10",
        "isd_myresnet_cifar10",
        "imix_npair_cifar10_15k",
        "imix_moco_covtype",
        "smoke",
    }


def test_readme_documents_every_field() -> None:
    readme = (REPO_ROOT / "packages" / "pipelines" / "README.md").read_text()
    missing = []
    for section, cls in SECTIONS.items():
        block = re.search(rf"^### `{section}`.*?(?=^### |\Z)", readme, re.S | re.M)
        assert block, f"README has no '### `{section}`' table"
        for field in dataclasses.fields(cls):
            if not re.search(rf"^\| `{field.name}` \|", block.group(0), re.M):
                missing.append(f"{section}.{field.name}")
    assert not missing, f"README does not document: {missing}"


def test_isd_presets_fill_what_the_config_leaves_out() -> None:
    # ISD: UMBCvision/ISD train_isd_r18.py; ISD-plus: train_isd_plus.py + its README command.
    isd = config_from_dict({"method": {"name": "isd"}})
    assert (isd.method.momentum, isd.method.momentum_final) == (0.999, 0.999)
    assert (isd.model.projection_layers, isd.model.prediction_hidden_dim) == (0, 512)
    opt = isd.optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert opt.exclude_bias_and_norm is False
    assert (opt.schedule, opt.lr_decay_epochs, opt.lr_decay_factor) == ("step", (90.0, 120.0), 0.2)

    plus = config_from_dict({"method": {"name": "isd", "isd_plus": True}})
    assert plus.method.momentum == 0.99
    model = plus.model
    assert (model.projection_layers, model.projection_hidden_dim, model.projection_dim) == (
        2,
        1024,
        128,
    )
    assert model.prediction_hidden_dim == 1024
    assert (plus.optimizer.lr, plus.optimizer.schedule) == (0.05, "warmup_cosine")

    # What the config sets wins over the preset; null counts as left out.
    mine = config_from_dict(
        {
            "method": {"name": "isd", "momentum": 0.9, "student_temperature": None},
            "model": {"projection_layers": 2},
            "optimizer": {"lr": 0.3, "schedule": "warmup_cosine"},
        }
    )
    assert (mine.method.momentum, mine.method.student_temperature) == (0.9, 0.02)
    assert (mine.model.projection_layers, mine.optimizer.lr) == (2, 0.3)
    assert mine.optimizer.weight_decay == 1e-4  # still the preset's
    # Choosing the schedule also drops the preset's step epochs, which only fit its schedule.
    assert mine.optimizer.lr_decay_epochs == ()
    # Other methods have no preset: the section defaults apply.
    simclr = config_from_dict({})
    assert (simclr.optimizer.lr, simclr.optimizer.exclude_bias_and_norm) == (0.06, True)
    assert simclr.optimizer.schedule == "warmup_cosine" and simclr.model.projection_layers == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"optimizer": {"clip_lr": True}},
            r"optimizer\.clip_lr=true .* needs optimizer\.name=lars",
        ),
        ({"optimizer": {"schedule": "step"}}, r"optimizer\.lr_decay_epochs must be a non-empty"),
        ({"optimizer": {"lr_decay_epochs": [10]}}, r"used by optimizer\.schedule=step only"),
        (
            {"optimizer": {"schedule": "step", "lr_decay_epochs": [20, 10]}},
            r"optimizer\.lr_decay_epochs must be increasing epochs > 0",
        ),
        ({"optimizer": {"schedule": "cosine"}}, r"optimizer\.schedule must be one of"),
        (
            {"optimizer": {"schedule": "step", "lr_decay_epochs": [5], "final_lr_fraction": 0.1}},
            r"optimizer\.final_lr_fraction=0\.1 shapes the cosine only",
        ),
        (
            {"optimizer": {"lr_decay_factor": 0.0}},
            r"optimizer\.lr_decay_factor must be in \(0, 1\]",
        ),
        ({"method": {"symmetric": True}}, r"method\.symmetric=true .* got method\.name='simclr'"),
        ({"model": {"projection_layers": -1}}, r"model\.projection_layers must be >= 0"),
        ({"data": {"augment_options": [1]}}, r"data\.augment_options must be a mapping"),
    ],
)
def test_recipe_fields_reject_bad_values(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(raw)


def test_recipe_fields_accept_good_values() -> None:
    config = config_from_dict(
        {
            "method": {"name": "moco", "symmetric": True, "separate_forwards": True},
            "model": {"projection_layers": 0, "projection_output_batch_norm": False},
            "optimizer": {"name": "lars", "clip_lr": True, "exclude_bias_and_norm": False},
            "data": {"augment_options": {"blur_p": 0.5}},
        }
    )
    assert config.method.symmetric and config.method.separate_forwards
    assert config.optimizer.clip_lr and not config.optimizer.exclude_bias_and_norm
    assert config.data.augment_options == {"blur_p": 0.5}


# ------------------------------------------------------------------ the early (torch-free) check


@pytest.mark.parametrize(("data", "message"), BAD_VALUES)
def test_the_early_check_never_disagrees_with_the_whole_check(data: dict, message: str) -> None:
    # The early check may leave an error to the whole check (one that needs a method class or
    # several sections), but when it reports one, it is the one the whole check reports.
    try:
        check_raw_config(data)
    except ValueError as early:
        with pytest.raises(ValueError) as whole:
            config_from_dict(data)
        assert str(early) == str(whole.value)


@pytest.mark.parametrize(
    "data",
    [
        {"train": {"batchsize": 8}},
        {"method": {"name": "simclr2"}},
        {"method": {"queue_size": 0}},
        {"model": {"channels_last": "yes"}},
        {"optimizer": {"lr": -0.1}},
        {"optimizer": {"betas": [0.9, 1.0]}},
        {"data": {"dataset": "image_folder"}},  # no image_size: data is checked whole
        {"train": {"epochs": 5, "warmup_epochs": 10}},
    ],
)
def test_the_early_check_catches_keys_values_names_and_whole_preset_free_sections(
    data: dict,
) -> None:
    with pytest.raises(ValueError) as early:
        check_raw_config(data)
    with pytest.raises(ValueError) as whole:
        config_from_dict(data)
    assert str(early.value) == str(whole.value)


@pytest.mark.parametrize(
    "data",
    [
        # ISD's preset sets the step schedule that makes these decay epochs valid.
        {"method": {"name": "isd"}, "optimizer": {"lr_decay_epochs": [50]}},
        # null is "left out": ISD's preset fills lr.
        {"method": {"name": "isd"}, "optimizer": {"lr": None}},
        {"method": {"name": "isd", "isd_plus": True}, "model": {"projection_dim": None}},
    ],
)
def test_the_early_check_never_rejects_what_a_preset_makes_valid(data: dict) -> None:
    check_raw_config(data)
    config_from_dict(data)


def test_a_preset_may_fill_only_the_method_model_and_optimizer_sections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The early check builds data, train and joint whole before any preset is known: a method
    # whose preset filled them would make it reject configs the preset makes valid.
    isd = METHODS["isd"]

    class Greedy(isd):
        @classmethod
        def preset(cls, method: dict) -> dict:
            return {"train": {"epochs": 100}}

    monkeypatch.setitem(METHODS, "isd", Greedy)
    with pytest.raises(
        TypeError,
        match=r"method 'isd' presets section 'train'; a preset may fill only \['method', 'model', 'optimizer'\]",
    ):
        config_from_dict({"method": {"name": "isd"}})


def test_shortening_a_run_below_its_warm_up_says_the_one_line_fix() -> None:
    with pytest.raises(ValueError) as error:
        load_config(CONFIG_DIR / "simclr_cifar10.yaml", ["train.epochs=2"])
    fix = re.search(r"e\.g\. (train\.epochs=\S+ train\.warmup_epochs=\S+)$", str(error.value))
    assert fix, str(error.value)
    shortened = load_config(CONFIG_DIR / "simclr_cifar10.yaml", fix.group(1).split())
    assert shortened.train.epochs == 2 and 0 < shortened.train.warmup_epochs <= 2
