"""A backbone pretrained with contrastkit leaves it: tiny real runs are exported, and the "Load it
without contrastkit" code of each export's README.md runs, as written, in a fresh Python process
where contrastkit cannot be imported (torch, safetensors, torchvision and timm only), after the
export folders were moved and each block's one `folder = ...` line edited, giving the run's own
features of the same inputs to 1e-6: safetensors through torchvision (MyResNet), timm
(a `timm:` backbone) and plain torch (the tabular MLP), timm's own format, TorchScript and
torch.export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from contrastkit.pipelines.config import config_from_dict
from contrastkit.pipelines.data import AUGMENT_DATASET, InMemoryDataset
from contrastkit.pipelines.evaluation.features import identity_transform
from contrastkit.pipelines.evaluation.pretrained import build_backbone, load_checkpoint
from contrastkit.pipelines.export import export_backbone
from contrastkit.pipelines.pretrain import run_pretrain

CLASSES = ["a", "b", "c", "d"]

# Runs the README blocks given as JSON {name: code} in one namespace each, with contrastkit
# hidden from the import system, and saves each block's `features`.
ISOLATED_RUNNER = """
import importlib.abc, json, sys

class NoContrastkit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "contrastkit" or name.startswith("contrastkit."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None

sys.meta_path.insert(0, NoContrastkit())
try:
    import contrastkit.backbones
except ModuleNotFoundError:
    pass
else:
    sys.exit("contrastkit is importable")
import torch

blocks = json.loads(open(sys.argv[1]).read())
found = {}
for name, code in blocks.items():
    namespace = {}
    exec(compile(code, name, "exec"), namespace)
    found[name] = namespace["features"]
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "contrastkit")
if leaked:
    sys.exit(f"contrastkit modules were imported: {leaked}")
torch.save(found, sys.argv[2])
"""


def tiny_run(root: Path, backbone: str, kind: str) -> Path:
    """A seconds-long SimCLR run (one epoch, 4 steps) on random data held in memory."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % len(CLASSES)
    if kind == "image":
        inputs = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=generator)
        data = {"dataset": "cifar10", "image_size": 8}
        kwargs = {}
    else:
        inputs = torch.randn(64, 6, generator=generator)
        data = {"dataset": "tabular", "augment": "gaussian_noise_views"}
        kwargs = {"width": 16, "num_layers": 2}
    raw = {
        "method": {"name": "simclr"},
        "model": {"backbone": backbone, "backbone_kwargs": kwargs, "projection_hidden_dim": 16,
                  "projection_dim": 8},
        "data": data,
        "train": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0, "knn_every": 0,
                  "output_dir": str(root / "run"), "progress_bar": False},
    }  # fmt: skip
    dataset = InMemoryDataset(inputs, labels, CLASSES, kind)
    return run_pretrain(config_from_dict(raw), train_data=dataset, test_data=dataset).run_dir


def without_contrastkit_block(readme: Path) -> str:
    section = readme.read_text().split("## Load it without contrastkit", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(blocks) == 1, f"{readme}: expected one Python block, got {len(blocks)}"
    return blocks[0]


def run_features(run: Path) -> torch.Tensor:
    """The run's own backbone on the inputs the README blocks make (seeded), as contrastkit feeds
    it: uint8 images through the identity view with the run's normalization, or rows as given."""
    checkpoint = load_checkpoint(run)
    backbone = build_backbone(checkpoint).eval()
    generator = torch.Generator().manual_seed(0)
    if checkpoint.input_kind == "tabular":
        inputs = torch.randn(4, 6, generator=generator)
    else:
        images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=generator)
        inputs = identity_transform(AUGMENT_DATASET[checkpoint.dataset], 8)(images)
    with torch.no_grad():
        return backbone(inputs)


def test_exports_load_without_contrastkit(tmp_path: Path) -> None:
    runs = {
        "timm": tiny_run(tmp_path / "timm", "timm:test_resnet", "image"),
        "myresnet": tiny_run(tmp_path / "myresnet", "myresnet", "image"),
        "mlp": tiny_run(tmp_path / "mlp", "mlp", "tabular"),
    }
    exports = {  # name -> (run, format)
        "timm-safetensors": ("timm", "safetensors"),
        "timm-timm": ("timm", "timm"),
        "timm-torchscript": ("timm", "torchscript"),
        "myresnet-safetensors": ("myresnet", "safetensors"),
        "myresnet-torchscript": ("myresnet", "torchscript"),
        "myresnet-torch_export": ("myresnet", "torch_export"),
        "mlp-torch_export": ("mlp", "torch_export"),
        "mlp-safetensors": ("mlp", "safetensors"),
    }
    blocks = {}
    for name, (run, export_format) in exports.items():
        folder = tmp_path / "exports" / name
        export_backbone(runs[run], export_format, folder)
        blocks[name] = without_contrastkit_block(folder / "README.md")
    assert (
        "from torchvision.models.resnet import BasicBlock, ResNet" in blocks["myresnet-safetensors"]
    )
    assert "pretrained_cfg_overlay=dict(file=" in blocks["timm-timm"]
    assert "torch.nn.BatchNorm1d(16)" in blocks["mlp-safetensors"]  # plain torch, no import
    assert "torch.jit.load(" in blocks["myresnet-torchscript"]
    assert "torch.export.load(" in blocks["mlp-torch_export"]

    # Each block names its folder in one line: moved elsewhere, that line's edit is all it needs.
    (tmp_path / "exports").rename(tmp_path / "moved")
    for name, code in blocks.items():
        old = str(tmp_path / "exports" / name)
        code, edits = re.subn(
            r"^folder = .*$", f"folder = {str(tmp_path / 'moved' / name)!r}", code, flags=re.M
        )
        assert edits == 1 and old not in code, f"{name}: the folder is named outside its line"
        blocks[name] = code
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED_RUNNER, str(tmp_path / "blocks.json"),
         str(tmp_path / "features.pt")],
        cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = torch.load(tmp_path / "features.pt", weights_only=True)
    for name, (run, _) in exports.items():
        torch.testing.assert_close(found[name], run_features(runs[run]), atol=1e-6, rtol=0)
