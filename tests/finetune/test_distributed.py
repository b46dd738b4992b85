"""A pipeline launched the way hospitals launch it — `torchrun … -m finetune run` — with two processes
(gloo on the CPU): every rank must start stage 2 from stage 1's output only once rank 0 has written it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = """\
# torchrun --nproc_per_node 2 -m finetune run pipeline.yaml --resume
kind: finetune
schema_version: 1
model: tiny://tiny
seed: 0
report_to: [none]
stages:
  - {name: general, data: [{manifest: "phantoms://24?seed=0&size=128", tasks: [caption]}], max_pixels: 3136,
     max_length: 256, trainable: {vision: frozen, projector: full, language: lora}, steps: 2, save_steps: 1}
  - {name: medical, init_from: previous, data: [{manifest: "phantoms://24?seed=0&size=128", tasks: [vqa]}],
     max_pixels: 3136, max_length: 256, trainable: {vision: frozen, projector: frozen, language: lora}, steps: 2,
     save_steps: 1}
"""


@pytest.mark.slow
def test_torchrun_two_processes_chain_the_stages(tmp_path, infimed_cache):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    out = tmp_path / "run"
    env = os.environ | {"INFIMED_CACHE": infimed_cache, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous (--master_port 0 hangs the gloo group)
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "finetune", "run", str(pipeline), "--output-dir", str(out), "--resume"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "run_summary.json").read_text())
    assert [s["name"] for s in summary] == ["general", "medical"] and all(s["steps"] == 2 for s in summary)
    assert proc.stdout.count("run finished:") == 1  # rank 0 reports, the other rank stays quiet
    assert (out / "medical" / "final" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_lora_stages_under_zero3_give_the_plain_result(tmp_path, infimed_cache):
    """ZeRO-3 partitions every weight: the stage-end LoRA merge must gather them first (same weights as
    a run without DeepSpeed, and the saved adapter still explains the merged model)."""
    import torch
    from safetensors.torch import load_file

    from finetune.export import export_run

    env = os.environ | {"INFIMED_CACHE": infimed_cache, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = {}
    for name, extra in (("plain", ""), ("zero3", f"deepspeed: {REPO / 'training/deepspeed/zero3.json'}\n")):
        pipeline = tmp_path / f"{name}.yaml"
        pipeline.write_text(PIPELINE.replace("report_to: [none]\n", "report_to: [none]\n" + extra))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        ds_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
        proc = subprocess.run([sys.executable, "-m", "finetune", "run", str(pipeline), "--output-dir", str(tmp_path / name)],
                              cwd=REPO, env=env | (ds_env if extra else {}), capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[name] = json.loads((tmp_path / name / "run_summary.json").read_text())
    for a, b in zip(runs["plain"], runs["zero3"], strict=True):
        assert abs(a["final_loss"] - b["final_loss"]) <= 1e-4 * abs(a["final_loss"])
        assert a["trainable"] == b["trainable"]  # counted at full size, not per shard
    wa = load_file(tmp_path / "plain" / "medical" / "final" / "model.safetensors")
    wb = load_file(tmp_path / "zero3" / "medical" / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    result = export_run(tmp_path / "zero3", tmp_path / "export", mode="adapter")
    assert result.changes is not None and result.changes.lora_explained and not result.changes.lora_mismatch
