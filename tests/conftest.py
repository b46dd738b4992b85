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

import hashlib  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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
def taught_adapter(tiny_model_dir: Path) -> Path:
    """A LoRA adapter taught ``tests.support.taught.ANSWER`` for the fixed image question."""
    from tests.support import taught

    key = hashlib.sha256(Path(taught.__file__).read_bytes() + tiny_model_dir.name.encode()).hexdigest()[:12]
    out = CACHE / "adapters" / f"taught-{key}"
    if not (out / "adapter_model.safetensors").exists():
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        taught.train_taught_adapter(tiny_model_dir, tmp)
        tmp.rename(out)
    return out


@dataclass
class GatewayHandle:
    root: str  # http://127.0.0.1:PORT
    api_key: str
    model: str
    lora: str
    log_path: Path
    engine_log: Path
    ui_password: str
    proc: subprocess.Popen
    model_dir: Path
    adapter_dir: Path
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def client(self, **kw):
        import openai

        kw = {"base_url": self.base_url, "api_key": self.api_key, "max_retries": 0, "timeout": 120} | kw
        return openai.OpenAI(**kw)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"`infimed serve` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"gateway not ready after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def gateway(tiny_model_dir: Path, taught_adapter: Path, tmp_path_factory) -> GatewayHandle:
    """The real product: `infimed serve` (gateway + supervised vLLM engine + UI) on OS-assigned ports."""
    from tests.support.taught import ADAPTER_NAME

    d = tmp_path_factory.mktemp("gateway")
    ready = d / "ready.txt"
    log_path = d / "gateway.log"
    engine_log = d / "engine.log"
    key = "imk_test_" + secrets.token_urlsafe(16)
    ui_password = secrets.token_urlsafe(12)
    env = dict(os.environ, INFIMED_API_KEY=key, INFIMED_UI_PASSWORD=ui_password, INFIMED_LOG_LEVEL="INFO",
               INFIMED_UI_DATA_DIR=str(d / "ui-data"),
               OMP_NUM_THREADS=os.environ.get("INFIMED_ENGINE_THREADS", "2"))  # fmt: skip
    cmd = [
        sys.executable, "-m", "infimed", "serve",
        "--model", str(tiny_model_dir), "--served-model-name", "infimed-tiny",
        "--port", "0", "--ready-file", str(ready), "--engine-log", str(engine_log),
        "--lora", f"{ADAPTER_NAME}={taught_adapter}", "--max-images", "8",
        "--", "--max-lora-rank", "8", "--max-model-len", "2048",
    ]  # fmt: skip
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while not ready.exists() or not ready.read_text().strip():
            if proc.poll() is not None:
                raise RuntimeError(f"`infimed serve` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}\n{engine_log.read_text()[-4000:] if engine_log.exists() else ''}")
            if time.monotonic() - t0 > 900:
                raise RuntimeError(f"`infimed serve` not ready after 900 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        root = ready.read_text().strip()
        _wait_ready(root, proc, 120, log_path)
        handle = GatewayHandle(root=root, api_key=key, model="infimed-tiny", lora=ADAPTER_NAME, log_path=log_path,
                               engine_log=engine_log, ui_password=ui_password, proc=proc, model_dir=tiny_model_dir,
                               adapter_dir=taught_adapter)  # fmt: skip
        yield handle
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGINT the gateway's group (it stops its engine), then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def png_data_url(img) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def load_json(path: Path):
    return json.loads(Path(path).read_text())
