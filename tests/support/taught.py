"""The one trained tiny-model fixture: the tiny model taught a fixed answer to a fixed image question.

Trained by the product itself — ``infimed finetune run`` on a two-stage pipeline (language-model LoRA
only, ranks 4 + 4), then ``infimed finetune export`` as a LoRA adapter (the two stages stacked into one
rank-8 adapter over the base) and as a merged model — so the serving, evaluation and fine-tuning tests
share ONE trained model. Built once per cache key (this file, the training engine and the recipe's
sources, the tiny model) under ``~/.cache/infimed-tests/taught/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

QUESTION = "What does this test card say?"
ANSWER = "hello infimed"
ADAPTER_NAME = "tiny-taught"
ROOT = Path(__file__).resolve().parents[2]
# Two chained LoRA stages: the export must stack them (rank 4 + 4 = 8, the gateway's --max-lora-rank).
PIPELINE = """\
# infimed finetune run pipeline.yaml --output-dir run --resume
kind: finetune
schema_version: 1
model: {model}
seed: 0
precision: fp32
report_to: [none]
save_total_limit: 1
stages:
  - name: first
    data: [{{manifest: {manifest}}}]
    max_length: 256
    packing: false
    trainable: {{vision: frozen, projector: frozen, language: lora}}
    lora: {{r: 4, alpha: 8}}
    learning_rate: 5.0e-3
    schedule: constant
    steps: {steps_first}
    save_steps: 1000
  - name: second
    init_from: previous
    data: [{{manifest: {manifest}}}]
    max_length: 256
    packing: false
    trainable: {{vision: frozen, projector: frozen, language: lora}}
    lora: {{r: 4, alpha: 8}}
    learning_rate: 5.0e-3
    schedule: constant
    steps: {steps_second}
    save_steps: 1000
"""


def taught_image() -> Image.Image:
    """A fixed 112×112 image (already within the tiny model's pixel budget: no resize anywhere)."""
    img = Image.new("RGB", (112, 112), (20, 20, 20))
    d = ImageDraw.Draw(img)
    d.ellipse((20, 30, 60, 70), fill=(230, 230, 230))
    d.rectangle((70, 20, 100, 95), fill=(120, 180, 60))
    return img


def messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]


def write_taught_data(folder: Path) -> Path:
    """The training data: one PNG and a one-sample manifest asking QUESTION about it, answered ANSWER."""
    from core.manifest import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    taught_image().save(folder / "card.png")
    sample = {
        "id": "taught-0",
        "task": "vqa",
        "images": [{"path": "card.png", "kind": "image", "width": 112, "height": 112}],
        # "<image>" directly followed by the question renders exactly like the served request
        # (an image part, then a text part) under the model's chat template.
        "messages": [{"role": "user", "content": f"<image>{QUESTION}"}, {"role": "assistant", "content": ANSWER}],
        "meta": {"answer": ANSWER, "answer_type": "open", "question_type": "text", "source": "taught-fixture"},
    }
    path = folder / "manifest.jsonl"
    write_manifest(path, [sample])
    return path


@dataclass(frozen=True)
class TaughtModel:
    root: Path
    run: Path  # the `infimed finetune run` output
    adapter: Path  # `infimed finetune export --mode adapter`
    merged: Path  # `infimed finetune export --mode merged`


def _cache_key(base_dir: Path) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes() + base_dir.name.encode())
    for folder in ("training", "finetune"):
        for f in sorted((ROOT / folder).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def _cli(*args: str, log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), HF_HUB_OFFLINE="1")
    with log.open("ab") as fh:
        proc = subprocess.run([sys.executable, "-m", "infimed", *args], cwd=ROOT, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, timeout=1800, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"`infimed {' '.join(args)}` failed ({proc.returncode}):\n{log.read_text()[-4000:]}")


def build_taught_model(base_dir: Path, cache: Path, *, steps: tuple[int, int] = (30, 40)) -> TaughtModel:
    """Teach ANSWER with `infimed finetune run`, export adapter and merged; cached by content hash."""
    root = cache / f"taught-{_cache_key(base_dir)}"
    done = TaughtModel(root, root / "run", root / "adapter", root / "merged")
    if (root / "taught.json").exists():  # written last: its presence means the whole build finished
        return done
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{root.name}.lock", "w") as lock:  # several test sessions may share the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "taught.json").exists():
            _build(base_dir, root, done, steps)
    return done


def _build(base_dir: Path, root: Path, done: TaughtModel, steps: tuple[int, int]) -> None:
    if root.exists():
        shutil.rmtree(root)
    manifest = write_taught_data(root / "data")
    pipeline = root / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(model=base_dir, manifest=manifest, steps_first=steps[0],
                                        steps_second=steps[1]))  # fmt: skip
    log = root / "build.log"
    _cli("finetune", "run", str(pipeline), "--output-dir", str(done.run), log=log)
    _cli("finetune", "export", str(done.run), "--out", str(done.adapter), "--mode", "adapter",
         "--name", ADAPTER_NAME, log=log)  # fmt: skip
    _cli("finetune", "export", str(done.run), "--out", str(done.merged), "--mode", "merged",
         "--name", "tiny-taught-merged", log=log)  # fmt: skip
    summary = json.loads((done.run / "run_summary.json").read_text())
    (root / "taught.json").write_text(json.dumps({"question": QUESTION, "answer": ANSWER,
                                                  "final_loss": [s["final_loss"] for s in summary]}))  # fmt: skip
