"""``varlen_sdpa``: variable-length attention for packed rows without flash-attn (CPU, or any device).

A block-diagonal mask makes SDPA compute the whole ``L × L`` score matrix and throw most of it away.
This attention function instead reads the pack's boundaries from the text positions (row 0 of the
``(4, B, L)`` position ids, which restart at 0 for every sample — the same signal flash-attention varlen
uses) and runs causal SDPA on each sample's slice: ``Σ lᵢ²`` work instead of ``L²``. Non-causal modules
(the vision tower) and unpacked inputs go straight to transformers' SDPA.

Register once with :func:`register_varlen_sdpa`, then load the model with
``attn_implementation="varlen_sdpa"``; :meth:`PackBoundaries.attention_inputs` passes no mask for it.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "varlen_sdpa"


def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA per packed segment; ``query``/``key``/``value`` are ``(B, heads, L, D)``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    positions = kwargs.pop("position_ids", None)
    if (
        not getattr(module, "is_causal", False)
        or positions is None
        or attention_mask is not None
        or query.shape[2] != key.shape[2]
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    batch, _, length, _ = query.shape
    out = query.new_empty(batch, length, query.shape[1], value.shape[-1])
    for b in range(batch):
        starts = (positions[b] == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        for s, e in zip(starts, [*starts[1:], length], strict=True):
            o, _ = sdpa_attention_forward(
                module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e], None, **kwargs
            )
            out[b, s:e] = o[0]
    return out, None


def register_varlen_sdpa() -> str:
    """Register ``varlen_sdpa`` with transformers' attention interface (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_forward)
    return NAME
