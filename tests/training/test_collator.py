"""Packed batches equal unpacked ones: loss, gradients, positions and per-sample isolation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.budget import PixelBudget
from training.collator import PackCollator, rope_index
from training.data import StageDataset
from training.stage import DataSource, Stage


def _dataset(manifest: Path, processor, tiny_model_dir: Path, **kw) -> StageDataset:
    stage = Stage(
        name="s", data=[DataSource(manifest=str(manifest))], steps=1, max_length=kw.pop("max_length", 1024), **kw
    )
    return StageDataset(stage, processor, base_budget=PixelBudget.from_preprocessor_config(tiny_model_dir), seed=0)


def _collator(processor, multiple: int = 8) -> PackCollator:
    tok = processor.tokenizer
    return PackCollator(
        pad_token_id=tok.pad_token_id,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        pad_to_multiple_of=multiple,
    )


@pytest.fixture(scope="module", params=["sdpa", "varlen_sdpa", "flex_attention"])
def model(tiny_model_dir: Path, request):
    """The tiny model under each packed-attention backend the engine uses (flex: eager on the CPU)."""
    import warnings

    from transformers import AutoModelForImageTextToText

    from training.attention import load_implementation

    warnings.filterwarnings("ignore", message=".*flex_attention.*")  # eager FlexAttention warns on the CPU
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir, dtype=torch.float32, attn_implementation=load_implementation(request.param)
    )
    return m.train()


def _packed_forward(model, batch: dict):
    b = batch["pack_boundaries"]
    kwargs = {k: v for k, v in batch.items() if k != "pack_boundaries"}
    kwargs.update(b.attention_inputs(model.config._attn_implementation, dtype=torch.float32, device="cpu"))
    return model(**kwargs, use_cache=False)


def _single_forward(model, s, image_token_id: int):
    ids = torch.tensor([s.input_ids])
    kwargs = {"input_ids": ids, "labels": torch.tensor([s.labels]), "use_cache": False}
    if s.pixel_values is not None:
        kwargs |= {
            "pixel_values": s.pixel_values,
            "image_grid_thw": s.image_grid_thw,
            "mm_token_type_ids": (ids == image_token_id).int(),
        }
    return model(**kwargs)


def test_rope_index_matches_the_model(model, mixed_manifest, processor, tiny_model_dir):
    ds = _dataset(mixed_manifest, processor, tiny_model_dir)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for i in range(len(ds)):
        s = ds.encode(i)
        ours = rope_index(s.input_ids, s.image_grid_thw, image_token_id=image_token)
        if s.image_grid_thw is None:
            assert torch.equal(ours, torch.arange(len(s)).expand(3, -1))
            continue
        ids = torch.tensor([s.input_ids])
        theirs, _ = model.model.get_rope_index(
            ids, mm_token_type_ids=(ids == image_token).int(), image_grid_thw=s.image_grid_thw
        )
        assert torch.equal(ours, theirs[:, 0]), s.sample_id


def test_packed_loss_and_gradients_equal_unpacked(model, mixed_manifest, processor, tiny_model_dir):
    torch.use_deterministic_algorithms(True)
    ds = _dataset(mixed_manifest, processor, tiny_model_dir)
    samples = [ds.encode(i) for i in range(len(ds))]
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # FlexAttention has no backward on the CPU: there the loss is compared, the gradients on a GPU
    # (`bench/packing.py --check`).
    backward = model.config._attn_implementation != "flex_document"

    # Unpacked: each sample alone with the model's own positions and causal mask; token-weighted loss.
    model.zero_grad()
    counts = [sum(1 for x in s.labels[1:] if x != -100) for s in samples]
    total = sum(counts)
    ref_loss = 0.0
    with torch.set_grad_enabled(backward):
        for s, n in zip(samples, counts, strict=True):
            loss = _single_forward(model, s, image_token).loss * (n / total)
            if backward:
                loss.backward()
            ref_loss += loss.item()
    ref_grads = {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}

    model.zero_grad()
    batch = _collator(processor)([samples])
    with torch.set_grad_enabled(backward):
        out = _packed_forward(model, batch)
    assert math.isclose(out.loss.item(), ref_loss, rel_tol=1e-5), (out.loss.item(), ref_loss)
    if not backward:
        return
    out.loss.backward()
    checked = 0
    for name, g_ref in ref_grads.items():
        g = params[name].grad
        assert g is not None, name
        if g_ref.norm() == 0 and g.norm() == 0:
            continue
        cos = torch.nn.functional.cosine_similarity(g.flatten(), g_ref.flatten(), dim=0).item()
        assert cos >= 0.9999, (name, cos)
        checked += 1
    assert checked > 20  # vision, projector and language tensors all received gradients
    assert any("visual.blocks" in n for n in ref_grads) and any("merger" in n for n in ref_grads)


def test_changing_one_sample_leaves_the_others_logits_unchanged(
    model, mixed_manifest, tmp_path, processor, tiny_model_dir
):
    ds = _dataset(mixed_manifest, processor, tiny_model_dir)
    a, b = ds.encode(0), ds.encode(2)  # two image samples
    # A changed: other tokens and other pixels.
    a2 = type(a)(list(a.input_ids), list(a.labels), a.pixel_values.flip(0) * 0.5 + 0.1, a.image_grid_thw, "a2")
    text_pos = [i for i, t in enumerate(a2.input_ids) if i > 0 and t not in (a2.input_ids[0],) and a2.labels[i] != -100]
    for i in text_pos[:3]:
        a2.input_ids[i] = (a2.input_ids[i] + 7) % 900
    collate = _collator(processor)
    with torch.no_grad():
        out1 = _packed_forward(model.eval(), collate([[a, b]])).logits
        out2 = _packed_forward(model, collate([[a2, b]])).logits
    model.train()
    la, lb = len(a), len(b)
    assert not torch.allclose(out1[0, :la], out2[0, :la])  # A itself changed
    assert torch.allclose(out1[0, la : la + lb], out2[0, la : la + lb], atol=1e-6, rtol=0)


def test_boundaries_agree_across_backends(mixed_manifest, processor, tiny_model_dir):
    ds = _dataset(mixed_manifest, processor, tiny_model_dir)
    batch = _collator(processor, multiple=16)([[ds.encode(0), ds.encode(3)], [ds.encode(1)]])
    b = batch["pack_boundaries"]
    L = batch["input_ids"].shape[1]
    assert L % 16 == 0
    mask = b.block_causal_mask()
    assert mask.shape == (2, 1, L, L) and mask.dtype == torch.bool
    n0 = len(ds.encode(0))
    assert not mask[0, 0, n0, n0 - 1] and mask[0, 0, n0 - 1, 0] and not mask[0, 0, 0, 1]
    cu = b.cu_seqlens()
    assert cu[-1].item() == 2 * L and cu.dtype == torch.int32
    # flash-attention varlen reads boundaries from the text positions: the same cu_seqlens.
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    (cu_q, _), _ = prepare_fa_kwargs_from_position_ids(batch["position_ids"][0])
    assert torch.equal(cu_q.to(torch.int32), cu)
    add = b.block_causal_mask(dtype=torch.float32)
    assert torch.equal(add == 0, mask)
    # labels never cross a boundary: each sample's first label is ignored
    assert batch["labels"][0, n0].item() == -100 and batch["labels"][0, 0].item() == -100


def test_flex_document_mask_matches_the_block_diagonal_mask():
    import warnings

    from torch.nn.attention.flex_attention import flex_attention

    from training.collator import PackBoundaries

    b = PackBoundaries([[5, 7, 4], [10, 6]], [2, 1], 16)  # row 1: one sample then padding
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 16, 8, generator=g) for _ in range(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex attention on the CPU warns that it is the slow path
        out = flex_attention(q, k, v, block_mask=b.flex_block_mask("cpu"))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=b.block_causal_mask())
    assert torch.allclose(out, ref, atol=1e-5)
    assert b.attention_inputs("flash_attention_2", dtype=torch.float32, device="cpu") == {"attention_mask": None}
