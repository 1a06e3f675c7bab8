"""The README.md model card of an export folder: what was trained how (method, data, epochs, steps),
what the run folder measured of it (probe results, the kNN monitor), what it takes and gives, and
how to load it with contrastkit and without it (torchvision, timm or plain torch; the code blocks
run as written, the tests execute them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from contrastkit.backbones import EXPORT_WEIGHTS_FILE, TIMM_PREFIX
from contrastkit.pipelines.evaluation.results import markdown_cell
from contrastkit.pipelines.export import PROGRAM_FORMATS
from contrastkit.pipelines.export.formats import TORCH_EXPORT_FILE, TORCHSCRIPT_FILE

# The CIFAR-stem ResNets as torchvision's ResNet (their module names are torchvision's): block
# class and blocks per stage.
TORCHVISION_LAYOUT: dict[str, tuple[str, list[int]]] = {
    "myresnet": ("BasicBlock", [2, 1, 1, 1]),
    "resnet18_cifar": ("BasicBlock", [2, 2, 2, 2]),
    "resnet34_cifar": ("BasicBlock", [3, 4, 6, 3]),
    "resnet50_cifar": ("Bottleneck", [3, 4, 6, 3]),
}
RESULT_COLUMNS = ("file", "mode", "dataset", "label_fraction", "linear_top1", "top5", "knn_top1",
                  "knn_k", "probe_epochs")  # fmt: skip


def _python(code: str) -> str:
    return f"```python\n{code.strip()}\n```\n"


def _features_lines(config: Mapping[str, Any]) -> str:
    """Inputs made as in pretraining, through `backbone`, into `features`."""
    spec, out = config["input"], config["output"]["shape"][1]
    if spec["kind"] == "tabular":
        return (
            f"rows = torch.randn(4, {spec['features']}, generator=torch.Generator().manual_seed(0))"
            "  # your rows, standardized as in pretraining\n"
            f"with torch.no_grad():\n    features = backbone(rows)  # (4, {out})\n"
        )
    norm, channels = spec["normalization"], spec["channels"]
    return (
        f"mean = torch.tensor({norm['mean']}).view(1, {channels}, 1, 1)\n"
        f"std = torch.tensor({norm['std']}).view(1, {channels}, 1, 1)\n"
        f"images = torch.randint(0, 256, (4, {channels}, {spec['height']}, {spec['width']}), "
        "dtype=torch.uint8, generator=torch.Generator().manual_seed(0))  # your RGB images\n"
        f"with torch.no_grad():\n    features = backbone((images / 255 - mean) / std)  # (4, {out})\n"
    )


def _folder_line(folder: Path) -> str:
    """The one line of each code block that names the export folder (the only absolute path in
    the card's code, so a moved or downloaded folder needs one edit)."""
    return f"folder = {str(folder)!r}  # this export folder: change it where you moved the folder\n"


def _in_folder(name: str) -> str:
    """Python for the path of the file `name` of the export folder, given `folder` as above."""
    return 'f"{folder}/' + name + '"'


def _call(name: str, kwargs: Mapping[str, Any]) -> str:
    args = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return f"{name!r}{args}"


def with_contrastkit(config: Mapping[str, Any], folder: Path) -> str:
    backbone = config["backbone"]
    if config["format"] in PROGRAM_FORMATS:
        return "The program needs no contrastkit: see below.\n"
    call = _call(backbone["name"], backbone["kwargs"])
    return _python(
        "import torch\n\nfrom contrastkit.backbones import load_exported_backbone\n\n"
        + _folder_line(folder)
        + f"backbone = load_exported_backbone(folder).eval()  # {backbone['class']}\n"
        f"# the same: create_backbone({call}, pretrained_path=folder)\n" + _features_lines(config)
    )


def _plain_safetensors(config: Mapping[str, Any], folder: Path, module: nn.Module) -> str | None:
    """Python that rebuilds the backbone without contrastkit and loads model.safetensors, or None
    for a backbone that has no short plain definition (imix_mlp5)."""
    backbone, spec = config["backbone"], config["input"]
    name, kwargs = backbone["name"], backbone["kwargs"]
    load = f"load_file({_in_folder(EXPORT_WEIGHTS_FILE)})"
    if name in TORCHVISION_LAYOUT:
        block, layers = TORCHVISION_LAYOUT[name]
        return (
            "import torch\nfrom safetensors.torch import load_file\n"
            f"from torchvision.models.resnet import {block}, ResNet\n\n{_folder_line(folder)}"
            f"backbone = ResNet({block}, {layers})  # torchvision's module names, with the CIFAR stem:\n"
            f"backbone.conv1 = torch.nn.Conv2d({spec['channels']}, 64, 3, 1, 1, bias=False)\n"
            "backbone.maxpool = torch.nn.Identity()\nbackbone.fc = torch.nn.Identity()\n"
            f"backbone.load_state_dict({load})\nbackbone.eval()\n"
        )
    if name.startswith(TIMM_PREFIX):
        create = dict(kwargs.get("model_kwargs") or {})
        if int(kwargs.get("in_channels", 3)) != 3:
            create["in_chans"] = int(kwargs["in_channels"])
        lines = [
            "import timm\nimport torch\nfrom safetensors.torch import load_file\n\n"
            + _folder_line(folder).rstrip("\n"),
            f"backbone = timm.create_model({_call(name[len(TIMM_PREFIX) :], create)}, num_classes=0)",
        ]
        if kwargs.get("cifar_stem"):
            out = module.model.conv1.out_channels
            lines.append(
                f"backbone.conv1 = torch.nn.Conv2d({spec['channels']}, {out}, 3, 1, 1, bias=False)\n"
                "backbone.maxpool = torch.nn.Identity()  # the CIFAR stem"
            )
        lines.append(
            f"state = {load}  # TimmBackbone's keys: timm's behind 'model.'\n"
            'backbone.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})\n'
            "backbone.eval()\n"
        )
        return "\n".join(lines)
    if name == "mlp":
        width, depth = int(module.num_features), len(module.layers) // 3
        return (
            "import torch\nfrom safetensors.torch import load_file\n\n"
            f"{_folder_line(folder)}layers = []\n"
            f"for i in range({depth}):  # Linear (no bias) -> BatchNorm1d -> ReLU, {width} wide\n"
            f"    linear = torch.nn.Linear({module.in_features} if i == 0 else {width}, {width}, "
            "bias=False)\n"
            f"    layers += [linear, torch.nn.BatchNorm1d({width}), torch.nn.ReLU()]\n"
            'backbone = torch.nn.Sequential()\nbackbone.add_module("layers", '
            "torch.nn.Sequential(*layers))\n"
            f"backbone.load_state_dict({load})\nbackbone.eval()\n"
        )
    return None


def without_contrastkit(config: Mapping[str, Any], folder: Path, module: nn.Module) -> str:
    """The card's "Without contrastkit" section body for the export's format."""
    fmt = config["format"]
    if fmt == "torchscript":
        code = (
            f"import torch\n\n{_folder_line(folder)}"
            f"backbone = torch.jit.load({_in_folder(TORCHSCRIPT_FILE)}).eval()\n"
        )
        note = (
            "Traced in eval mode (BatchNorm uses its running statistics whatever `.train()` "
            f"says) at input {config['input']['shape']}; any batch size works, other image sizes "
            "where the network allows them.\n"
        )
        return note + "\n" + _python(code + _features_lines(config))
    if fmt == "torch_export":
        code = (
            f"import torch\n\n{_folder_line(folder)}"
            f"backbone = torch.export.load({_in_folder(TORCH_EXPORT_FILE)}).module()\n"
        )
        note = (
            "Exported with torch.export in eval mode (BatchNorm uses its running statistics) at "
            f"input {config['input']['shape']} with a dynamic batch size: any batch size works; "
            "the image size is fixed. `.module()` gives a plain `nn.Module` to call, and torch "
            "alone loads it (no Python source of the network).\n"
        )
        return note + "\n" + _python(code + _features_lines(config))
    if fmt == "timm":
        timm_args = dict(config["model_args"])
        call = _call(config["architecture"], {})
        extra = "".join(f", {k}={v!r}" for k, v in timm_args.items())
        code = (
            f"import timm\nimport torch\n\n{_folder_line(folder)}backbone = timm.create_model(\n"
            f"    {call}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={_in_folder(EXPORT_WEIGHTS_FILE)}), "
            f"num_classes=0{extra}\n).eval()\n"
        )
        note = (
            "timm reads the weights with strict key matching (no missing or unexpected key). "
            "Its data config keeps the model's own mean and std: use those below (they are in "
            'config.json), or `timm.create_model(f"local-dir:{folder}", pretrained=True)`, '
            "which reads them from this folder's config.json.\n"
        )
        return note + "\n" + _python(code + _features_lines(config))
    code = _plain_safetensors(config, folder, module)
    if code is None:
        return (
            f"`{config['backbone']['name']}` has no short plain-PyTorch definition: export the run "
            "with `--format torch_export` (or `torchscript`) to run it without contrastkit.\n"
        )
    return _python(code + _features_lines(config))


def _results_table(rows: list[dict[str, str]]) -> str:
    header = "| " + " | ".join(RESULT_COLUMNS) + " |\n|" + " --- |" * len(RESULT_COLUMNS) + "\n"
    body = "".join(
        "| " + " | ".join(markdown_cell(row.get(c, "") or "") for c in RESULT_COLUMNS) + " |\n"
        for row in rows
    )
    return header + body


def _takes(spec: Mapping[str, Any]) -> str:
    if spec["kind"] != "image":
        return f"(N, {spec['features']}) float32 rows, standardized ({spec['standardize']})"
    norm = spec["normalization"]
    return (
        f"(N, {spec['channels']}, {spec['height']}, {spec['width']}) float32, (pixels / 255 - "
        f"mean) / std with mean {norm['mean']}, std {norm['std']} ({norm['dataset']})"
    )


def facts_table(config: Mapping[str, Any]) -> str:
    """The card's first table: method, backbone, data, training, input, output, source."""
    backbone, source, meta = config["backbone"], config["source"], config["checkpoint_meta"]
    training = config["training_config"]
    data, train = training.get("data") or {}, training.get("train") or {}
    optimizer, imix = training.get("optimizer") or {}, (training.get("method") or {}).get("imix")
    method = source["method"] + (f" with i-Mix {imix}" if imix not in (None, "none") else "")
    facts = [
        ("method", f"{method} ({source['task']} run)"),
        ("backbone", f"`{backbone['name']}` {json.dumps(backbone['kwargs'])}: {backbone['class']}, "
         f"{backbone['num_parameters']:,} parameters"),
        ("data", f"{data.get('dataset')} ({data.get('data_dir')}), "
         f"{data.get('train_subset') or 'all'} training samples, augment {data.get('augment')}"),
        ("training", f"{source['epochs']} of {train.get('epochs')} epochs, step {source['step']} "
         f"of {meta.get('total_steps')}, global batch {meta.get('global_batch')}, "
         f"{optimizer.get('name')} lr {optimizer.get('lr')}, {meta.get('world_size')} process(es), "
         f"precision {meta.get('mixed_precision')}"),
        ("input", _takes(config["input"])),
        ("output", f"(N, {backbone['num_features']}) features"),
        ("source", f"`{source['checkpoint']}`"),
    ]  # fmt: skip
    if "initialized_from" in backbone:
        facts.append(("initialized from", json.dumps(backbone["initialized_from"])))
    rows = "".join(f"| {name} | {markdown_cell(text)} |\n" for name, text in facts)
    return "| | |\n| --- | --- |\n" + rows


def model_card(
    config: Mapping[str, Any],
    folder: Path,
    module: nn.Module,
    results: list[dict[str, str]],
    knn: Mapping[str, Any] | None,
) -> str:
    """The README.md text of the export folder `folder`, from its config.json (`config`), the
    backbone `module`, the probe rows of the checkpoint (`source.probe_results`) and the kNN
    monitor at its step (`source.monitor_knn`)."""
    backbone, source = config["backbone"], config["source"]
    if results:
        measured = _results_table(results)
        if any(row.get("mode") in ("joint", "supervised") for row in results):
            measured += (
                "\nA joint or supervised row's linear_top1 and top5 are its own classifier's, on "
                "the validation split.\n"
            )
    else:
        measured = (
            "No probe results of this checkpoint in the run folder: `contrastkit-probe "
            "--checkpoint DIR` (DIR: this folder) measures them.\n"
        )
    if knn is not None:
        measured += (
            f"\nkNN monitor during pretraining at this step: top-1 {knn['knn_top1']:.2f} %\n"
        )
    versions = ", ".join(f"{name} {version}" for name, version in config["versions"].items())
    files = (*config["files"], "config.json", "README.md")
    return (
        f"# {source['method']} {backbone['name']} on {source['dataset']}\n\n"
        f"A {backbone['class']} backbone trained with contrastkit, exported by "
        f"`contrastkit-export --format {config['format']}` ({versions}).\n\n{facts_table(config)}\n"
        f"## Results found in the run folder\n\n{measured}\n"
        f"## Load it with contrastkit\n\n{with_contrastkit(config, folder)}\n"
        f"## Load it without contrastkit\n\n{without_contrastkit(config, folder, module)}\n"
        "## Files\n\n" + "".join(f"- `{name}`\n" for name in files)
    )
