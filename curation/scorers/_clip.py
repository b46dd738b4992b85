"""Optional CLIP-style image–text similarity with a local model folder (no download, ever)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=2)
def _load(model_dir: str) -> tuple[Any, Any]:
    if not (Path(model_dir) / "config.json").is_file():  # checked first: importing transformers takes seconds
        raise ValueError(f"consistency.clip: cannot load a local CLIP-style model from {model_dir}: no config.json")
    try:
        from transformers import AutoModel, AutoProcessor

        proc = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise ValueError(f"consistency.clip: cannot load a local CLIP-style model from {model_dir}: {e}") from e
    return proc, model


def clip_similarity(model_dir: str, gray: np.ndarray, text: str) -> float:
    """Cosine similarity between the image and the text embeddings."""
    proc, model = _load(model_dir)
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    inputs = proc(
        text=[text[:300]],
        images=[Image.fromarray(gray).convert("RGB")],
        return_tensors="pt",
        padding=True,
        truncation=True,
    )
    with torch.no_grad():
        out = model(**inputs)
    a = out.image_embeds[0] / out.image_embeds[0].norm()
    b = out.text_embeds[0] / out.text_embeds[0].norm()
    return float((a * b).sum())
