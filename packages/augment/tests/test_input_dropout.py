"""Input-dropout views for tabular rows (i-Mix's --inputdrop): which features may be dropped,
how often, unscaled, independently per view, reproducible from the seed and the state_dict."""

from __future__ import annotations

import pytest
import torch

from contrastkit.augment import NoiseRecipe, input_dropout_views, make_views


def _rows(n: int = 2000, features: int = 6) -> torch.Tensor:
    return torch.arange(1, n * features + 1, dtype=torch.float32).reshape(n, features)


def test_recipe_is_imix_inputdrop() -> None:
    first, second = input_dropout_views(0.2, 10)
    assert first == second == NoiseRecipe(std=0.0, drop_p=0.2, drop_columns=10)


def test_masks_equal_an_independent_draw_and_leave_the_other_columns_alone() -> None:
    x = _rows()
    views = make_views("input_dropout_views", 1, dataset="tabular", seed=7, p=0.3, columns=4)(x)
    # The same generator, drawn by hand in the documented order: view 1's mask, then view 2's.
    generator = torch.Generator().manual_seed(7)
    for view in views:
        keep = torch.rand((x.shape[0], 4), generator=generator) > 0.3
        torch.testing.assert_close(view[:, :4], x[:, :4] * keep)  # zeroed or unchanged: no 1/(1-p)
        torch.testing.assert_close(view[:, 4:], x[:, 4:])
    assert not torch.equal(views[0], views[1])  # each view its own mask


def test_drop_rate_is_p_and_every_column_without_a_limit() -> None:
    x = _rows(5000, 3)
    view = make_views("input_dropout_views", 1, dataset="tabular", seed=0, p=0.2)(x)[0]
    dropped = (view == 0).float()
    assert dropped.mean().item() == pytest.approx(0.2, abs=0.01)
    assert (dropped.mean(dim=0) > 0.15).all()  # every column is a candidate


def test_resumes_exactly_from_the_state_dict() -> None:
    augment = make_views("input_dropout_views", 1, dataset="tabular", seed=3)
    x = _rows(64)
    augment(x)
    state = augment.state_dict()
    expected = augment(x)
    restored = make_views("input_dropout_views", 1, dataset="tabular", seed=99)
    restored.load_state_dict(state)
    for a, b in zip(restored(x), expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"p": 1.5}, "drop_p must be a probability"),
        ({"columns": 0}, "drop_columns must be None"),
        ({"columns": 2.5}, "drop_columns must be None"),
        ({"rate": 0.1}, r"unknown field\(s\) \['rate'\]"),
    ],
)
def test_bad_options_name_themselves(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_views("input_dropout_views", 1, dataset="tabular", seed=0, **options)


def test_more_columns_than_features_is_refused_naming_both() -> None:
    augment = make_views("input_dropout_views", 1, dataset="tabular", seed=0, columns=10)
    with pytest.raises(ValueError, match=r"drop_columns=10 is more than the batch's 6 features"):
        augment(_rows(8))
