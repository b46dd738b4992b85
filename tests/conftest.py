"""Session-wide fixtures: the tiny model, the taught LoRA adapter, and ONE live gateway + vLLM engine.

Everything is offline and thread counts are explicit. The engine runs in its own process group under
the real `infimed serve` CLI (started once per test session, with the taught adapter loaded so LoRA is
always exercised); the engine-kill test is moved to the very end of the run.
"""

from __future__ import annotations

import os

# Offline by construction, before anything imports transformers / gradio / vllm.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    "MKL_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_k, _v)

import json
from pathlib import Path

import pytest

from tests.support.gateway import GatewayHandle, launch_gateway

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INFIMED_TEST_CACHE", Path.home() / ".cache" / "infimed-tests"))
ARTIFACTS = ROOT / "tests" / "artifacts"


def pytest_collection_modifyitems(config, items):
    """Tests that kill the shared engine run last, so they cannot disturb the others."""
    last = [i for i in items if i.get_closest_marker("engine_kill")]
    items[:] = [i for i in items if not i.get_closest_marker("engine_kill")] + last


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny model, built once and cached by the content hash of its recipe."""
    from core.tiny import ensure_tiny_model

    return ensure_tiny_model(CACHE / "models", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def taught_model(tiny_model_dir: Path):
    """The tiny model taught ``tests.support.taught.ANSWER`` by `infimed finetune run`, exported both ways."""
    from tests.support.taught import build_taught_model

    return build_taught_model(tiny_model_dir, CACHE / "taught")


@pytest.fixture(scope="session")
def taught_adapter(taught_model) -> Path:
    """The taught model as a LoRA adapter (`infimed finetune export --mode adapter`) over the tiny model."""
    return taught_model.adapter


@pytest.fixture(scope="session")
def gateway(tiny_model_dir: Path, taught_adapter: Path, tmp_path_factory) -> GatewayHandle:
    """The real product: `infimed serve` (gateway + supervised vLLM engine + UI) on OS-assigned ports."""
    from tests.support.taught import ADAPTER_NAME

    with launch_gateway(tmp_path_factory.mktemp("gateway"), tiny_model_dir, served_name="infimed-tiny",
                        lora=(ADAPTER_NAME, taught_adapter),
                        engine_args=("--max-lora-rank", "8", "--max-model-len", "2048")) as handle:  # fmt: skip
        yield handle


def png_data_url(img) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def load_json(path: Path):
    return json.loads(Path(path).read_text())
