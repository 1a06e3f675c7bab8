"""contrastkit-export on tiny runs: each format loads back to the run's own features (safetensors
through create_backbone, timm through timm.create_model with no missing or unexpected key,
TorchScript through torch.jit.load), config.json and the model card say what the run was, the
probe takes an export folder, and every bad input is one line with exit status 2."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pretrain_helpers import REPO_ROOT, tiny_image_config, tiny_tabular_config

from contrastkit.augment import dataset_normalization
from contrastkit.backbones import create_backbone, load_exported_backbone
from contrastkit.pipelines import probe
from contrastkit.pipelines.checkpoint_integrity import file_sha256, write_meta
from contrastkit.pipelines.config import config_from_dict, config_to_dict
from contrastkit.pipelines.evaluation.pretrained import build_backbone, load_checkpoint
from contrastkit.pipelines.evaluation.results import read_results
from contrastkit.pipelines.export import export_backbone
from contrastkit.pipelines.export.cli import main
from contrastkit.pipelines.pretrain import run_pretrain

EXPORT_SCRIPT = REPO_ROOT / "packages" / "pipelines" / "export.py"
TOLERANCE = 1e-6


def features(backbone: Any, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(inputs)


def run_backbone(run: Path, step: int | None = None) -> torch.nn.Module:
    """The backbone the run saved (backbone.pt of checkpoint-`step`, default the newest)."""
    path = run / f"checkpoint-{step}" if step is not None else run
    return build_backbone(load_checkpoint(path)).eval()


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory: pytest.TempPathFactory, toy_cifar_dir: Path) -> Path:
    """A real one-epoch SimCLR run of timm's test_resnet at 8x8 on the toy CIFAR (5 steps)."""
    out = tmp_path_factory.mktemp("timm_run") / "run"
    raw = tiny_image_config(out, toy_cifar_dir, train={"epochs": 1})
    return run_pretrain(config_from_dict(raw)).run_dir


def randomize_batch_norms(module: torch.nn.Module, seed: int) -> None:
    """Running statistics that are not 0 / 1, so a round trip that lost the buffers shows."""
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)


def write_run(root: Path, raw: dict[str, Any], steps: tuple[int, ...] = (5,)) -> Path:
    """A run folder as pretrain.py leaves it, without training: config.yaml and, per step, a
    checkpoint folder of config.yaml, backbone.pt (a seeded backbone) and meta.json with its
    manifest."""
    config = config_to_dict(config_from_dict(raw))
    model = config["model"]
    run = root / "run"
    run.mkdir(parents=True)
    text = yaml.safe_dump(config, sort_keys=False)
    (run / "config.yaml").write_text(text)
    for step in steps:
        folder = run / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "config.yaml").write_text(text)
        torch.manual_seed(step)
        backbone = create_backbone(model["backbone"], **model["backbone_kwargs"])
        randomize_batch_norms(backbone, step)
        torch.save(backbone.state_dict(), folder / "backbone.pt")
        meta = {"task": "pretrain", "step": step, "epoch": step // 5, "batch_in_epoch": 0,
                "steps_per_epoch": 5, "total_steps": max(steps), "method": "simclr",
                "backbone": model["backbone"], "global_batch": 16, "world_size": 1,
                "mixed_precision": "no"}  # fmt: skip
        write_meta(folder, meta)
    return run


def myresnet_run(root: Path, toy_cifar_dir: Path, steps: tuple[int, ...] = (5,)) -> Path:
    raw = tiny_image_config(root / "unused", toy_cifar_dir, model={"backbone": "myresnet"})
    return write_run(root, raw, steps)


# ---------------------------------------------------------------------------- round trips


