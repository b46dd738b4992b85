"""Every pretrain YAML in the repository loads, opens with its launch command, and dry-runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pretrain.recipe import dry_run, resolve_sources
from training.stage import ConfigError, load_run_config

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_YAMLS = sorted(
    p
    for p in REPO.rglob("*.yaml")
    if ".venv" not in p.parts and (yaml.safe_load(p.read_text()) or {}).get("kind") == "pretrain"
)


def test_there_are_smoke_and_multi_gpu_recipes():
    names = {p.name for p in PRETRAIN_YAMLS}
    assert "smoke_tiny_cpu.yaml" in names and len(names) >= 3


@pytest.mark.parametrize("path", PRETRAIN_YAMLS, ids=lambda p: p.name)
def test_recipe_validates_and_opens_with_its_launch_command(path: Path):
    cfg = load_run_config(path, kind="pretrain")
    first = path.read_text().splitlines()[0]
    assert (
        first.startswith("# ")
        and ("pretrain" in first)
        and any(w in first for w in ("infimed", "torchrun", "deepspeed"))
    ), first
    assert len(cfg.stages) >= 2  # a low→high resolution schedule
    assert cfg.stages[0].max_pixels < cfg.stages[-1].max_pixels
    if cfg.deepspeed:
        assert Path(cfg.deepspeed).is_file(), cfg.deepspeed


@pytest.mark.parametrize("path", [p for p in PRETRAIN_YAMLS if "smoke" not in p.name], ids=lambda p: p.name)
def test_multi_gpu_recipes_dry_run_without_weights(path: Path):
    cfg = load_run_config(path, kind="pretrain")
    report = dry_run(cfg)
    rows = report.memory_table.splitlines()[1:]
    assert len(rows) == len(cfg.stages)
    totals = [float(r.split()[-1]) for r in rows]
    assert all(0 < t < 80 for t in totals), totals  # fits an 80 GB GPU as configured
    params = int(rows[0].split()[3].replace(",", ""))
    assert params > 3_000_000_000  # the real architecture was built (on the meta device)


def test_smoke_dry_run_plans_packs(infimed_cache):
    cfg = resolve_sources(load_run_config(REPO / "pretrain/configs/smoke_tiny_cpu.yaml", kind="pretrain"))
    report = dry_run(cfg)
    assert all("packs of" in line for line in report.plans), report.plans


def test_bad_recipe_names_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kind: pretrain\nschema_version: 1\nmodel: m\nstages:\n  - name: a\n    data: [{manifest: x.jsonl}]\n    steps: 1\n    epochs: 1\n"
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml.*exactly one of 'epochs' or 'steps'"):
        load_run_config(bad, kind="pretrain")
    with pytest.raises(ConfigError, match="expected 'finetune'"):
        load_run_config(bad, kind="finetune")
