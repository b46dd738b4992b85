"""End-to-end learning proof on the CPU: does the whole product chain teach a model to read an image?

    OMP_NUM_THREADS=1 .venv/bin/python bench/e2e_phantoms.py --out runs/e2e             # the proof (10–15 min)
    OMP_NUM_THREADS=1 .venv/bin/python bench/e2e_phantoms.py --out runs/e2e-ci --config ci   # the CI size

The story, each step through the product's own command or library entry point:

1. build the randomly initialised ``e2e`` tiny model (``core.tiny``) and start serving it
   (``infimed serve``: gateway + vLLM engine) in the background — the *untrained* row;
2. write synthetic phantoms (``core.phantoms``, the ``closed`` question set: modality, nodule presence,
   count and side, all closed with known answers) and curate them (``infimed curate``, a recipe written
   to ``OUT/configs``); the phantoms' hash split holds out ~10 % of them (``meta.split == "test"``);
3. evaluate the untrained model on the held-out questions through the gateway, then stop it;
4. pretrain on the curated captions (``infimed pretrain``): two resolution stages (4 then 16 visual
   tokens per image), packed;
5. three-stage SFT (``infimed finetune run``) and export merged weights (``infimed finetune export``);
6. serve the export (``infimed serve``) and evaluate it on the held-out questions, and again with the
   images shuffled across questions (``evaluate(..., shuffle_images_seed=...)``): a model that reads the
   image falls back to chance there;
7. print the table (per question type: n, chance, untrained, trained, shuffled, Wilson 95 % margins),
   write ``OUT/results.json`` and ``OUT/results.png``.

Threads: every training and serving process gets ``OMP_NUM_THREADS`` (default 1; the engine
``--engine-threads``). Everything is seeded; rerunning with the same ``--out`` starts from scratch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("e2e")

# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StagePlan:
    """One training stage of the chain (written into a pretrain / finetune YAML)."""

    name: str
    data: list[dict[str, Any]]
    max_pixels: int
    learning_rate: float
    epochs: float
    max_length: int = 1024
    trainable: dict[str, str] = field(
        default_factory=lambda: {"vision": "full", "projector": "full", "language": "full"}
    )
    schedule: str = "cosine"
    warmup_ratio: float = 0.05


@dataclass(frozen=True)
class E2EConfig:
    name: str
    n_phantoms: int
    seed: int = 0
    size: int = 112
    lesion_radius: tuple[float, float] = (8.0, 10.0)  # a nodule covers 25–40 % of a 28-px merged token
    lesion_contrast: float = 2.0  # brighter than soft tissue in every modality's window: white on dark lung
    max_nodules: int = 2
    preset: str = "e2e"
    pretrain: tuple[StagePlan, ...] = ()
    finetune: tuple[StagePlan, ...] = ()
    eval_limit: int | None = None
    shuffle_seed: int = 0


LOW, HIGH = 56 * 56, 112 * 112  # 4 and 16 visual tokens per 112-px phantom (28-px merged tokens)
CAP = [{"manifest": "CURATED", "tasks": ["caption"], "split": "train"}]
VQA = [{"manifest": "CURATED", "tasks": ["vqa"], "split": "train"}]
CHAT = [{"manifest": "CURATED", "tasks": ["chat"], "split": "train"}]


def _config(name: str, n: int, scale: float, sft_scale: float = 1.0) -> E2EConfig:
    """The recipe; ``scale`` multiplies every stage's epochs (the CI configuration trains less),
    ``sft_scale`` the fine-tuning stages' once more."""
    pre = (
        StagePlan("low-res", CAP, LOW, 2e-3, 1.0 * scale),
        StagePlan("high-res", CAP, HIGH, 2e-3, 1.0 * scale),
    )
    ft = (
        StagePlan("general", CHAT, HIGH, 2e-3, 1.0 * scale * sft_scale),  # every question of an image in one chat
        StagePlan("medical", VQA, HIGH, 1e-3, 0.5 * scale * sft_scale),  # single questions, as evaluation asks them
        StagePlan(
            "mix",
            [{**VQA[0], "weight": 0.5}, {**CHAT[0], "weight": 0.5}],
            HIGH,
            3e-4,
            0.5 * scale * sft_scale,
            schedule="linear",
        ),
    )
    return E2EConfig(name=name, n_phantoms=n, pretrain=pre, finetune=ft)


