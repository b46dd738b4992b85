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
