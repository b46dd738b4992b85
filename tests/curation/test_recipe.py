"""Recipe YAML: every shipped recipe validates; bad ones fail with the file and the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curation.recipe import RecipeError, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "curation" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path) -> None:
    r = load_recipe(path)
    assert r.kind == "curation" and r.schema_version == 1 and r.scorers
    assert path.read_text().startswith("# infimed curate")


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(RECIPES[0].read_text())
    data.update(changes)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"kind": "training"}, "'kind' must be 'curation'"),
        ({"schema_version": 2}, "schema_version 2 is not supported"),
        ({"scorers": [{"name": "visual.nope"}]}, "unknown scorer 'visual.nope'"),
        ({"weights": {"looks": 1}}, "unknown dimension 'looks'"),
        ({"splits": {"fractions": {"train": 0.5, "test": 0.2}}}, "sum to 1"),
        ({"gates": {"dates": "blur"}}, "gates.dates"),
        ({"keep": {"threshold": 2}}, "keep.threshold"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_recipes_name_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_unreadable_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