CONFIGS = {
    # 1.5× the fine-tuning epochs: with 1.0 the nodule side stayed at chance (0.556, lower bound 0.47 vs 0.470);
    # with 1.5 it is learned (0.624 [0.53, 0.71]) and the run still takes ~10 min on a quiet machine.
    "full": _config("full", 2000, 1.0, sft_scale=1.5),
    "ci": replace(_config("ci", 800, 0.9), eval_limit=150),
    "smoke": _config("smoke", 150, 0.1),  # wiring only: a few steps per stage
}


# --------------------------------------------------------------------------- processes


def _env(threads: int) -> dict[str, str]:
    return dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )


def _run(cmd: list[str], *, log_path: Path, threads: int, label: str) -> float:
    """Run one product command (``python -m infimed …``), its output into ``log_path``; seconds taken."""
    t0 = time.perf_counter()
    print(f"[e2e] {label}: {' '.join(cmd[2:])}", flush=True)
    with log_path.open("wb") as fh:
        rc = subprocess.run(
            cmd, check=False, cwd=ROOT, env=_env(threads), stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{label} failed (exit {rc}); log {log_path}:\n{tail}")
    dt = time.perf_counter() - t0
    print(f"[e2e] {label}: done in {dt:.0f} s", flush=True)
    return dt


@dataclass
class Server:
    proc: subprocess.Popen
    ready_file: Path
    log_path: Path
    api_key: str
    model: str
    started: float

    def url(self, timeout: float = 900) -> str:
        """Block until the gateway is ready; its ``/v1`` base URL."""
        import httpx

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infimed serve exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            if self.ready_file.exists() and self.ready_file.read_text().strip():
                root = self.ready_file.read_text().strip()
                try:
                    if httpx.get(root + "/ready", timeout=2).status_code == 200:
                        return root + "/v1"
                except httpx.HTTPError:
                    pass
            if time.perf_counter() - self.started > timeout:
                raise RuntimeError(
                    f"infimed serve not ready after {timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}"
                )
            time.sleep(1)

    def stop(self) -> None:
        """SIGINT the gateway's process group (it stops its engine), then SIGKILL what is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(model_dir: Path, name: str, work: Path, *, threads: int) -> Server:
    """``infimed serve --model DIR`` on a free port (gateway + supervised vLLM engine, no UI)."""
    key = "imk_e2e_" + secrets.token_urlsafe(12)
    ready, log_path = work / f"serve-{name}.ready", work / f"serve-{name}.log"
    ready.unlink(missing_ok=True)
    env = _env(threads) | {"INFIMED_API_KEY": key, "INFIMED_LOG_LEVEL": "WARNING"}
    cmd = [
        sys.executable, "-m", "infimed", "serve", "--model", str(model_dir), "--served-model-name", name,
        "--port", "0", "--ready-file", str(ready), "--engine-log", str(work / f"engine-{name}.log"), "--no-ui",
        "--max-images", "1", "--", "--max-model-len", "1024",
    ]  # fmt: skip
    print(f"[e2e] serve {name}: {' '.join(cmd[2:])}", flush=True)
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(proc, ready, log_path, key, name, time.perf_counter())


@contextmanager
def serving(server: Server):
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- data


CURATION_RECIPE = """\
# infimed curate {out}/configs/curation.yaml --input {out}/phantoms/manifest.jsonl --output {out}/curated
# Written by bench/e2e_phantoms.py: the default recipe's dimensions and gates, adjusted to phantoms.
kind: curation
schema_version: 1
name: e2e-phantoms
description: Five-dimension curation of synthetic phantoms (the end-to-end learning proof).
weights: {{visual: 1.0, text: 1.0, consistency: 1.0, medical: 1.0, safety: 1.0}}
scorers:
  - {{name: visual.decodable}}
  - {{name: visual.resolution, params: {{min_side: {size}}}}}   # phantoms are small by design
  - {{name: visual.sharpness, params: {{reference: 50}}}}
  - {{name: visual.exposure, params: {{min_range: 0.35, max_saturated: 0.25}}}}
  - {{name: visual.aspect, params: {{max_aspect: 3.0}}}}
  - {{name: text.length, params: {{min_words: 1, max_words: 4000}}}}   # answers are one word
  - {{name: text.repetition}}
  - {{name: text.truncation}}
  - {{name: text.answer}}
  - {{name: text.language}}
  - {{name: consistency.modality}}
  - {{name: consistency.body_part}}
  - {{name: medical.vocabulary, params: {{target: 2}}}}
  - {{name: medical.modality}}
  - {{name: medical.question_type}}
  - {{name: safety.text_phi, weight: 2.0}}
  - {{name: safety.header_phi}}
  - {{name: safety.burned_in}}
  - {{name: safety.licence}}
gates:
  undecodable_image: drop
  empty_text: drop
  missing_answer: drop
  direct_identifiers: drop
  dates: shift
  date_shift_max_days: 365
  header_phi: flag            # phantom headers carry a fake PatientName on purpose
  burned_in_annotation: drop
  burned_in_risk: flag
  licence: flag
  allowed_licences: []
  min_dimension_score: {{safety: 0.2}}
dedup:
  enabled: false              # phantoms share one template: a perceptual hash cannot see a nodule
budget:
  enabled: true
  max_length: 1024
  min_pixels: 3136
  max_pixels: {max_pixels}
  over_length: drop
splits:
  enabled: true
  salt: e2e-phantoms          # synthetic data: nothing to keep secret
  keep_existing: true         # the phantoms' own hash split: test phantoms stay held out
keep:
  threshold: 0.3
run:
  workers: 1
  engine: local
  thumbnails: 4
"""


def write_phantoms(cfg: E2EConfig, out: Path) -> Path:
    from core.phantoms import PhantomParams, generate_phantoms

    params = PhantomParams(
        size=cfg.size, lesion_radius=cfg.lesion_radius, lesion_contrast=cfg.lesion_contrast,
        max_nodules=cfg.max_nodules, modalities=("CT", "CR", "MR"),
    )  # fmt: skip
    return generate_phantoms(out, n=cfg.n_phantoms, seed=cfg.seed, params=params, question_set="closed")


def _yaml_stage(st: StagePlan, curated: Path, *, first: bool) -> dict[str, Any]:
    data = [{**d, "manifest": str(curated)} if d["manifest"] == "CURATED" else dict(d) for d in st.data]
    return {
        "name": st.name,
        **({} if first else {"init_from": "previous"}),
        "data": data,
        "min_pixels": LOW,
        "max_pixels": st.max_pixels,
        "max_length": st.max_length,
        "packing": True,
        "trainable": st.trainable,
        "learning_rate": st.learning_rate,
        "epochs": st.epochs,
        "warmup_ratio": st.warmup_ratio,
        "schedule": st.schedule,
        "save_steps": 100000,  # one run, no resume needed: skip mid-stage checkpoints
        "logging_steps": 20,
    }


def write_run_yaml(path: Path, *, kind: str, command: str, model: Path, output: Path, stages: tuple[StagePlan, ...],
                   curated: Path, seed: int) -> Path:  # fmt: skip
    import yaml

    cfg = {
        "kind": kind,
        "schema_version": 1,
        "model": str(model),
        "output_dir": str(output),
        "seed": seed,
        "precision": "fp32",
        "attn_implementation": "varlen_sdpa",  # per-sample SDPA: no L×L mask on the CPU
        "report_to": ["none"],
        "save_total_limit": 1,
        "stages": [_yaml_stage(s, curated, first=i == 0) for i, s in enumerate(stages)],
    }
    path.write_text(f"# {command}\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


# --------------------------------------------------------------------------- evaluation and report

EVAL_PARAMS = {"temperature": 0.0, "max_tokens": 8}
ROWS = ("untrained", "trained", "shuffled")


def evaluate_served(server: Server, bench: Any, out: Path, *, label: str, shuffle_seed: int | None = None,
                    limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Ask the held-out questions through the gateway (DICOM parts: the gateway renders them)."""
    from core.client import OpenAIClient
    from evaluation import evaluate

    client = OpenAIClient(server.url(), server.api_key, concurrency=4, timeout=120)
    t0 = time.perf_counter()
    m = evaluate(client, model=server.model, benchmark=bench, out_dir=out / "eval", name=label, limit=limit,
                 params=EVAL_PARAMS, send_dicom=True, shuffle_images_seed=shuffle_seed)  # fmt: skip
    print(f"[e2e] eval {label}: closed accuracy {m.closed_accuracy:.3f} on {m.n} questions "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return m.summary


def _cell(block: dict[str, Any] | None) -> dict[str, Any]:
    if not block or block.get("acc") is None:
        return {"acc": None, "ci95": None, "n": 0}
    lo, hi = block["ci95"]
    return {"acc": block["acc"], "ci95": [lo, hi], "n": block["total"], "right": block["right"]}


def results_table(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per question type and overall: n, chance, and each row's closed accuracy with its Wilson interval."""
    ref = summaries["trained"]
    types = sorted(ref["by_question_type"])
    table: dict[str, Any] = {}
    for qt in types + ["overall"]:
        if qt == "overall":
            chance, n = ref["closed"].get("chance"), ref["closed"]["total"]
            cells = {row: _cell(summaries[row]["closed"]) for row in ROWS}
        else:
            chance, n = ref["by_question_type"][qt]["closed"]["chance"], ref["by_question_type"][qt]["closed"]["total"]
            cells = {row: _cell(summaries[row]["by_question_type"].get(qt, {}).get("closed")) for row in ROWS}
        table[qt] = {"n": n, "chance": chance, **cells}
    return table


def _fmt(c: dict[str, Any]) -> str:
    if c["acc"] is None:
        return "-"
    lo, hi = c["ci95"]
    return f"{c['acc']:.3f} [{lo:.2f}, {hi:.2f}]"


def format_table(table: dict[str, Any]) -> str:
    head = f"{'question type':<14}{'n':>5}{'chance':>8}  " + "  ".join(f"{r:<20}" for r in ROWS)
    lines = [head, "-" * len(head)]
    for qt, row in table.items():
        lines.append(f"{qt:<14}{row['n']:>5}{row['chance']:>8.3f}  " + "  ".join(f"{_fmt(row[r]):<20}" for r in ROWS))
    return "\n".join(lines)


def verdicts(table: dict[str, Any], *, goal: float = 0.85) -> dict[str, Any]:
    """The issue's claims, each true or false (Wilson lower bound vs chance; upper bound for the control)."""
    overall = table["overall"]
    per_type = {
        qt: row["trained"]["ci95"] is not None and row["trained"]["ci95"][0] > row["chance"]
        for qt, row in table.items() if qt != "overall"
    }  # fmt: skip
    shuffled_near_chance = {
        qt: row["shuffled"]["ci95"] is not None and row["shuffled"]["ci95"][0] <= row["chance"] + 0.05
        for qt, row in table.items()
    }  # fmt: skip
    un, tr, sh = (overall[r]["acc"] or 0.0 for r in ROWS)
    return {
        f"trained closed accuracy >= {goal}": tr >= goal,
        "every type above chance (trained, Wilson lower bound > chance)": all(per_type.values()),
        "above chance per type": per_type,
        "shuffled near chance (Wilson lower bound <= chance + 0.05)": all(shuffled_near_chance.values()),
        "trained - untrained (points)": round(100 * (tr - un), 1),
        "trained - shuffled (points)": round(100 * (tr - sh), 1),
    }


def _err(table: dict[str, Any], names: list[str], row: str, side: int) -> list[float]:
    """Error-bar lengths (percent) below (``side`` 0) or above (1) each accuracy; clamped at 0 by the caller."""
    out = []
    for q in names:
        c = table[q][row]
        if c["ci95"] is None or c["acc"] is None:
            out.append(0.0)
        else:
            out.append(100 * (c["acc"] - c["ci95"][0] if side == 0 else c["ci95"][1] - c["acc"]))
    return out


def plot(table: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    width = 0.26
    fig, ax = plt.subplots(figsize=(1.5 * len(names) + 2, 3.8), dpi=120)
    for k, row in enumerate(ROWS):
        xs = [i + (k - 1) * width for i in range(len(names))]
        accs = [100 * (table[q][row]["acc"] or 0) for q in names]
        errs = [
            [max(0.0, lo) for lo in _err(table, names, row, 0)],
            [max(0.0, hi) for hi in _err(table, names, row, 1)],
        ]
        bars = ax.bar(xs, accs, width, yerr=errs, capsize=2, label=row)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    for i, q in enumerate(names):
        ax.hlines(100 * table[q]["chance"], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("closed-question accuracy (%)")
    ax.set_ylim(0, 110)
    ax.set_title(title + " (dashed: chance = majority answer; bars: Wilson 95 %)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- the chain


def run_chain(cfg: E2EConfig, out: Path, *, threads: int, engine_threads: int) -> dict[str, Any]:
    """Every step of the module docstring; returns the results (also written to ``OUT/results.json``)."""
    from core.tiny import build_tiny_model
    from evaluation.local import manifest_benchmark

    if out.exists():
        shutil.rmtree(out)
    (out / "configs").mkdir(parents=True)
    (out / "logs").mkdir()
    logs = out / "logs"
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    py = [sys.executable, "-m", "infimed"]

    # --- 1. the untrained model, served in the background while the data is prepared
    t0 = time.perf_counter()
    info = build_tiny_model(out / "base", preset=cfg.preset, seed=cfg.seed)
    print(f"[e2e] base model: preset {cfg.preset}, {info.parameters:,} parameters (random init)", flush=True)
    untrained = start_server(out / "base", "e2e-untrained", logs, threads=engine_threads)

    # --- 2. phantoms and curation
    with serving(untrained):
        manifest = write_phantoms(cfg, out / "phantoms")
        timings["phantoms"] = time.perf_counter() - t0
        print(f"[e2e] {cfg.n_phantoms} phantoms in {timings['phantoms']:.0f} s → {manifest}", flush=True)
        recipe = out / "configs" / "curation.yaml"
        recipe.write_text(CURATION_RECIPE.format(out=out, size=cfg.size, max_pixels=HIGH))
        timings["curate"] = _run(
            [*py, "curate", str(recipe), "--input", str(manifest), "--output", str(out / "curated"), "--no-progress"],
            log_path=logs / "curate.log", threads=threads, label="curate",
        )  # fmt: skip
        curated = out / "curated" / "kept.jsonl"
        bench = manifest_benchmark(curated, "phantoms-e2e", split="test")
        bench.samples = [s for s in bench.samples if s.task == "vqa"]  # one question each (chats are training material)
        print(f"[e2e] held-out questions: {len(bench.samples)}", flush=True)

        # --- 3. the untrained row
        t0 = time.perf_counter()
        summaries = {"untrained": evaluate_served(untrained, bench, out, label="untrained", limit=cfg.eval_limit)}
        timings["eval untrained (incl. engine start)"] = time.perf_counter() - t0

    # --- 4. pretraining: two resolution stages, packed
    pre_yaml = out / "configs" / "pretrain.yaml"
    write_run_yaml(pre_yaml, kind="pretrain", command=f"infimed pretrain {pre_yaml} --output-dir {out / 'pretrain'}",
                   model=out / "base", output=out / "pretrain", stages=cfg.pretrain, curated=curated, seed=cfg.seed)  # fmt: skip
    timings["pretrain"] = _run([*py, "pretrain", str(pre_yaml), "--output-dir", str(out / "pretrain")],
                               log_path=logs / "pretrain.log", threads=threads, label="pretrain")  # fmt: skip

    # --- 5. three-stage SFT and export
    ft_yaml = out / "configs" / "finetune.yaml"
    last_pre = out / "pretrain" / cfg.pretrain[-1].name / "final"
    write_run_yaml(ft_yaml, kind="finetune", command=f"infimed finetune run {ft_yaml} --output-dir {out / 'finetune'}",
                   model=last_pre, output=out / "finetune", stages=cfg.finetune, curated=curated, seed=cfg.seed)  # fmt: skip
    timings["finetune"] = _run([*py, "finetune", "run", str(ft_yaml), "--output-dir", str(out / "finetune")],
                               log_path=logs / "finetune.log", threads=threads, label="finetune (3 stages)")  # fmt: skip
    timings["export"] = _run(
        [*py, "finetune", "export", str(out / "finetune"), "--out", str(out / "export"), "--mode", "merged"],
        log_path=logs / "export.log", threads=threads, label="export",
    )  # fmt: skip

    # --- 6. serve the export; trained and shuffled-image rows
    t0 = time.perf_counter()
    with serving(start_server(out / "export", "e2e-trained", logs, threads=engine_threads)) as trained:
        summaries["trained"] = evaluate_served(trained, bench, out, label="trained", limit=cfg.eval_limit)
        summaries["shuffled"] = evaluate_served(
            trained, bench, out, label="shuffled", shuffle_seed=cfg.shuffle_seed, limit=cfg.eval_limit
        )
    timings["serve + eval trained/shuffled"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    # --- 7. report
    table = results_table(summaries)
    result = {
        "config": asdict(cfg),
        "parameters": info.parameters,
        "threads": {"training": threads, "engine": engine_threads},
        "table": table,
        "verdicts": verdicts(table),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "training": _training_summaries(out),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(table, out / "results.png", f"e2e phantoms, {cfg.name} config")
    return result


def _training_summaries(out: Path) -> list[dict[str, Any]]:
    rows = []
    for run in ("pretrain", "finetune"):
        f = out / run / "run_summary.json"
        if f.exists():
            for r in json.loads(f.read_text()):
                rows.append({"run": run, **{k: r.get(k) for k in ("name", "steps", "final_loss", "tokens_per_second",
                                                                  "visual_tokens_per_image", "packing_efficiency")}})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/e2e", help="work folder (recreated)")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="full")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                    help="torch threads of the training commands (default OMP_NUM_THREADS or 1)")  # fmt: skip
    ap.add_argument("--engine-threads", type=int, default=2, help="threads of the vLLM engine")
    ap.add_argument("--n-phantoms", type=int, default=None, help="override the configuration's phantom count")
    ap.add_argument("--sft-scale", type=float, default=None, help="multiply the fine-tuning stages' epochs")
    ap.add_argument(
        "--report-only", action="store_true", help="print the table and redraw the plot from OUT/results.json"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = CONFIGS[args.config]
    if args.n_phantoms:
        cfg = replace(cfg, n_phantoms=args.n_phantoms)
    if args.sft_scale:
        cfg = replace(cfg, finetune=tuple(replace(st, epochs=st.epochs * args.sft_scale) for st in cfg.finetune))
    out = Path(args.out).resolve()
    if args.report_only:
        result = json.loads((out / "results.json").read_text())
        result["verdicts"] = verdicts(result["table"])
        plot(result["table"], out / "results.png", f"e2e phantoms, {result['config']['name']} config")
    else:
        result = run_chain(cfg, out, threads=args.threads, engine_threads=args.engine_threads)
    print()
    print(format_table(result["table"]))
    print()
    for k, v in result["verdicts"].items():
        print(f"{k}: {v}")
    t = result["timings_s"]
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    print(f"wrote {out / 'results.json'} and {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
