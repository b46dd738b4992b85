"""Token budget: over-long samples get a lower max_pixels, or are dropped; never truncated."""

from __future__ import annotations

from core.budget import PixelBudget
from core.manifest import Sample
from curation.recipe import Budget
from curation.tokens import check_budget, sample_text_tokens


def _sample(w: int, h: int, words: int = 10, n_images: int = 1) -> Sample:
    return Sample.model_validate(
        {
            "id": "s",
            "task": "vqa",
            "messages": [
                {"role": "user", "content": "<image>" * n_images + "Describe."},
                {"role": "assistant", "content": " ".join(["word"] * words)},
            ],
            "images": [{"path": f"{i}.png", "width": w, "height": h} for i in range(n_images)],
        }
    )


def test_fitting_sample_is_unchanged_and_counts_match_pixel_budget() -> None:
    cfg = Budget(max_length=4096)
    text, vis, new_max, problem = check_budget(_sample(512, 512), cfg)
    assert problem is None and new_max is None
    assert vis == PixelBudget(cfg.min_pixels, cfg.max_pixels).visual_tokens(512, 512)
    assert text == sample_text_tokens(_sample(512, 512), cfg) > 10


def test_over_long_sample_gets_the_largest_max_pixels_that_fits() -> None:
    cfg = Budget(max_length=1200)
    s = _sample(2000, 2000, n_images=2)
    text, vis, new_max, problem = check_budget(s, cfg)
    assert problem is None and new_max is not None and new_max < cfg.max_pixels
    assert text + vis <= cfg.max_length
    tighter = PixelBudget(cfg.min_pixels, new_max + 4 * 28 * 28)
    assert text + 2 * tighter.visual_tokens(2000, 2000) > cfg.max_length  # not needlessly small


def test_drop_policy_and_impossible_samples() -> None:
    assert check_budget(_sample(2000, 2000, n_images=2), Budget(max_length=1200, over_length="drop"))[3]
    problem = check_budget(_sample(512, 512, words=2000), Budget(max_length=1000))[3]
    assert problem and "smallest" in problem
