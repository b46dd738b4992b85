"""The end-to-end learning proof at CI size: the whole chain runs and the model reads the image.

``bench/e2e_phantoms.py --config ci`` (phantoms → curate → pretrain → three-stage SFT → export → serve →
evaluate) with fixed seeds and one training thread. Only relative claims are asserted — absolute
accuracies depend on the machine's load and belong in the bench's report (docs/evaluation.md):

- the trained model beats the untrained one by ≥ 10 points of closed-question accuracy;
- shuffling the images across questions costs the trained model ≥ 10 points (the answers come from
  the image, not from the question's wording).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chain_learns_from_the_image(tmp_path: Path) -> None:
    out = tmp_path / "e2e"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    cmd = [sys.executable, str(ROOT / "bench" / "e2e_phantoms.py"), "--config", "ci", "--out", str(out),
           "--threads", "1", "--engine-threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=840, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "results.json").read_text())
    overall = result["table"]["overall"]
    trained, untrained, shuffled = (overall[row]["acc"] for row in ("trained", "untrained", "shuffled"))
    report = proc.stdout[-3000:]
    assert overall["n"] >= 100, report  # enough held-out questions for a 10-point claim to mean something
    assert trained - untrained >= 0.10, report
    assert trained - shuffled >= 0.10, report
    for row in ("untrained", "trained", "shuffled"):
        assert overall[row]["n"] == overall["n"], report  # every held-out question was answered in each row
    assert (out / "results.png").stat().st_size > 0
