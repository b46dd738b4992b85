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


# Narrow budgets (min close to max) are where smart_resize's per-side rounding misses its own range.
NARROW = [
    PixelBudget(3136, 3136),
    PixelBudget(3136, 6272),
    PixelBudget(6272, 6272),
    PixelBudget(3136, 12544),
    PixelBudget(128 * 128, 128 * 128 * 2, patch_size=16, merge_size=2),
]
MANY_SIZES = [(w, h) for w in range(1, 700, 13) for h in range(1, 700, 17) if max(w, h) / min(w, h) <= 200] + [
    (150, 150),
    (1955, 1841),
    (4000, 3000),
    (3000, 15),
]


def _in_budget(b: PixelBudget, size: tuple[int, int]) -> bool:
    w, h = size
    return w % b.factor == 0 and h % b.factor == 0 and b.min_pixels <= w * h <= b.max_pixels


@pytest.mark.parametrize("budget", BUDGETS + NARROW, ids=lambda b: f"{b.min_pixels}-{b.max_pixels}-{b.patch_size}")
def test_resized_is_idempotent_and_a_fixed_point_of_smart_resize(budget: PixelBudget) -> None:
    f, lo, hi = budget.factor, budget.min_pixels, budget.max_pixels
    agree = 0
    for w, h in MANY_SIZES:
        out = budget.resized(w, h)
        assert _in_budget(budget, out), (w, h, out)
        assert budget.resized(*out) == out, (w, h, out)  # idempotent
        # The image processor, given the rendered image, leaves it as it is.
        assert smart_resize(out[1], out[0], factor=f, min_pixels=lo, max_pixels=hi) == (out[1], out[0])
        expected_h, expected_w = smart_resize(h, w, factor=f, min_pixels=lo, max_pixels=hi)
        if lo <= expected_w * expected_h <= hi:
            assert out == (expected_w, expected_h), (w, h)  # smart_resize's own answer whenever it is valid
            agree += 1
        else:
            # smart_resize missed the budget: the processor resizes its own output once more, and that
            # second answer is ours when it is valid.
            again_h, again_w = smart_resize(expected_h, expected_w, factor=f, min_pixels=lo, max_pixels=hi)
            if lo <= again_w * again_h <= hi:
                assert out == (again_w, again_h), (w, h)
        assert budget.visual_tokens(*out) == budget.visual_tokens(w, h)
    if budget in BUDGETS:
        assert agree == len(MANY_SIZES)  # wide, real budgets: always exactly smart_resize


def test_narrow_budget_example_from_the_planner() -> None:
    b = PixelBudget(3136, 3136)
    assert smart_resize(150, 150, factor=28, min_pixels=3136, max_pixels=3136) == (28, 28)  # below its own min
    assert b.resized(150, 150) == (56, 56) == b.resized(56, 56)
    assert b.visual_tokens(150, 150) == 4
    # No aspect-preserving size settles for a wide image at min = max: the closest in-budget shape wins.
    assert b.resized(1000, 100) == (112, 28)


def test_budget_without_any_valid_size_is_refused() -> None:
    with pytest.raises(BudgetError, match="multiple of 784"):
        PixelBudget(3137, 3200)
