"""Fixtures for the training tests: the processor of the tiny model (``tiny_model_dir`` comes from
tests/conftest.py) and small PNG manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def write_png_manifest(folder: Path, specs: list[dict]) -> Path:
    """Write PNG images and a manifest; each spec: id, text|messages, sizes [(w, h), ...], seed."""
    import numpy as np
    from PIL import Image

    from core.manifest import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for spec in specs:
        rng = np.random.default_rng(spec.get("seed", 0))
        images = []
        for k, (w, h) in enumerate(spec.get("sizes", [])):
            name = f"{spec['id']}-{k}.png"
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
            images.append({"path": name, "kind": "image", "width": w, "height": h})
        body = {"text": spec["text"]} if "text" in spec else {"messages": spec["messages"]}
        samples.append(
            {
                "id": spec["id"],
                "task": spec.get("task", "caption" if "text" in spec else "vqa"),
                "images": images,
                **body,
            }
        )
    path = folder / "manifest.jsonl"
    write_manifest(path, samples)
    return path


@pytest.fixture()
def mixed_manifest(tmp_path: Path) -> Path:
    """Captions and VQA: image samples of several sizes, a text-only sample, a two-image sample."""
    # fmt: off
    return write_png_manifest(
        tmp_path / "data",
        [
            {"id": "c0", "text": "<image> Axial CT of the chest, a small nodule in the left lung.", "sizes": [(120, 90)], "seed": 1},
            {"id": "c1", "text": "<image> Chest x-ray, normal.", "sizes": [(64, 200)], "seed": 2},
            {"id": "q0", "messages": [
                {"role": "user", "content": "<image>\nIs there a nodule?"},
                {"role": "assistant", "content": "yes"},
                {"role": "user", "content": "Which side?"},
                {"role": "assistant", "content": "left"}], "sizes": [(150, 150)], "seed": 3},
            {"id": "t0", "messages": [
                {"role": "user", "content": "What is a nodule?"},
                {"role": "assistant", "content": "A small round opacity."}], "task": "chat"},
            {"id": "m0", "messages": [
                {"role": "user", "content": "<image><image>\nCompare the two."},
                {"role": "assistant", "content": "The second is larger."}], "sizes": [(80, 80), (100, 60)], "seed": 4},
        ],
    )
    # fmt: on