def test_safetensors_round_trip_and_config(timm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = export_backbone(timm_run, "safetensors", out)
    assert result.files == ["model.safetensors", "config.json", "README.md"]
    assert result.checkpoint == timm_run / "checkpoint-5" and result.step == 5
    inputs = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = features(run_backbone(timm_run), inputs)
    for loaded in (
        load_exported_backbone(out),
        load_exported_backbone(out / "model.safetensors"),
        create_backbone("timm:test_resnet", pretrained_path=out),
    ):
        torch.testing.assert_close(features(loaded, inputs), expected, atol=TOLERANCE, rtol=0)

    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "safetensors" and config["weights"] == "model.safetensors"
    assert config["backbone"] | {"num_parameters": 0} == {
        "name": "timm:test_resnet", "kwargs": {}, "class": "TimmBackbone", "num_features": 96,
        "num_parameters": 0,
    }  # fmt: skip
    mean, std = dataset_normalization("cifar10")
    assert config["input"]["shape"] == ["N", 3, 8, 8]
    assert config["input"]["normalization"] | {"formula": ""} == {
        "dataset": "cifar10", "mean": list(mean), "std": list(std), "formula": ""
    }  # fmt: skip
    assert config["source"]["step"] == 5 and config["source"]["epochs"] == 1
    assert config["source"]["checkpoint"] == str((timm_run / "checkpoint-5").resolve())
    assert config["files"]["model.safetensors"]["sha256"] == file_sha256(out / "model.safetensors")
    assert {"contrastkit-backbones", "contrastkit-pipelines", "torch"} <= set(config["versions"])
    assert config["training_config"] == yaml.safe_load((timm_run / "config.yaml").read_text())
    card = (out / "README.md").read_text()
    assert "# simclr timm:test_resnet on cifar10" in card
    assert "| training | 1 of 1 epochs, step 5 of 5, global batch 16" in card
    assert "kNN monitor during pretraining at this step: top-1" in card


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip(timm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_backbone(timm_run, "torchscript", out)
    extra = {"contrastkit.json": ""}
    program = torch.jit.load(str(out / "model.torchscript.pt"), _extra_files=extra)
    inputs = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # traced at 2
    expected = features(run_backbone(timm_run), inputs)
    torch.testing.assert_close(features(program, inputs), expected, atol=TOLERANCE, rtol=0)
    assert json.loads(extra["contrastkit.json"])["backbone"]["name"] == "timm:test_resnet"
    config = json.loads((out / "config.json").read_text())
    assert config["torchscript"] == "model.torchscript.pt" and "weights" not in config


def test_torch_export_round_trip(timm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = export_backbone(timm_run, "torch_export", out)
    assert result.files == ["model.pt2", "config.json", "README.md"]
    extra = {"contrastkit.json": ""}
    program = torch.export.load(str(out / "model.pt2"), extra_files=extra).module()
    backbone = run_backbone(timm_run)
    for batch in (1, 5):  # exported at 2: the batch size is dynamic
        inputs = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            got = program(inputs)
        torch.testing.assert_close(got, features(backbone, inputs), atol=TOLERANCE, rtol=0)
    assert json.loads(extra["contrastkit.json"])["backbone"]["name"] == "timm:test_resnet"
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "torch_export" and config["torch_export"] == "model.pt2"
    assert "weights" not in config
    assert config["files"]["model.pt2"]["sha256"] == file_sha256(out / "model.pt2")


def test_torch_export_refusal_is_one_line_and_leaves_no_folder(
    timm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def cannot_capture(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("data-dependent control flow\nmore detail")

    monkeypatch.setattr(torch.export, "export", cannot_capture)
    out = tmp_path / "out"
    err = one_error_line(capsys, timm_run, "--format", "torch_export", "--output-dir", out)
    assert (
        "--format torch_export: no torch.export program reproduces TimmBackbone (torch.export: "
        "RuntimeError: data-dependent control flow); use --format safetensors"
    ) in err
    assert not out.exists()


def test_timm_format_loads_in_timm_with_no_missing_or_unexpected_key(
    timm_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import timm
    from safetensors.torch import load_file

    out = tmp_path / "export"
    export_backbone(timm_run, "timm", out)
    file = out / "model.safetensors"
    state = load_file(str(file))
    # timm.create_model(num_classes=0) drops the classifier and loads with strict=False; it
    # logs the keys it missed or did not expect: there must be none, and every key must match.
    with caplog.at_level(logging.INFO, logger="timm"):
        model = timm.create_model(
            "test_resnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(file)),
            num_classes=0,
        )  # fmt: skip
    assert not [r.message for r in caplog.records if "keys" in r.getMessage().lower()]
    assert set(model.state_dict()) == set(state)
    timm.create_model("test_resnet", num_classes=0).load_state_dict(state, strict=True)

    inputs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = features(run_backbone(timm_run), inputs)
    torch.testing.assert_close(features(model, inputs), expected, atol=TOLERANCE, rtol=0)
    # The folder is also timm's own local format: its config.json carries the normalization.
    local = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.testing.assert_close(features(local, inputs), expected, atol=TOLERANCE, rtol=0)
    data_config = timm.data.resolve_data_config({}, model=local)
    assert tuple(data_config["mean"]) == dataset_normalization("cifar10")[0]
    assert tuple(data_config["input_size"]) == (3, 8, 8)
    # The contrastkit side reads the timm folder too.
    torch.testing.assert_close(
        features(load_exported_backbone(out), inputs), expected, atol=TOLERANCE, rtol=0
    )


def test_checkpoint_option_and_newest_good_checkpoint(
    tmp_path: Path, toy_cifar_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = myresnet_run(tmp_path, toy_cifar_dir, steps=(5, 10))
    inputs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    export_backbone(run, "safetensors", tmp_path / "five", checkpoint_step=5)
    export_backbone(run, "safetensors", tmp_path / "newest")
    for name, step in (("five", 5), ("newest", 10)):
        torch.testing.assert_close(
            features(load_exported_backbone(tmp_path / name), inputs),
            features(run_backbone(run, step), inputs), atol=TOLERANCE, rtol=0,
        )  # fmt: skip
    # A damaged newest checkpoint is skipped, as the probe does, with a note naming it.
    (run / "checkpoint-10" / "backbone.pt").write_bytes(b"damaged")
    assert export_backbone(run, "safetensors", tmp_path / "skipped").step == 5
    assert "checkpoint-10 skipped: backbone.pt is 7 bytes" in capsys.readouterr().err
    # An earlier export of the same format is replaced in place.
    assert export_backbone(run, "safetensors", tmp_path / "newest").step == 5


class _SignDependent(torch.nn.Module):
    """A network whose Python branch on the data a trace freezes (the script keeps it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return x * 2
        return -x


def test_an_unfaithful_trace_falls_back_to_script_and_then_refuses(
    timm_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from contrastkit.pipelines.export import formats

    positive, negative = torch.ones(2, 3), -torch.ones(3, 3)
    program, failures = formats._compile(_SignDependent(), positive, negative)
    assert failures == ["torch.jit.trace: features differ by 3 on a batch of 3"]
    torch.testing.assert_close(program(negative), negative.neg())  # scripted: both branches

    monkeypatch.setattr(formats, "_compile", lambda *args: (None, ["torch.jit.trace: broken"]))
    out = tmp_path / "out"
    err = one_error_line(capsys, timm_run, "--format", "torchscript", "--output-dir", out)
    assert "no TorchScript program reproduces TimmBackbone (torch.jit.trace: broken)" in err
    assert not out.exists()  # the folder it created is removed again


def test_the_cards_contrastkit_block_loads_the_run_after_a_move(timm_run: Path, tmp_path: Path):
    """The "Load it with contrastkit" code runs as written once its one folder line names the
    folder's new place, and gives the run's own features of the block's images."""
    export_backbone(timm_run, "safetensors", tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    section = card.split("## Load it with contrastkit", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    other_lines = [line for line in code.splitlines() if not line.startswith("folder = ")]
    assert str(tmp_path / "export") not in "\n".join(other_lines)
    (tmp_path / "export").rename(tmp_path / "moved")
    code, edits = re.subn(
        r"^folder = .*$", f"folder = {str(tmp_path / 'moved')!r}", code, flags=re.M
    )
    assert edits == 1
    namespace: dict[str, Any] = {}
    exec(compile(code, "card block", "exec"), namespace)
    mean, std = dataset_normalization("cifar10")
    assert namespace["mean"].flatten().tolist() == pytest.approx(list(mean))
    assert namespace["std"].flatten().tolist() == pytest.approx(list(std))
    images = namespace["images"]
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    expected = features(
        run_backbone(timm_run), (images / 255 - namespace["mean"]) / namespace["std"]
    )
    torch.testing.assert_close(namespace["features"], expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["myresnet", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar"])
def test_the_cards_torchvision_layout_has_the_backbones_keys_and_shapes(name: str) -> None:
    import torchvision.models.resnet as torchvision_resnet

    from contrastkit.backbones import describe_mismatch
    from contrastkit.pipelines.export.model_card import TORCHVISION_LAYOUT

    block, layers = TORCHVISION_LAYOUT[name]
    with torch.device("meta"):
        theirs = torchvision_resnet.ResNet(getattr(torchvision_resnet, block), layers)
        theirs.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        theirs.fc = torch.nn.Identity()
        ours = create_backbone(name)
    assert describe_mismatch(ours.state_dict(), theirs.state_dict()) == ""


# ---------------------------------------------------------------------------- the probe


def test_probe_reads_an_export_folder_and_the_card_lists_its_results(
    timm_run: Path, tmp_path: Path
) -> None:
    options = ["--solver", "closed_form", "--no-tsne", "--no-nn-grid", "--no-progress"]
    run_probe = tmp_path / "run_probe"
    assert (
        probe.main(["--checkpoint", str(timm_run), "--output-dir", str(run_probe), *options]) == 0
    )
    export = tmp_path / "export"
    export_backbone(timm_run, "safetensors", export)
    assert probe.main(["--checkpoint", str(export), *options]) == 0
    from_run = read_results(run_probe / "results.csv")[0]
    from_export = read_results(export / "probe-cifar10" / "results.csv")[0]
    for column in ("knn_top1", "linear_top1", "step", "epochs", "method", "backbone"):
        assert from_export[column] == from_run[column], column
    assert from_export["checkpoint"] == str(export)

    # A probe of the run inside its folder is found by a later export's model card.
    inside = timm_run / "probe-cifar10"
    assert probe.main(["--checkpoint", str(timm_run), "--output-dir", str(inside), *options]) == 0
    export_backbone(timm_run, "safetensors", tmp_path / "carded")
    card = (tmp_path / "carded" / "README.md").read_text()
    row = read_results(inside / "results.csv")[0]
    assert f"| probe-cifar10/results.csv | linear | cifar10 | 1.0 | {row['linear_top1']} |" in card


@pytest.mark.parametrize("export_format", ["torchscript", "torch_export"])
def test_probe_refuses_a_program_export(
    timm_run: Path, tmp_path: Path, capsys, export_format: str
) -> None:
    export_backbone(timm_run, export_format, tmp_path / "program")
    assert probe.main(["--checkpoint", str(tmp_path / "program"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"is a {export_format!r} export; the probe reads safetensors" in err


# ---------------------------------------------------------------------------- errors


def one_error_line(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("contrastkit-export: error: "), err
    assert "Traceback" not in err
    return err


def test_bad_run_folders_and_checkpoints_are_one_line(
    tmp_path: Path, toy_cifar_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (tmp_path / "missing", [], "RUN_DIR '" + str(tmp_path / "missing") + "' does not exist"),
        (tmp_path / "file.txt", [], "is a file; expected a pretrain or joint run directory"),
        (tmp_path / "empty", [], "holds no checkpoint; expected a pretrain or joint run"),
    ]
    run = myresnet_run(tmp_path / "a", toy_cifar_dir, steps=(5,))
    cases.append((run, ["--checkpoint", "7"], "--checkpoint 7: '"))
    cases.append((run / "checkpoint-5", ["--checkpoint", "7"], "pass the run directory"))
    # A checkpoint folder without a backbone (its manifest rewritten, so it verifies).
    folder = run / "checkpoint-5"
    (folder / "backbone.pt").unlink()
    meta = json.loads((folder / "meta.json").read_text())
    write_meta(folder, {k: v for k, v in meta.items() if k != "files"})
    cases.append((run, [], "holds no backbone.pt (it holds ['config.yaml', 'meta.json'])"))
    damaged = myresnet_run(tmp_path / "b", toy_cifar_dir, steps=(5,))
    (damaged / "checkpoint-5" / "backbone.pt").write_bytes(b"x")
    cases.append((damaged, [], "no checkpoint of RUN_DIR"))
    cases.append((damaged, ["--checkpoint", "5"], "is damaged: backbone.pt is 1 bytes"))
    for run_dir, options, expected in cases:
        err = one_error_line(capsys, run_dir, *options, "--format", "safetensors",
                             "--output-dir", out)  # fmt: skip
        assert expected in err, err
        assert not out.exists()  # nothing written, not even the folder


def test_formats_that_cannot_hold_the_backbone_are_one_line(
    tmp_path: Path, toy_cifar_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    run = myresnet_run(tmp_path / "cifar", toy_cifar_dir)
    mlp = tiny_tabular_config(tmp_path, model={"backbone_kwargs": {"in_features": 6, "width": 8,
                                                                   "num_layers": 1}})  # fmt: skip
    stem = tiny_image_config(tmp_path, toy_cifar_dir,
                             model={"backbone_kwargs": {"cifar_stem": True}})  # fmt: skip
    stem["model"]["backbone"] = "timm:resnet18"
    cases = [
        (
            run,
            "onnx",
            "--format must be one of safetensors, timm, torchscript, torch_export, got 'onnx'",
        ),
        (run, "timm", "timm has no model matching MyResNet"),
        (write_run(tmp_path / "mlp", mlp), "timm", "timm holds image models only; 'mlp'"),
        (write_run(tmp_path / "stem", stem), "timm", "with cifar_stem=True has no timm model"),
    ]
    for run_dir, export_format, expected in cases:
        err = one_error_line(capsys, run_dir, "--format", export_format, "--output-dir", out)
        assert expected in err, err
        if export_format == "timm":  # the refusal says what to use instead
            assert "--format safetensors" in err and "--format torch_export" in err, err
        assert not out.exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    err = one_error_line(capsys, run, "--format", "safetensors", "--output-dir", tmp_path / "taken")
    assert "is not empty (it holds ['notes.txt'])" in err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_the_script_exits_2_with_one_line_before_importing_torch(tmp_path: Path) -> None:
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{str(EXPORT_SCRIPT)!r}, 'runs/x', '--format', 'onnx', '--output-dir', 'out']\n"
        "try:\n"
        f"    runpy.run_path({str(EXPORT_SCRIPT)!r}, run_name='__main__')\n"
        "finally:\n"
        "    print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2 and done.stdout.strip() == "False"
    assert done.stderr == (
        "contrastkit-export: error: --format must be one of safetensors, timm, torchscript, "
        "torch_export, got 'onnx'\n"
    )


def test_console_script_is_installed() -> None:
    script = shutil.which("contrastkit-export", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the contrastkit-export console script is not installed in this environment")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "safetensors|timm|torchscript|torch_export" in done.stdout
