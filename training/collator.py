"""Packed batches: several samples per row, each with its own positions, attending only to itself.

For each row the collator concatenates the samples of one pack and pads the row (to the longest row,
rounded up to ``pad_to_multiple_of``):

* ``input_ids`` / ``labels`` concatenated; each sample's first label is ``-100`` so the previous
  sample's last token is never trained to predict it (labels masked at boundaries);
* ``position_ids`` of shape ``(4, B, L)``: row 0 the text position (restarting at 0 per sample, which
  is what flash-attention varlen uses), rows 1–3 Qwen-VL's 3-D mRoPE index computed **per sample**
  (:func:`rope_index`, the same arithmetic as ``Qwen2_5_VLModel.get_rope_index``) then concatenated;
* ``pixel_values`` / ``image_grid_thw`` concatenated per image in token order (the vision tower already
  isolates images from one another with its own ``cu_seqlens``);
* one :class:`PackBoundaries` that yields the attention isolation each backend needs: a block-diagonal
  causal 4-D mask (SDPA / eager, the CPU path), ``cu_seqlens`` for flash-attention varlen, or a
  FlexAttention ``BlockMask`` with a document mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from training.format import IGNORE_INDEX


@dataclass
class EncodedSample:
    """One sample ready for packing: ids/labels with visual tokens expanded, and its pixels."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None = None  # (patches, C*T*P*P)
    image_grid_thw: torch.Tensor | None = None  # (images, 3)
    sample_id: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


def rope_index(
    input_ids: Sequence[int], image_grid_thw: torch.Tensor | None, *, image_token_id: int, spatial_merge_size: int = 2
) -> torch.Tensor:
    """Qwen2/2.5-VL 3-D positions ``(3, len)`` for one unpacked sample (images only, no video).

    Text runs count up by one on all three axes; an image of grid ``(t, h, w)`` occupies
    ``t·h·w / merge²`` tokens at positions ``start + (t, h/merge, w/merge)`` indices, and the next text
    continues at ``start + max(h, w) / merge``. Mirrors ``Qwen2_5_VLModel.get_rope_index`` (tested
    against it) without needing the model, so it runs in data-loader workers.
    """
    ids = torch.as_tensor(list(input_ids))
    is_img = ids == image_token_id
    out = torch.empty(3, len(ids), dtype=torch.long)
    grids = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    pos, i, n = 0, 0, len(ids)
    while i < n:
        j = i
        if not bool(is_img[i]):
            while j < n and not bool(is_img[j]):
                j += 1
            out[:, i:j] = torch.arange(pos, pos + (j - i)).expand(3, -1)
            pos += j - i
        else:
            t, h, w = next(grids)
            gh, gw = h // spatial_merge_size, w // spatial_merge_size
            count = t * gh * gw
            tt = torch.arange(t).view(-1, 1, 1).expand(t, gh, gw).reshape(-1)
            hh = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw).reshape(-1)
            ww = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw).reshape(-1)
            j = i + count
            if j > n or not bool(is_img[i:j].all()):
                raise ValueError(f"image pads at {i} do not match grid {(t, h, w)}")
            out[0, i:j] = tt + pos
            out[1, i:j] = hh + pos
            out[2, i:j] = ww + pos
            pos += max(gh, gw)
        i = j
    return out


