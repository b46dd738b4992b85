"""End-to-end curation on crafted samples: the expected decision and reason for each, resume, outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from curation import CurationError, InputSpec, curate
from curation._io import read_jsonl

from .conftest import make_image, vqa, write_jsonl

GOOD_Q = "Is there a nodule in the left lung on this chest CT?"
GOOD_A = "Yes, a 5 mm nodule is seen in the left lower lobe."


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory, dicom_files: dict[str, Path]) -> Path:
    src = tmp_path_factory.mktemp("src")
    for i in range(3):
        make_image(src / f"good{i}.png", seed=i)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    make_image(src / "blank.png", kind="blank")
    Image.open(src / "good1.png").convert("RGB").save(src / "good1_copy.jpg", quality=92)
    make_image(src / "big.png", seed=7, size=(1400, 1400))
    recs = [
        vqa("good0", "good0.png", GOOD_Q, GOOD_A, modality="CT"),
        vqa(
            "good1",
            "good1.png",
            "Which lobe holds the mass on this chest CT?",
            "The mass is in the right upper lobe.",
            modality="CT",
        ),
        vqa("broken", "broken.png", GOOD_Q, GOOD_A),
        vqa("blank", "blank.png", GOOD_Q, GOOD_A),
        {"schema_version": 1, "id": "empty", "task": "caption", "text": "<image>", "images": [{"path": "good2.png"}]},
        vqa("noanswer", "good2.png", GOOD_Q, None),
        vqa(
            "phi",
            "good2.png",
            "Is there a nodule in the right lung on this CT?",
            "Yes. Patient MRN: 1234567, call 555-123-4567.",
        ),
        vqa(
            "dated",
            "good2.png",
            "What did the chest CT of 2021-03-04 show in the lung?",
            "A 5 mm nodule in the lung, unchanged since 03/04/2020.",
        ),
        vqa("exactdup", "good0.png", GOOD_Q, GOOD_A, modality="CT"),
        vqa(
            "neardup",
            "good1_copy.jpg",
            "Which lobe holds the mass on this chest CT?",
            "The mass is in the right upper lobe.",
            modality="CT",
        ),
        vqa(
            "burned",
            str(dicom_files["burned"]),
            "Is there a nodule in the lung on this CT?",
            "No nodule is seen in the lung.",
        ),
        vqa(
            "headerphi",
            str(dicom_files["CT_small.dcm"]),
            "Is there a nodule in the lung on this CT?",
            "No nodule is seen in the lung.",
        ),
        vqa(
            "clean_dicom",
            str(dicom_files["clean"]),
            "Is there a nodule in the chest on this CT?",
            "No nodule is seen in the chest.",
        ),
        vqa("big", "big.png", "Is there a nodule in the lung on this CT?", "No nodule is seen in the lung."),
        vqa(
            "toolong",
            "good2.png",
            "Describe the lung findings on this CT.",
            " ".join(["The lung nodule is stable."] * 150),
        ),
    ]
    write_jsonl(src / "manifest.jsonl", recs)
    return src / "manifest.jsonl"


EXPECTED = {
    "good0": ("kept", None),
    "good1": ("kept", None),
    "broken": ("rejected", "gate:undecodable_image"),
    "blank": ("rejected", "gate:undecodable_image"),
    "empty": ("rejected", "gate:empty_text"),
    "noanswer": ("rejected", "gate:missing_answer"),
    "phi": ("rejected", "gate:direct_identifiers"),
    "dated": ("kept", None),
    "exactdup": ("rejected", "dedup:exact"),
    "neardup": ("rejected", "dedup:near"),
    "burned": ("rejected", "gate:burned_in_annotation"),
    "headerphi": ("kept", None),
    "clean_dicom": ("kept", None),
    "big": ("kept", None),
    "toolong": ("rejected", "gate:over_length"),
}


@pytest.fixture(scope="module")
def default_run(crafted: Path, tmp_path_factory: pytest.TempPathFactory):
    from .conftest import test_recipe

    before = _tree_hash(crafted.parent)
    recipe = test_recipe(**{"budget.max_length": 700, "keep.threshold": 0.3})
    out = tmp_path_factory.mktemp("run") / "out"
    result = curate(recipe, [InputSpec(crafted)], out, workers=1, progress=False)
    return recipe, out, result, before


def test_crafted_samples_get_expected_decisions(crafted: Path, default_run) -> None:
    recipe, out, result, before = default_run
    scores = {r["id"]: r for r in read_jsonl(out / "scores.jsonl")}
    for sid, (decision, rule) in EXPECTED.items():
        r = scores[sid]
        assert r["decision"] == decision, (sid, r["reasons"])
        if rule:
            assert rule in [x["rule"] for x in r["reasons"]], (sid, r["reasons"])
        for dim, v in r["dimensions"].items():
            assert 0 <= v <= 1, (sid, dim)
        for s in r["scorers"].values():
            assert 0 <= s["score"] <= 1 and s["reason"]
    assert result.kept == sum(1 for d, _ in EXPECTED.values() if d == "kept")
    # reasons name the survivor of a duplicate group and never carry the PHI values
    assert "good0" in scores["exactdup"]["reasons"][0]["reason"]
    assert "good1" in scores["neardup"]["reasons"][0]["reason"]
    assert "1234567" not in (out / "scores.jsonl").read_text() and "555-123" not in (out / "report.html").read_text()
    # header PHI is recorded (default recipe: flag), over-long image got a max_pixels, dates were shifted
    assert any("header_phi" in n for n in scores["headerphi"]["notes"])
    kept = {s["id"]: s for s in read_jsonl(out / "kept.jsonl")}
    big = kept["big"]["images"][0]
    assert big["max_pixels"] < recipe.budget.max_pixels and big["width"] == 1400
    dated = kept["dated"]["messages"]
    assert "2021-03-04" not in dated[0]["content"] and "03/04/2020" not in dated[1]["content"]
    assert any("dates shifted" in n for n in scores["dated"]["notes"])
    # rejected manifest: every sample with its reasons; kept + rejected = all; sources untouched
    rejected = read_jsonl(out / "rejected.jsonl")
    assert all(s["meta"]["curation_reasons"] for s in rejected)
    assert {s["id"] for s in rejected} | set(kept) == set(EXPECTED)
    assert _tree_hash(crafted.parent) == before
    # kept image paths are relative to the output folder and resolve to the sources
    assert (out / kept["good0"]["images"][0]["path"]).resolve() == (crafted.parent / "good0.png").resolve()
    # the patient identity is replaced by a hash, and splits are set
    assert all(s["meta"]["patient_hash"].startswith("p-") and s["meta"]["split"] for s in kept.values())
    assert "patient_id" not in json.dumps(list(kept.values()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rules"]["gate:undecodable_image"] == 2


def test_header_phi_gate_can_drop(crafted: Path, tmp_path: Path, recipe_factory) -> None:
    recipe = recipe_factory(**{"gates.header_phi": "drop", "budget.max_length": 700})
    curate(recipe, [InputSpec(crafted)], tmp_path / "out", workers=1, progress=False)
    scores = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "scores.jsonl")}
    assert "gate:header_phi" in [x["rule"] for x in scores["headerphi"]["reasons"]]
    assert scores["clean_dicom"]["decision"] == "kept"


def test_scrub_policy_keeps_phi_samples_without_identifiers(crafted: Path, tmp_path: Path, recipe_factory) -> None:
    recipe = recipe_factory(**{"gates.direct_identifiers": "scrub", "budget.max_length": 700, "keep.threshold": 0.0})
    curate(recipe, [InputSpec(crafted)], tmp_path / "out", workers=1, progress=False)
    kept = {s["id"]: s for s in read_jsonl(tmp_path / "out" / "kept.jsonl")}
    answer = kept["phi"]["messages"][1]["content"]
    assert "1234567" not in answer and "[MRN]" in answer and "[PHONE]" in answer


def test_parallel_equals_serial_and_resume_skips_done_shards(crafted: Path, tmp_path: Path, default_run) -> None:
    recipe, a_out, a, _ = default_run
    b = curate(recipe, [InputSpec(crafted)], tmp_path / "b", workers=2, progress=False)
    assert (a_out / "kept.jsonl").read_text() == (tmp_path / "b" / "kept.jsonl").read_text()
    assert a.shards_run == b.shards_run == 4  # 15 samples, shards of 4
    # a run killed after some shards: the rerun scores only the missing ones and gives the same result
    shards = sorted((tmp_path / "b" / ".state" / "shards").glob("shard-*.jsonl"))
    shards[1].unlink()
    (tmp_path / "b" / "kept.jsonl").unlink()
    c = curate(recipe, [InputSpec(crafted)], tmp_path / "b", workers=1, progress=False)
    assert (c.shards_run, c.shards_skipped) == (1, 3)
    assert (a_out / "kept.jsonl").read_text() == (tmp_path / "b" / "kept.jsonl").read_text()
    assert not list((tmp_path / "b").rglob("*.tmp"))


def test_resume_refuses_another_recipe(crafted: Path, tmp_path: Path, recipe_factory) -> None:
    curate(recipe_factory(), [InputSpec(crafted)], tmp_path / "out", workers=1, progress=False)
    # decisions applied after scoring (threshold, weights, dedup) re-use the scored shards
    again = curate(recipe_factory(**{"keep.threshold": 0.9}), [InputSpec(crafted)], tmp_path / "out", progress=False)
    assert again.shards_run == 0 and again.shards_skipped == 4
    with pytest.raises(CurationError, match="another recipe"):
        curate(recipe_factory(**{"gates.dates": "scrub"}), [InputSpec(crafted)], tmp_path / "out", progress=False)


def test_keep_fraction_keeps_the_best(crafted: Path, tmp_path: Path, recipe_factory, default_run) -> None:
    import shutil

    shutil.copytree(default_run[1] / ".state", tmp_path / "out" / ".state")  # re-decide from the scored shards
    recipe = recipe_factory(**{"keep.threshold": None, "keep.fraction": 0.5, "budget.max_length": 700})
    result = curate(recipe, [InputSpec(crafted)], tmp_path / "out", workers=1, progress=False)
    assert result.shards_run == 0
    scores = read_jsonl(tmp_path / "out" / "scores.jsonl")
    survivors = [r for r in scores if not [x for x in r["reasons"] if x["rule"] != "fraction"]]
    kept = [r for r in scores if r["decision"] == "kept"]
    assert len(kept) == round(len(survivors) * 0.5)
    assert min(r["overall"] for r in kept) >= max(r["overall"] for r in survivors if r["decision"] == "rejected")


def test_report_has_plots_and_deidentified_thumbnails(default_run) -> None:
    out = default_run[1]
    page = (out / "report.html").read_text()
    for png in ("histograms.png", "rules.png", "correlations.png"):
        assert (out / "report_files" / png).stat().st_size > 1000 and png in page
    thumbs = sorted((out / "report_files").glob("example-*.png"))
    assert thumbs
    for t in thumbs:
        with Image.open(t) as im:
            assert max(im.size) <= 96
    assert "gate:burned_in_annotation" in page and "CompressedSamples" not in page


def test_phantoms_are_kept_with_their_patient_splits(tmp_path: Path, recipe_factory) -> None:
    from core.manifest import read_manifest
    from core.phantoms import generate_phantoms

    manifest = generate_phantoms(tmp_path / "ph", n=4, seed=0)
    out = tmp_path / "out"
    result = curate(recipe_factory(), [InputSpec(manifest)], out, workers=1, progress=False)
    kept = list(read_manifest(out / "kept.jsonl"))
    assert result.rejected == 0 and len(kept) == result.total > 4
    splits: dict[str, set[str]] = {}
    for s in kept:
        splits.setdefault(s.meta.patient_hash, set()).add(s.meta.split)
        assert s.resolve(out, s.images[0]).is_file()
    assert len(splits) == 4 and all(len(v) == 1 for v in splits.values())
    assert (out / "kept.jsonl").stat().st_mode & 0o044  # readable like any new file, not 0600


def test_workers_share_a_shard_in_pieces(crafted: Path, tmp_path: Path, default_run) -> None:
    """One big shard is still scored by every worker (pieces of 4); the shard file keeps the input order."""
    from curation.pipeline import piece_size

    from .conftest import test_recipe

    assert piece_size(15, 2) == 4 and piece_size(256, 2) == 16 and piece_size(100_000, 8) == 32
    _, a_out, _, _ = default_run
    one_shard = test_recipe(**{"budget.max_length": 700, "keep.threshold": 0.3, "run.shard_size": 64})
    r = curate(one_shard, [InputSpec(crafted)], tmp_path / "c", workers=2, progress=False)
    assert r.shards_run == 1
    (shard,) = (tmp_path / "c" / ".state" / "shards").glob("shard-*.jsonl")
    assert [rec["index"] for rec in read_jsonl(shard)] == list(range(15))
    assert (a_out / "kept.jsonl").read_text() == (tmp_path / "c" / "kept.jsonl").read_text()
