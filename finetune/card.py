"""The model card every export carries: ``README.md`` (Hugging Face card format) and ``model_card.json``.

It says what the model is made of and what it is for: the base model, the export mode (and why an
adapter export was refused, if it was), every stage's configuration and result, the manifests with
their SHA-256 and sample counts, the code version (git sha, dirty flag, library versions), evaluation
results when ``infimed eval`` folders are given, and the intended use — research and decision support
after local validation, **not** clinical decisions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CARD_JSON = "model_card.json"
CARD_MD = "README.md"

INTENDED_USE = (
    "Research, and decision support for trained clinicians after validation on the deploying hospital's "
    "own data. It is NOT a medical device and must NOT be used to make clinical decisions on its own: "
    "answers can be wrong with full confidence. Inputs must be de-identified (`infimed deid`); keep a "
    "human in the loop and monitor the served model."
)
LIMITATIONS = (
    "Trained only on the data listed below; performance on other modalities, scanners, populations or "
    "languages is unknown until measured. Fine-tuning data inherits the labels' errors and biases."
)


def read_eval_results(folder: str | Path) -> dict[str, Any]:
    """Summarise an ``infimed eval --out`` folder (``run.json`` + ``<benchmark>/metrics.json``)."""
    folder = Path(folder)
    files = sorted(folder.glob("*/metrics.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no <benchmark>/metrics.json (is this an `infimed eval --out` folder?)")
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    benchmarks = []
    for f in files:
        m = json.loads(f.read_text())
        overall, closed, open_ = m.get("overall", {}), m.get("closed", {}), m.get("open", {})
        benchmarks.append({
            "benchmark": m.get("benchmark", f.parent.name), "model": m.get("model"), "n": m.get("n"),
            "accuracy": overall.get("acc"), "ci95": overall.get("ci95"),
            "closed_accuracy": closed.get("acc"), "closed_chance": closed.get("chance"),
            "open_em": open_.get("em"), "open_f1": open_.get("f1"), "errors": m.get("errors"),
        })  # fmt: skip
    return {"folder": str(folder), "label": run.get("label"), "benchmarks": benchmarks}


def build_card(
    *,
    name: str,
    mode: str,
    requested_mode: str,
    refusal: list[str],
    run_dir: Path,
    run_config: dict[str, Any],
    provenance: dict[str, Any],
    stages: list[dict[str, Any]],
    lineage: list[str],
    changes: dict[str, Any] | None,
    dtype: str | None,
    adapter_rank: int | None,
    evaluations: list[dict[str, Any]],
    exported_at: str,
) -> dict[str, Any]:
    """The card as data (written as JSON and rendered as Markdown)."""
    return {
        "name": name,
        "base_model": provenance.get("base_model") or run_config.get("model"),
        "export": {
            "mode": mode,
            "requested_mode": requested_mode,
            "adapter_refused_because": refusal,
            "dtype": dtype,
            "adapter_rank": adapter_rank,
            "exported_at": exported_at,
        },
        "run": {
            "dir": str(run_dir),
            "kind": run_config.get("kind"),
            "seed": run_config.get("seed"),
            "precision": run_config.get("precision"),
            "deepspeed": run_config.get("deepspeed"),
            "lineage": lineage,
        },
        "stages": stages,
        "changes_vs_base": changes,
        "data": provenance.get("manifests", {}),
        "code": provenance.get("code", {}),
        "libraries": provenance.get("libraries", {}),
        "evaluation": evaluations,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "config": run_config,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(card: dict[str, Any]) -> str:
    """The card as a Hugging Face-style README (YAML front matter, then sections)."""
    e, code = card["export"], card["code"]
    adapter = e["mode"] == "adapter"
    lines = [
        "---",
        f"base_model: {card['base_model']}",
        f"library_name: {'peft' if adapter else 'transformers'}",
        "pipeline_tag: image-text-to-text",
        "tags: [medical, vision-language, infimed, " + ("lora]" if adapter else "fine-tuned]"),
        "---",
        "",
        f"# {card['name']}",
        "",
        (
            f"A {'LoRA adapter for' if adapter else 'fine-tuned'} `{card['base_model']}`, made with "
            f"InfiMed's {card['run']['kind']} pipeline (stages: {' → '.join(card['run']['lineage'])})."
        ),
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Limitations",
        "",
        card["limitations"],
        "",
        "## Export",
        "",
        f"- mode: **{e['mode']}**"
        + (f" (requested: {e['requested_mode']})" if e["mode"] != e["requested_mode"] else ""),
        f"- weights dtype: {e['dtype'] or 'as trained'}" + (f"; adapter rank {e['adapter_rank']}" if adapter else ""),
        f"- exported: {e['exported_at']}",
    ]
    if e["adapter_refused_because"]:
        lines.append("- adapter export refused because vLLM applies an adapter to the original base, and:")
        lines.extend(f"  - {r}" for r in e["adapter_refused_because"])
    ch = card.get("changes_vs_base")
    if ch:
        lines.append(
            f"- compared with the base, tensor by tensor: {ch['lora_explained']} LoRA-adapted weight(s); changed "
            "outside LoRA: " + (", ".join(f"{m} {n}" for m, n in ch["changed"].items() if n) or "none")
        )
    lines += ["", "## How to serve", "", "```bash"]
    if adapter:
        rank = max(8, e["adapter_rank"] or 8)
        lines.append(f"infimed serve --model {card['base_model']} --lora {card['name']}=<this folder> "
                     f"-- --max-lora-rank {1 << (rank - 1).bit_length()}")  # fmt: skip
    else:
        lines.append(f"infimed serve --model <this folder> --served-model-name {card['name']}")
    head = "| stage | init | data | trainable (vision / projector / LM) | learning rate | steps | final loss |"
    lines += ["```", "", "## Training stages", "", head, "|---|---|---|---|---|---|---|"]
    for s in card["stages"]:
        t = s["trainable"]
        data = "<br>".join(f"{Path(d['manifest']).name} ×{d['weight']}" + (f" {d['tasks']}" if d.get("tasks") else "")
                           for d in s["data"])  # fmt: skip
        loss = s.get("final_loss")
        lines.append(f"| {s['name']} | {s['init_from']} | {data} | {t['vision']} / {t['projector']} / {t['language']} | "
                     f"{s['learning_rate']:g} | {s.get('steps_done', '?')} | "
                     f"{'n/a' if loss is None else f'{loss:.4f}'} |")  # fmt: skip
    lines += ["", "## Training data", "", "| manifest | samples | sha256 | stages |", "|---|---|---|---|"]
    for path, m in card["data"].items():
        lines.append(f"| `{path}` | {m.get('samples')} | `{m.get('sha256')}` | {', '.join(m.get('stages', []))} |")
    lines += ["", "## Evaluation", ""]
    if card["evaluation"]:
        lines += [
            "| run | benchmark | n | accuracy (95% CI) | closed (chance) | open EM / F1 |",
            "|---|---|---|---|---|---|",
        ]
        for ev in card["evaluation"]:
            for b in ev["benchmarks"]:
                ci = b.get("ci95") or [None, None]
                lines.append(f"| {ev.get('label') or Path(ev['folder']).name} | {b['benchmark']} | {b['n']} | "
                             f"{_pct(b['accuracy'])} ({_pct(ci[0])}–{_pct(ci[1])}) | {_pct(b['closed_accuracy'])} "
                             f"({_pct(b['closed_chance'])}) | {_pct(b['open_em'])} / {_pct(b['open_f1'])} |")  # fmt: skip
    else:
        lines.append("No evaluation results were attached. Serve the model, run `infimed eval … --out EVAL_DIR`, "
                     "then export again with `--eval EVAL_DIR`.")  # fmt: skip
    lines += ["", "## Code version", ""]
    sha = code.get("git_sha") or "unknown (not a git checkout)"
    lines.append(f"- infimed {code.get('package_version') or '?'}, git `{sha}`"
                 + (" (uncommitted changes present)" if code.get("dirty") else ""))  # fmt: skip
    lines.append("- " + ", ".join(f"{k} {v}" for k, v in card["libraries"].items()))
    lines += ["", "The full run configuration is in `model_card.json` (`config`).", ""]
    return "\n".join(lines)


def write_card(out_dir: Path, card: dict[str, Any]) -> list[Path]:
    """Write ``model_card.json`` and ``README.md`` into the export folder."""
    js, md = out_dir / CARD_JSON, out_dir / CARD_MD
    js.write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    md.write_text(render_markdown(card), encoding="utf-8")
    return [md, js]