@dataclass
class PackBoundaries:
    """Where each sample starts and ends in every row of a packed batch (padding is its own segment)."""

    seq_lens: list[list[int]]  # per row: lengths of the samples, then of the padding (if any)
    num_samples: list[int]  # per row: how many of seq_lens are real samples
    length: int

    def document_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(B, L)`` segment index per token; padding gets the segment after the last sample."""
        rows = []
        for lens in self.seq_lens:
            rows.append(torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)))
        return torch.stack(rows).to(device)

    def text_positions(self) -> torch.Tensor:
        """``(B, L)`` positions restarting at 0 for every segment."""
        rows = [torch.cat([torch.arange(n) for n in lens]) for lens in self.seq_lens]
        return torch.stack(rows)

    def block_causal_mask(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(B, 1, L, L)`` block-diagonal causal mask: boolean (SDPA) or additive in ``dtype`` (eager)."""
        doc = self.document_ids(device)
        same = doc[:, :, None] == doc[:, None, :]
        causal = torch.ones(self.length, self.length, dtype=torch.bool, device=doc.device).tril()
        mask = (same & causal)[:, None]
        if dtype is None or dtype == torch.bool:
            return mask
        zero = torch.zeros((), dtype=dtype, device=doc.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)

    def cu_seqlens(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Cumulative segment lengths over the flattened batch (int32), as flash-attn varlen wants."""
        lens = [n for row in self.seq_lens for n in row]
        return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)

    def max_seqlen(self) -> int:
        return max(n for row in self.seq_lens for n in row)

    def flex_block_mask(self, device: torch.device | str) -> Any:
        """A FlexAttention ``BlockMask``: causal within a document, nothing across documents."""
        from torch.nn.attention.flex_attention import create_block_mask

        doc = self.document_ids(device)

        def document_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
            return (doc[b, q] == doc[b, kv]) & (kv <= q)

        return create_block_mask(
            document_causal, B=doc.shape[0], H=None, Q_LEN=self.length, KV_LEN=self.length, device=device
        )

    def attention_inputs(self, backend: str, *, dtype: torch.dtype, device: torch.device | str) -> dict[str, Any]:
        """The model kwargs that isolate samples for one attention backend.

        ``sdpa``: a boolean 4-D mask; ``eager``: an additive 4-D mask; ``flex_attention``: a
        ``BlockMask``; ``flash_attention_2``/``3`` and ``varlen_sdpa``: no mask — the boundaries are read
        from the text positions (row 0 of ``position_ids``), which give exactly :meth:`cu_seqlens`.
        """
        if backend == "sdpa":
            return {"attention_mask": self.block_causal_mask(device=device)}
        if backend == "eager":
            return {"attention_mask": self.block_causal_mask(dtype=dtype, device=device)}
        if backend in ("flex_attention", "flex_document"):  # flex_document: training/attention.py
            return {"attention_mask": self.flex_block_mask(device)}
        if backend.startswith("flash_attention") or backend == "varlen_sdpa":
            return {"attention_mask": None}
        raise ValueError(f"unknown attention backend {backend!r}")


class PackCollator:
    """Collate a batch of packs (each a list of :class:`EncodedSample`) into model inputs."""

    def __init__(
        self, *, pad_token_id: int, image_token_id: int, spatial_merge_size: int = 2, pad_to_multiple_of: int = 8
    ) -> None:
        self.pad_token_id = pad_token_id
        self.image_token_id = image_token_id
        self.spatial_merge_size = spatial_merge_size
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, batch: Sequence[Sequence[EncodedSample]]) -> dict[str, Any]:
        real = [sum(len(s) for s in pack) for pack in batch]
        m = self.pad_to_multiple_of
        length = -(-max(real) // m) * m
        ids = torch.full((len(batch), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        pos = torch.zeros((4, len(batch), length), dtype=torch.long)
        pixels: list[torch.Tensor] = []
        grids: list[torch.Tensor] = []
        seq_lens: list[list[int]] = []
        images = 0
        for r, pack in enumerate(batch):
            off = 0
            lens = []
            for s in pack:
                n = len(s)
                ids[r, off : off + n] = torch.tensor(s.input_ids)
                lab = torch.tensor(s.labels)
                lab[0] = IGNORE_INDEX  # never learn sample k's first token from sample k-1's last
                labels[r, off : off + n] = lab
                pos[0, r, off : off + n] = torch.arange(n)
                pos[1:, r, off : off + n] = rope_index(
                    s.input_ids,
                    s.image_grid_thw,
                    image_token_id=self.image_token_id,
                    spatial_merge_size=self.spatial_merge_size,
                )
                if s.pixel_values is not None and s.image_grid_thw is not None:
                    pixels.append(s.pixel_values)
                    grids.append(s.image_grid_thw)
                    images += int(s.image_grid_thw.shape[0])
                lens.append(n)
                off += n
            if off < length:
                pos[:, r, off:] = torch.arange(length - off)
                lens.append(length - off)
            seq_lens.append(lens)
        out: dict[str, Any] = {
            "input_ids": ids,
            "labels": labels,
            "position_ids": pos,
            "pack_boundaries": PackBoundaries(seq_lens, [len(p) for p in batch], length),
        }
        if pixels:
            out["pixel_values"] = torch.cat(pixels)
            out["image_grid_thw"] = torch.cat(grids)
        return out


def real_tokens(batch: dict[str, Any]) -> int:
    """Tokens that belong to samples (not padding) in a collated batch."""
    b: PackBoundaries = batch["pack_boundaries"]
    return sum(sum(lens[:k]) for lens, k in zip(b.seq_lens, b.num_samples, strict=True))
