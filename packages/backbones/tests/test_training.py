"""MyResNet end to end on CPU: it learns a toy task, and torch.compile matches eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.backbones import LinearClassifier, MyResNet


def _stripes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 16, 16) noisy stripe images with a random phase; label 0 vertical, 1 horizontal."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    coords = torch.arange(16, dtype=torch.float32)
    phase = torch.rand(n, 1, 1, generator=generator) * 6.283
    vertical = torch.sin(coords.view(1, 1, 16) * 1.2 + phase).expand(n, 16, 16)
    horizontal = torch.sin(coords.view(1, 16, 1) * 1.2 + phase).expand(n, 16, 16)
    image = torch.where(labels.view(n, 1, 1) == 0, vertical, horizontal)
    image = image.unsqueeze(1).expand(n, 3, 16, 16)
    return image + 0.5 * torch.randn(n, 3, 16, 16, generator=generator), labels


def test_myresnet_learns_stripe_orientation() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(MyResNet(), LinearClassifier(512, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(25):
        images, labels = _stripes(32, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels = _stripes(256, generator)
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.9, f"held-out accuracy {accuracy:.3f} after 25 steps"


def test_torch_compile_matches_eager() -> None:
    torch.manual_seed(0)
    model = MyResNet().eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model)
    with torch.no_grad():
        expected = model(x)
        got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        compiled(torch.randn(2, 1, 32, 32))
