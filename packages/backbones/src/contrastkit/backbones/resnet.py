"""ResNets in CIFAR form (3x3 stride-1 stem, no max-pool) for 32x32 images, MyResNet among them.

Module and parameter names follow torchvision's ResNet, so a torchvision state_dict of the
same layout (conv1 swapped for a 3x3 conv, fc removed) loads into these models unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from contrastkit.backbones._checks import check_bool, check_image_input, check_positive_int

BlockKind = Literal["basic", "bottleneck"]

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


def _projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN used where a block changes the spatial size or the channel count."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class _BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = (
            _projection_shortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, as torchvision's v1.5), 1x1 expand x4 (ResNet-50 block)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            _projection_shortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


_BLOCKS: dict[str, type[_BasicBlock] | type[_Bottleneck]] = {
    "basic": _BasicBlock,
    "bottleneck": _Bottleneck,
}


class CifarResNet(nn.Module):
    """ResNet with a CIFAR stem: 3x3 stride-1 conv (64 ch) + BN + ReLU, no max-pool.

    Four stages of `layers[i]` blocks with widths 64, 128, 256, 512 and strides 1, 2, 2, 2,
    then global average pooling. No classifier: the output is the feature vector.

    Args:
        layers: number of blocks in each of the four stages, e.g. (2, 2, 2, 2) for ResNet-18.
        block: "basic" (two 3x3 convs) or "bottleneck" (1x1-3x3-1x1, 4x expansion).
        in_channels: channels of the input images (3 for RGB, 1 for grayscale).
        zero_init_residual: start the last BN of every block at weight 0, so each block
            begins as the identity (Goyal et al. 2017); off by default as in torchvision.

    Input: (N, in_channels, H, W) float images; any H, W >= 8 works (the stride is 8).
    Output: (N, num_features) float features, num_features = 512 x block expansion.
    """

    def __init__(
        self,
        layers: Sequence[int] = (2, 2, 2, 2),
        block: BlockKind = "basic",
        *,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if isinstance(layers, str) or not isinstance(layers, Sequence) or len(layers) != 4:
            raise ValueError(f"layers must be a sequence of 4 block counts, got {layers!r}")
        for stage, count in enumerate(layers, start=1):
            check_positive_int(f"layers[{stage - 1}] (blocks in layer{stage})", count)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_bool("zero_init_residual", zero_init_residual)
        block_cls = _BLOCKS[block]

        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        channels = 64
        stages = []
        for width, stride, count in zip(STAGE_WIDTHS, STAGE_STRIDES, layers):
            blocks = []
            for i in range(count):
                blocks.append(block_cls(channels, width, stride if i == 0 else 1))
                channels = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features: int = channels

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, _BasicBlock | _Bottleneck):
                    nn.init.zeros_(module.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_features) features."""
        check_image_input(x, self.in_channels, type(self).__name__)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class MyResNet(CifarResNet):
    """The ISD seed project's "mini-project" ResNet: under 5M parameters, 512 features.

    A CifarResNet with BasicBlocks and 2, 1, 1, 1 blocks per stage. With a 10-class linear
    classifier on top it has exactly 4,977,226 trainable parameters (4,972,096 without).

    Input: (N, in_channels, H, W) float images, made for 32x32.
    Output: (N, 512) float features.
    """

    def __init__(self, *, in_channels: int = 3, zero_init_residual: bool = False) -> None:
        super().__init__(
            (2, 1, 1, 1),
            "basic",
            in_channels=in_channels,
            zero_init_residual=zero_init_residual,
        )
