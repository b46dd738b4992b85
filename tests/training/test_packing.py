"""Pack planning: planned lengths equal collated lengths, edge cases, determinism, drops."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.budget import PixelBudget
from training.collator import PackCollator, real_tokens
from training.data import StageDataset
from training.packing import PackBatchSampler, plan_packs
from training.stage import DataSource, Stage


def _dataset(manifest: Path, processor, model_dir: Path, **kw) -> StageDataset:
    stage = Stage(name="s", data=[DataSource(manifest=str(manifest))], steps=1, **kw)
    return StageDataset(stage, processor, base_budget=PixelBudget.from_preprocessor_config(model_dir), seed=0)


@pytest.mark.parametrize("max_pixels", [4 * 28 * 28, 64 * 28 * 28])
def test_planned_length_equals_encoded_and_collated_length(mixed_manifest, processor, tiny_model_dir, max_pixels):
    ds = _dataset(mixed_manifest, processor, tiny_model_dir, max_pixels=max_pixels, max_length=4096)
    tok = processor.tokenizer
    collate = PackCollator(
        pad_token_id=tok.pad_token_id, image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"), pad_to_multiple_of=8
    )
    plan = ds.plan(0)
    assert sorted(i for p in plan.packs for i in p) == list(
        range(len(ds))
    )  # text-only and multi-image samples included
    for pack, planned in zip(plan.packs, plan.lengths, strict=True):
        encoded = ds[pack]
        assert sum(len(s) for s in encoded) == planned
        batch = collate([encoded])
        assert real_tokens(batch) == planned
        assert batch["input_ids"].shape[1] == -(-planned // 8) * 8  # padding to a multiple
    two = ds.encode(4)  # the two-image sample
    assert two.image_grid_thw.shape[0] == 2


def test_low_resolution_stage_has_fewer_visual_tokens(mixed_manifest, processor, tiny_model_dir):
    low = _dataset(mixed_manifest, processor, tiny_model_dir, max_pixels=4 * 28 * 28)
    high = _dataset(mixed_manifest, processor, tiny_model_dir, max_pixels=64 * 28 * 28)
    assert sum(low.visual_tokens(0)) <= 6 < sum(high.visual_tokens(0))
    assert low.length(0) < high.length(0)
    assert low.length(3) == high.length(3)  # text-only sample


def test_per_image_max_pixels_caps_the_stage(tmp_path, processor, tiny_model_dir):
    from PIL import Image

    from core.manifest import write_manifest

    Image.new("RGB", (200, 200)).save(tmp_path / "a.png")
    write_manifest(
        tmp_path / "m.jsonl",
        [{"id": "a", "task": "caption", "text": "<image> x", "images": [{"path": "a.png", "max_pixels": 4 * 28 * 28}]}],
    )
    ds = _dataset(tmp_path / "m.jsonl", processor, tiny_model_dir, max_pixels=64 * 28 * 28)
    assert ds.visual_tokens(0) == [4]  # width/height read from the PNG header
    assert len(ds.encode(0)) == ds.length(0)


def test_first_fit_decreasing_budget_cap_and_drops():
    lengths = [10, 6, 4, 4, 3, 11, 10, 1]
    images = [1, 1, 1, 0, 0, 0, 2, 0]
    plan = plan_packs(lengths, images, max_length=10, seed=1, epoch=0)
    assert plan.dropped == [5]  # 11 > 10: dropped, never truncated
    assert all(n <= 10 for n in plan.lengths)
    assert sorted(i for p in plan.packs for i in p) == [0, 1, 2, 3, 4, 6, 7]
    assert 10 in plan.lengths  # a sample exactly at the budget fills a pack alone
    assert len(plan.packs) == 4  # 10 | 10 | 6+4 | 4+3+1 (FFD optimum here)
    capped = plan_packs(lengths, images, max_length=10, max_images=1, seed=1, epoch=0)
    assert 6 in capped.dropped  # two images > cap
    for p in capped.packs:
        assert sum(images[i] for i in p) <= 1


def test_plans_are_deterministic_by_seed_and_epoch():
    lengths = [(i * 37) % 50 + 1 for i in range(200)]
    images = [i % 3 for i in range(200)]
    a = plan_packs(lengths, images, max_length=64, seed=3, epoch=1)
    assert a.packs == plan_packs(lengths, images, max_length=64, seed=3, epoch=1).packs
    assert a.packs != plan_packs(lengths, images, max_length=64, seed=3, epoch=2).packs
    assert a.efficiency() > 0.95
    padded = plan_packs(lengths, images, max_length=64, seed=3, epoch=1, packing=False)
    assert len(padded.packs) == 200 and padded.efficiency() < 0.5


def test_sampler_streams_epochs_and_records_its_position():
    lengths = [5] * 10
    plans = {e: plan_packs(lengths, [0] * 10, max_length=10, seed=0, epoch=e) for e in range(4)}
    sampler = PackBatchSampler(lambda e: plans[e], batch_size=2, total_batches=7)  # 5 packs per epoch
    batches = list(sampler)
    assert len(batches) == 7 == len(sampler)
    assert batches[2] == [plans[0].packs[4], plans[1].packs[0]]  # a batch may span an epoch boundary
    state = sampler.state_dict(3)
    assert state["epoch"] == 1 and state["pack_in_epoch"] == 1
    sampler.check_state(state)
    other = PackBatchSampler(
        lambda e: plan_packs([4] * 10, [0] * 10, max_length=10, seed=9, epoch=e), batch_size=2, total_batches=7
    )
    with pytest.raises(ValueError):
        other.check_state(state)
