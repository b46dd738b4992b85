"""``infimed pretrain`` on the CPU smoke recipe: two resolution stages, a fault, and a resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infimed.cli import main

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "pretrain/configs/smoke_tiny_cpu.yaml"


def test_smoke_recipe_trains_two_stages_and_resumes_after_a_fault(tmp_path, monkeypatch, infimed_cache, capsys):
    import torch

    from training.trainer import FaultInjected

    torch.set_num_threads(1)
    out = tmp_path / "run"
    monkeypatch.setenv("INFIMED_FAULT_AT", "high-res:2")
    with pytest.raises(FaultInjected):
        main(["pretrain", str(SMOKE), "--output-dir", str(out)])
    assert (out / "low-res" / "final" / "stage_done.json").exists()
    assert not (out / "high-res" / "final").exists()
    monkeypatch.delenv("INFIMED_FAULT_AT")

    assert main(["pretrain", str(SMOKE), "--output-dir", str(out)]) == 2  # refuses to overwrite without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", str(SMOKE), "--output-dir", str(out), "--resume"]) == 0
    summary = json.loads((out / "run_summary.json").read_text())
    low, high = summary
    assert high["resumed_from"] == "checkpoint-2" and high["steps"] == 4
    assert high["visual_tokens_per_image"] > low["visual_tokens_per_image"]  # low → high resolution
    assert high["final_loss"] < 7.0  # it learned (ln(vocab) ≈ 7 at initialisation)
    printed = capsys.readouterr().out
    assert "low-res:" in printed and "high-res:" in printed and "tokens/s" in printed


def test_missing_manifest_is_reported_without_traceback(tmp_path, capsys, infimed_cache):
    bad = tmp_path / "r.yaml"
    bad.write_text(
        "# infimed pretrain r.yaml\nkind: pretrain\nschema_version: 1\nmodel: tiny://tiny\n"
        "stages:\n  - {name: a, data: [{manifest: nowhere.jsonl}], steps: 1}\n  - {name: b, data: [{manifest: nowhere.jsonl}], steps: 1}\n"
    )
    assert main(["pretrain", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("pretrain: ") and "nowhere.jsonl" in last and "not found" in last


@pytest.mark.slow
def test_killed_process_resumes_with_the_same_result(tmp_path, infimed_cache):
    """A real SIGKILL mid-stage (subprocess), then ``--resume``: same final loss as an uninterrupted run."""
    env = os.environ | {"INFIMED_CACHE": infimed_cache, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pretrain", str(SMOKE), "--resume"]

    def run(out: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, "--output-dir", str(tmp_path / out)], env=env | extra_env, cwd=REPO,
                              capture_output=True, text=True, timeout=600, check=False)  # fmt: skip

    straight = run("a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run("b", INFIMED_FAULT_AT="low-res:6", INFIMED_FAULT_MODE="kill")
    assert killed.returncode == -9
    resumed = run("b")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "run_summary.json").read_text())
    b = json.loads((tmp_path / "b" / "run_summary.json").read_text())
    assert b[0]["resumed_from"] == "checkpoint-6"
    for sa, sb in zip(a, b, strict=True):
        assert abs(sa["final_loss"] - sb["final_loss"]) <= 1e-6
