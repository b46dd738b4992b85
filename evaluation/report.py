"""Reports: the run summary, a Markdown table with cited reference rows, and a bar chart comparing runs.

A *run* is an output folder of ``infimed eval`` (``run.json`` plus ``<benchmark>/metrics.json``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.references import REFERENCE_ROWS, ReferenceRow

log = logging.getLogger(__name__)

DISPLAY = {
    "mmmu-med": "MMMU-H&M",
    "vqa-rad": "VQA-RAD",
    "slake": "SLAKE",
    "pathvqa": "PathVQA",
    "pmc-vqa": "PMC-VQA",
    "omnimedvqa": "OmniMedVQA",
    "medxpertqa": "MedXpertQA",
    "phantoms": "Phantoms",
}


class RunError(ValueError):
    """A run folder is missing or unreadable; the message names the path."""


@dataclass
class Run:
    """One evaluated model: a label and its per-benchmark metrics dicts."""

    label: str
    model: str
    metrics: dict[str, dict[str, Any]]


def load_run(folder: str | Path, label: str | None = None) -> Run:
    """Read a run folder (every ``*/metrics.json`` below it)."""
    folder = Path(folder)
    files = sorted(folder.glob("*/metrics.json"))
    if not files:
        raise RunError(f"{folder}: no <benchmark>/metrics.json found (is this an `infimed eval --out` folder?)")
    metrics: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            m = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RunError(f"{f}: unreadable metrics ({e})") from e
        metrics[m["benchmark"]] = m
    model = next(iter(metrics.values())).get("model", "?")
    run_json = folder / "run.json"
    if label is None and run_json.is_file():
        try:
            label = json.loads(run_json.read_text(encoding="utf-8")).get("label")
        except ValueError:
            label = None
    return Run(label or folder.name, model, metrics)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _columns(runs: list[Run]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        for b in r.metrics:
            if b not in seen:
                seen.append(b)
    order = list(DISPLAY)
    return sorted(seen, key=lambda b: (order.index(b) if b in order else len(order), b))


def markdown_table(runs: list[Run], references: tuple[ReferenceRow, ...] = REFERENCE_ROWS) -> str:
    """Headline accuracy (%) per benchmark for each run, then cited reference rows, then details."""
    cols = _columns(runs)
    head = "| Model | Source | " + " | ".join(DISPLAY.get(c, c) for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for r in runs:
        vals = [_pct(r.metrics[c]["overall"]["acc"]) if c in r.metrics else "–" for c in cols]
        lines.append(f"| **{r.label}** ({r.model}) | this run | " + " | ".join(vals) + " |")
    public = [c for c in cols if any(c in ref.values for ref in references)]
    sources: dict[str, int] = {}
    if public:
        for ref in references:
            n = sources.setdefault(f"{ref.source} — {ref.table}", len(sources) + 1)
            vals = [f"{ref.values[c]:.2f}" if c in ref.values else "–" for c in cols]
            lines.append(f"| {ref.model} ({ref.size}) | [{n}] | " + " | ".join(vals) + " |")
    out = ["\n".join(lines), ""]
    if sources:
        out.append("Reference rows: " + "; ".join(f"[{n}] {s}" for s, n in sources.items()) + ".")
        out.append(
            "Our numbers count each question once (closed by rules, open by exact match unless a judge "
            "was used); the references used an LLM judge for open answers."
        )
    elif references:
        out.append("No published reference rows: none of these benchmarks has a cited number.")
    out += ["", details_table(runs)]
    return "\n".join(out).rstrip() + "\n"


def details_table(runs: list[Run]) -> str:
    """Per run and benchmark: counts, closed accuracy with its 95 % interval and chance, open metrics."""
    lines = [
        "| Run | Benchmark | n | closed acc [95% CI] | chance | open EM | open F1 | open recall | BLEU-1 | "
        "ROUGE-L | errors | contaminated |",
        "|" + "---|" * 12,
    ]
    for r in runs:
        for b in _columns([r]):
            m = r.metrics[b]
            c, o = m["closed"], m["open"]
            ci = f"{_pct(c['acc'])} [{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]" if c["total"] else "–"
            cont = m.get("contamination")
            lines.append(
                f"| {r.label} | {DISPLAY.get(b, b)} | {m['n']} | {ci} | {_pct(c.get('chance'))} | "
                f"{_pct(o.get('em'))} | {_pct(o.get('f1'))} | {_pct(o.get('recall'))} | {_pct(o.get('bleu1'))} | "
                f"{_pct(o.get('rougel'))} | "
                f"{m.get('errors', 0)} | {cont['contaminated'] if cont else '–'} |"
            )
    return "\n".join(lines)


def question_type_table(run: Run, benchmark: str) -> str:
    """Closed accuracy per question type against its chance (majority-answer) rate."""
    m = run.metrics[benchmark]
    lines = ["| question type | n | acc [95% CI] | chance | above chance |", "|---|---|---|---|---|"]
    for qt, entry in m["by_question_type"].items():
        c = entry.get("closed")
        if not c:
            continue
        lines.append(
            f"| {qt} | {c['total']} | {_pct(c['acc'])} [{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}] | "
            f"{_pct(c.get('chance'))} | {'yes' if c.get('above_chance') else 'no'} |"
        )
    return "\n".join(lines)


def plot_runs(runs: list[Run], path: str | Path, *, title: str | None = None) -> Path:
    """Grouped bar chart of headline accuracy per benchmark, one bar per run (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(runs)
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(cols) + 1.5), 3.6), dpi=120)
    for k, r in enumerate(runs):
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(cols))]
        ys = [100 * (r.metrics[c]["overall"]["acc"] or 0) if c in r.metrics else 0 for c in cols]
        bars = ax.bar(xs, ys, width, label=r.label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    for i, c in enumerate(cols):  # chance level of closed questions, where known
        chances = [r.metrics[c]["closed"].get("chance") for r in runs if c in r.metrics]
        if chances and chances[0] is not None:
            ax.hlines(100 * chances[0], i - 0.45, i + 0.45, colors="grey", linestyles="dashed", linewidth=1)
    ax.set_xticks(range(len(cols)), [DISPLAY.get(c, c) for c in cols], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title or "accuracy per benchmark (dashed: closed-question chance)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
