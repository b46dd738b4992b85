"""Fixtures for the fine-tuning tests: one CPU smoke pipeline run (shared by the chaining, trainability
and export tests) and ONE extra engine serving the taught model's merged export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "finetune/configs/smoke_tiny_cpu.yaml"


@pytest.fixture(scope="session")
def infimed_cache() -> str:
    """Where ``tiny://`` and ``phantoms://`` are built (kept between runs: both are deterministic)."""
    path = os.environ.get("INFIMED_TEST_CACHE", str(Path.home() / ".cache" / "infimed-tests"))
    os.environ["INFIMED_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def smoke_run(infimed_cache, tmp_path_factory) -> Path:
    """`infimed finetune run` on the CPU smoke pipeline (three stages on phantom VQA), straight through."""
    import torch

    from infimed.cli import main

    torch.set_num_threads(1)  # the resume test compares against this run to 1e-6: same threads there
    out = tmp_path_factory.mktemp("ft-smoke") / "run"
    assert main(["finetune", "run", str(SMOKE), "--output-dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def merged_gateway(taught_model, tmp_path_factory):
    """`infimed serve --model <taught merged export>`: the one extra engine start of the fine-tuning tests."""
    from tests.support.gateway import launch_gateway

    with launch_gateway(tmp_path_factory.mktemp("merged-gateway"), taught_model.merged,
                        served_name="tiny-taught-merged") as handle:  # fmt: skip
        yield handle
