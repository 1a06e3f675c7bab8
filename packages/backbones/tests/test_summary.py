"""model_summary: totals equal the model's parameters, shapes are the real ones, text is aligned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.backbones import (
    LinearClassifier,
    ProjectionHead,
    SummaryRow,
    create_backbone,
    model_summary,
)


def test_totals_and_rows_match_the_parameters() -> None:
    model = nn.Sequential(create_backbone("myresnet"), LinearClassifier(512, 10))
    summary = model_summary(model, (1, 3, 32, 32))
    total = sum(p.numel() for p in model.parameters())
    assert summary.total_params == total == 4_977_226
    assert summary.trainable_params == total and summary.non_trainable_params == 0
    assert sum(row.num_params for row in summary.rows) == total
    assert all(isinstance(row, SummaryRow) for row in summary.rows)


def test_rows_have_real_output_shapes_in_call_order() -> None:
    backbone = create_backbone("myresnet")
    summary = model_summary(backbone, (2, 3, 32, 32))
    by_name = {row.name: row for row in summary.rows}
    assert summary.rows[0] == ("conv1", (2, 64, 32, 32), 64 * 3 * 9)
    assert by_name["layer2.0.conv1"].output_shape == (2, 128, 16, 16)
    assert by_name["layer4.0.conv2"].output_shape == (2, 512, 4, 4)
    assert by_name["layer4.0.conv2"].num_params == 512 * 512 * 9
    assert summary.rows[-1].name == "avgpool"
    assert summary.rows[-1].output_shape == (2, 512, 1, 1)


def test_frozen_parameters_counted_as_non_trainable_and_modes_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    model.train()
    before = model[1].running_mean.clone()
    summary = model_summary(model, (1, 4))  # batch 1 works: BN runs in eval mode
    assert summary.total_params == 4 * 8 + 8 + 16 + 8 * 2 + 2
    assert summary.non_trainable_params == 4 * 8 + 8
    assert model.training and torch.equal(model[1].running_mean, before)


def test_shared_module_counted_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    summary = model_summary(model, (3, 4))
    assert [row.name for row in summary.rows] == ["0", "1", "0"]
    assert [row.num_params for row in summary.rows] == [20, 0, 0]
    assert summary.total_params == 20


def test_text_table_is_aligned_and_has_totals() -> None:
    text = str(model_summary(ProjectionHead(16, 32, 8), (2, 16)))
    assert text == model_summary(ProjectionHead(16, 32, 8), (2, 16)).to_text()
    lines = text.splitlines()
    assert lines[0].startswith('Model: "ProjectionHead"')
    body = [line for line in lines if line.startswith("layers.")]
    assert len(body) == 4
    assert body[0].split() == ["layers.0", "(Linear)", "(2,", "32)", "512"]
    assert len({len(line) for line in body}) == 1  # right-aligned counts: equal line lengths
    assert "Total params: 840" in lines  # 16*32 + 2*32 + 32*8 + 8
    assert "Trainable params: 840" in lines
    assert "Non-trainable params: 0" in lines


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="input_size"):
        model_summary(nn.Linear(2, 2), ())
    with pytest.raises(ValueError, match=r"input_size\[1\] must be a positive int, got 0"):
        model_summary(nn.Linear(2, 2), (1, 0))
    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Module"):
        model_summary("resnet", (1, 2))
