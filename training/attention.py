"""``varlen_sdpa``: variable-length attention for packed rows without flash-attn (CPU, or any device).

A block-diagonal mask makes SDPA compute the whole ``L × L`` score matrix and throw most of it away.
This attention function instead reads the pack's boundaries from the text positions (row 0 of the
``(4, B, L)`` position ids, which restart at 0 for every sample — the same signal flash-attention varlen
uses) and runs causal SDPA on each sample's slice: ``Σ lᵢ²`` work instead of ``L²``. Non-causal modules
(the vision tower) and unpacked inputs go straight to transformers' SDPA.

Register once with :func:`register_varlen_sdpa`, then load the model with
``attn_implementation="varlen_sdpa"``; :meth:`PackBoundaries.attention_inputs` passes no mask for it.

``flex_document`` is the GPU path without flash-attn. transformers refuses ``flex_attention`` for
Qwen2.5-VL (``_supports_flex_attn`` is off for the architecture), so the engine registers its own
attention function: the language model receives the pack's FlexAttention ``BlockMask`` (a document
mask built by :meth:`PackBoundaries.flex_block_mask`, passed through transformers' mask code unchanged)
and runs compiled FlexAttention on it; anything without a ``BlockMask`` — the vision tower, which
already splits images by its own ``cu_seqlens`` — runs SDPA. FlexAttention is compiled with static
shapes, so packed rows are padded to the stage's ``max_length`` (:func:`static_pad_length`).
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "varlen_sdpa"
FLEX_NAME = "flex_document"


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


_compiled_flex: Any = None


def _flex() -> Any:
    """FlexAttention, compiled once on a GPU (eager on the CPU, where it is only used by tests)."""
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled_flex = torch.compile(flex_attention, dynamic=False) if torch.cuda.is_available() else flex_attention
    return _compiled_flex


def flex_document_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """FlexAttention with the pack's document ``BlockMask``; SDPA for calls without one."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    out = _flex()(
        query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
    )
    return out.transpose(1, 2).contiguous(), None


def register_flex_document() -> str:
    """Register ``flex_document`` with transformers' attention interface (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(FLEX_NAME, flex_document_forward)
    return FLEX_NAME


def load_implementation(backend: str) -> str:
    """The ``attn_implementation`` to load a model with for an engine backend name (registering ours)."""
    if backend == "varlen_sdpa":
        return register_varlen_sdpa()
    if backend == "flex_attention":
        return register_flex_document()
    return backend


def static_pad_length(backend: str, max_length: int, pad_to_multiple_of: int) -> int:
    """Pad packed rows to a whole ``max_length`` for compiled FlexAttention (one shape, one compile)."""
    return max_length if backend == "flex_attention" else pad_to_multiple_of
