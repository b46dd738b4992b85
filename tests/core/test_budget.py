from __future__ import annotations

import json

import pytest

from core.budget import BudgetError, PixelBudget

smart_resize = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl").smart_resize

SIZES = [
    (1, 1),
    (28, 28),
    (100, 37),
    (512, 512),
    (1841, 1955),
    (4000, 3000),
    (640, 480),
    (56, 3000),
    (3000, 56),
    (13, 999),
    (448, 448),
    (200, 1),
]
BUDGETS = [
    PixelBudget(56 * 56, 28 * 28 * 1280),
    PixelBudget(4 * 28 * 28, 256 * 28 * 28),
    PixelBudget(56 * 56, 448 * 448),
    PixelBudget(128 * 128, 128 * 128 * 4, patch_size=16, merge_size=2),
]


@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: f"{b.min_pixels}-{b.max_pixels}-{b.patch_size}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resized_matches_transformers_smart_resize(budget: PixelBudget, size: tuple[int, int]) -> None:
    w, h = size
    expected_h, expected_w = smart_resize(
        h, w, factor=budget.factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
    )
    assert budget.resized(w, h) == (expected_w, expected_h)


def test_tokens_and_grid() -> None:
    b = PixelBudget(56 * 56, 448 * 448)
    assert b.factor == 28
    assert b.resized(512, 512) == (448, 448)
    assert b.grid_thw(512, 512) == (1, 32, 32)
    assert b.visual_tokens(512, 512) == 256
    assert b.visual_tokens(448, 448) == 256


def test_with_limits_and_validation() -> None:
    b = PixelBudget(56 * 56, 448 * 448)
    small = b.with_limits(max_pixels=224 * 224)
    assert small.max_pixels == 224 * 224 and small.min_pixels == b.min_pixels and b.max_pixels == 448 * 448
    with pytest.raises(BudgetError):
        PixelBudget(1000, 10)
    with pytest.raises(BudgetError):
        b.resized(1, 300)  # aspect ratio above 200


def test_from_preprocessor_config_old_and_new_keys(tmp_path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
        )
    )
    assert PixelBudget.from_preprocessor_config(tmp_path) == PixelBudget(3136, 12845056)
    new = tmp_path / "new.json"
    new.write_text(
        json.dumps({"size": {"shortest_edge": 65536, "longest_edge": 16777216}, "patch_size": 16, "merge_size": 2})
    )
    b = PixelBudget.from_preprocessor_config(new)
    assert (b.min_pixels, b.max_pixels, b.patch_size, b.factor) == (65536, 16777216, 16, 32)


def test_from_preprocessor_config_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(BudgetError, match="preprocessor_config.json"):
        PixelBudget.from_preprocessor_config(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BudgetError, match="bad.json: not valid JSON"):
        PixelBudget.from_preprocessor_config(bad)
    bad.write_text(json.dumps({"patch_size": 14}))
    with pytest.raises(BudgetError, match="bad.json: no pixel limits"):
        PixelBudget.from_preprocessor_config(bad)
