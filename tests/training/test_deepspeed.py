"""The shipped ZeRO-2 / ZeRO-3 configs train the tiny model on the CPU through the HF Trainer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.conftest import write_png_manifest

REPO = Path(__file__).resolve().parents[2]


def _recipe(path: Path, model: Path, manifest: Path, deepspeed: str | None) -> Path:
    cfg = {
        "kind": "pretrain", "schema_version": 1, "model": str(model), "report_to": ["none"], "deepspeed": deepspeed,
        "stages": [
            {"name": "low", "data": [{"manifest": str(manifest)}], "max_pixels": 3136, "max_length": 192, "steps": 3, "save_steps": 3},
            {"name": "high", "data": [{"manifest": str(manifest)}], "max_pixels": 12544, "max_length": 256, "steps": 2, "save_steps": 2},
        ],
    }  # fmt: skip
    path.write_text("# python -m pretrain this.yaml\n" + yaml.safe_dump(cfg))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_deepspeed_config_trains_like_plain_torch(tiny_model_dir, tmp_path, zero):
    manifest = write_png_manifest(tmp_path / "data", [
        {"id": f"c{i}", "text": f"<image> CT {i}, nodule on the {'left' if i % 2 else 'right'}.", "sizes": [(60 + 10 * i, 90)], "seed": i}
        for i in range(6)
    ])  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = {}
    for name, ds in (("plain", None), (zero, str(REPO / f"training/deepspeed/{zero}.json"))):
        recipe = _recipe(tmp_path / f"{name}.yaml", tiny_model_dir, manifest, ds)
        extra = (
            {
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(_free_port()),
                "RANK": "0",
                "WORLD_SIZE": "1",
                "LOCAL_RANK": "0",
            }
            if ds
            else {}
        )
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "pretrain", str(recipe), "--output-dir", str(out)],
            env=env | extra, cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = json.loads((out / "run_summary.json").read_text())
        assert (out / "high" / "final" / "model.safetensors").exists()
    for a, b in zip(runs["plain"], runs[zero], strict=True):
        assert a["steps"] == b["steps"]
        assert abs(a["final_loss"] - b["final_loss"]) <= 1e-4 * abs(a["final_loss"]), (a["final_loss"], b["final_loss"])
