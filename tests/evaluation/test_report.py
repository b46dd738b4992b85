from __future__ import annotations

import json

import pytest

from evaluation.references import REFERENCE_ROWS
from evaluation.report import RunError, load_run, markdown_table, plot_runs, question_type_table


def _metrics(bench: str, acc: float, *, closed_chance: float | None = 0.5) -> dict:
    closed = {"total": 10, "right": int(acc * 10), "acc": acc, "ci95": [acc - 0.1, acc + 0.1], "chance": closed_chance}
    return {
        "benchmark": bench,
        "model": "m",
        "n": 10,
        "errors": 0,
        "overall": {"total": 10, "right": int(acc * 10), "acc": acc, "ci95": [0, 1]},
        "closed": closed,
        "open": {
            "total": 0,
            "right": 0,
            "acc": None,
            "em": None,
            "f1": None,
            "recall": None,
            "bleu1": None,
            "rougel": None,
        },
        "by_question_type": {"presence": {"total": 10, "closed": {**closed, "above_chance": acc > 0.7}}},
        "contamination": None,
    }


def _run(tmp_path, name, values: dict[str, float], label=None):
    folder = tmp_path / name
    for bench, acc in values.items():
        (folder / bench).mkdir(parents=True)
        (folder / bench / "metrics.json").write_text(json.dumps(_metrics(bench, acc)))
    if label:
        (folder / "run.json").write_text(json.dumps({"label": label}))
    return folder


def test_reference_rows_carry_source_and_table():
    assert REFERENCE_ROWS
    for row in REFERENCE_ROWS:
        assert row.source.startswith("https://") and row.table and row.values
        assert all(0 < v < 100 for v in row.values.values())


def test_table_has_runs_then_cited_references(tmp_path):
    base = load_run(_run(tmp_path, "base", {"vqa-rad": 0.5, "phantoms": 0.55}))
    tuned = load_run(_run(tmp_path, "tuned", {"vqa-rad": 0.75, "phantoms": 0.9}, label="fine-tuned"))
    assert tuned.label == "fine-tuned" and base.label == "base"
    md = markdown_table([base, tuned])
    head = md.splitlines()[0]
    assert head.index("VQA-RAD") < head.index("Phantoms")
    assert "| **base** (m) | this run | 50.00 | 55.00 |" in md
    assert "| **fine-tuned** (m) | this run | 75.00 | 90.00 |" in md
    assert "| Qwen2.5VL-7B (7B) | [1] | 64.96 | – |" in md
    assert "[1] https://huggingface.co/InfiX-ai/InfiMed-SFT-3B" in md
    assert "| fine-tuned | Phantoms | 10 | 90.00 [80.00, 100.00] | 50.00 |" in md


def test_no_reference_rows_without_public_benchmarks(tmp_path):
    md = markdown_table([load_run(_run(tmp_path, "r", {"phantoms": 0.8}))])
    assert "No published reference rows" in md and "Qwen" not in md


def test_question_type_table(tmp_path):
    run = load_run(_run(tmp_path, "r", {"phantoms": 0.8}))
    assert "| presence | 10 | 80.00 [70.00, 90.00] | 50.00 | yes |" in question_type_table(run, "phantoms")


def test_chart_is_a_png(tmp_path):
    runs = [
        load_run(_run(tmp_path, "a", {"vqa-rad": 0.5, "slake": 0.6})),
        load_run(_run(tmp_path, "b", {"vqa-rad": 0.7})),
    ]
    out = plot_runs(runs, tmp_path / "c" / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="metrics.json"):
        load_run(tmp_path / "nothing")
