"""Every YAML config in the repository carries `kind:` and `schema_version:` and validates with the loader
of its kind (one test for all of them, so a config can never silently rot)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SKIP_PARTS = {".venv", ".git", "node_modules", "artifacts", ".cache"}
YAMLS = sorted(p for p in REPO.rglob("*.y*ml") if not SKIP_PARTS & set(p.parts) and p.suffix in (".yaml", ".yml"))


def _load(kind: str, path: Path):
    if kind == "curation":
        from curation.recipe import load_recipe

        return load_recipe(path)
    if kind in ("pretrain", "finetune"):
        from training.stage import load_run_config

        return load_run_config(path, kind=kind)
    raise AssertionError(f"{path}: unknown kind {kind!r}: add its loader to tests/test_configs.py")


def test_configs_exist():
    kinds = {(yaml.safe_load(p.read_text()) or {}).get("kind") for p in YAMLS}
    assert {"curation", "pretrain"} <= kinds


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_validates(path: Path):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path}: not a mapping"
    assert "kind" in raw and "schema_version" in raw, f"{path}: every config carries kind: and schema_version:"
    assert _load(raw["kind"], path) is not None
