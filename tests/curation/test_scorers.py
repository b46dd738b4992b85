"""Deterministic scorers: crafted good and bad samples, each score in [0, 1] with the expected reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.manifest import Sample
from curation.features import analyse_image
from curation.recipe import Recipe
from curation.scorers import SCORERS, SampleContext, run_scorer

from .conftest import make_image, vqa


def ctx_for(rec: dict, licences: list[str] | None = None) -> SampleContext:
    s = Sample.model_validate(rec)
    ims = [analyse_image(Path(r.path), r.kind, None) for r in s.images]
    return SampleContext(s, ims, allowed_licences=licences or [])


def score(name: str, ctx: SampleContext, **params):
    sc = run_scorer(name, ctx, params)
    assert 0.0 <= sc.score <= 1.0 and sc.reason
    return sc


@pytest.fixture(scope="module")
def imgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("imgs")
    out = {k: str(make_image(d / f"{k}.png", kind=k, seed=3)) for k in ("sharp", "blurred", "blank", "colour")}
    out["small"] = str(make_image(d / "small.png", size=(64, 64)))
    out["wide"] = str(make_image(d / "wide.png", size=(800, 100)))
    (d / "broken.png").write_bytes(b"garbage")
    out["broken"] = str(d / "broken.png")
    return out


def test_every_registered_scorer_runs_on_a_good_sample(imgs) -> None:
    ctx = ctx_for(vqa("a", imgs["sharp"], "Is there a nodule in the lung on this CT?", "Yes, in the left lower lobe."))
    for name in SCORERS:
        if name == "consistency.clip":
            continue  # needs a local model folder
        sc = score(name, ctx)
        assert sc.score >= 0.5, (name, sc)
        assert not sc.flags, (name, sc.flags)


def test_visual_scorers_separate_good_from_bad(imgs) -> None:
    q, a = "Is there a nodule?", "No."
    good = ctx_for(vqa("g", imgs["sharp"], q, a))
    assert (
        score("visual.sharpness", good).score
        > score("visual.sharpness", ctx_for(vqa("b", imgs["blurred"], q, a))).score
    )
    assert "blurred" in score("visual.sharpness", ctx_for(vqa("b", imgs["blurred"], q, a))).reason
    broken = score("visual.decodable", ctx_for(vqa("x", imgs["broken"], q, a)))
    assert broken.score == 0 and "undecodable_image" in broken.flags
    blank = score("visual.decodable", ctx_for(vqa("x", imgs["blank"], q, a)))
    assert blank.score == 0 and "blank" in blank.reason
    assert score("visual.resolution", ctx_for(vqa("s", imgs["small"], q, a)), min_side=224).score == pytest.approx(
        64 / 224
    )
    assert score("visual.aspect", ctx_for(vqa("w", imgs["wide"], q, a))).score < 0.5
    assert score("visual.exposure", ctx_for(vqa("x", imgs["blank"], q, a))).score == 0


def test_text_scorers(imgs) -> None:
    im = imgs["sharp"]
    empty = score(
        "text.length",
        ctx_for({"schema_version": 1, "id": "e", "task": "caption", "text": "<image>", "images": [{"path": im}]}),
    )
    assert empty.score == 0 and "empty_text" in empty.flags
    loop = " ".join(["the nodule is big"] * 30)
    assert score("text.repetition", ctx_for(vqa("r", im, "Describe.", loop))).score < 0.5
    trunc = score(
        "text.truncation", ctx_for(vqa("t", im, "Describe.", "There is a large opacity in the right lower lobe with"))
    )
    assert trunc.score <= 0.4 and "truncated" in trunc.reason
    missing = score("text.answer", ctx_for(vqa("m", im, "Is there a nodule?", None)))
    assert missing.score == 0 and "missing_answer" in missing.flags
    opts = vqa("o", im, "Yes or no?", "maybe", answer_type="closed", options=["yes", "no"])
    assert score("text.answer", ctx_for(opts)).score == 0.5
    assert (
        score("text.language", ctx_for(vqa("l", im, "Describe.", "The lesion is Ã© â€™ \ufffd\ufffd bad"))).score < 0.8
    )


def test_consistency_against_header_and_image_statistics(imgs, dicom_files) -> None:
    ct = str(dicom_files["CT_small.dcm"])
    assert score("consistency.modality", ctx_for(vqa("a", ct, "What does this CT show?", "A normal CT."))).score == 1.0
    wrong = score("consistency.modality", ctx_for(vqa("b", ct, "What does this MRI show?", "A T2 lesion.")))
    assert wrong.score < 0.5 and "MR" in wrong.reason and "CT" in wrong.reason
    colour = score(
        "consistency.modality", ctx_for(vqa("c", imgs["colour"], "What does this chest X-ray show?", "Clear lungs."))
    )
    assert colour.score < 0.5 and "colour" in colour.reason
    clean = str(dicom_files["clean"])  # BodyPartExamined CHEST
    assert score("consistency.body_part", ctx_for(vqa("d", clean, "Is the chest normal?", "Yes."))).score == 1.0
    assert score("consistency.body_part", ctx_for(vqa("e", clean, "Is the knee normal?", "Yes."))).score < 0.5


def test_medical_value(imgs) -> None:
    im = imgs["sharp"]
    med = score("medical.vocabulary", ctx_for(vqa("a", im, "Is there pleural effusion?", "Yes, with atelectasis.")))
    chat = score("medical.vocabulary", ctx_for(vqa("b", im, "What colour is the car?", "Red.")))
    assert med.score == 1.0 and chat.score == 0.0
    assert (
        score("medical.question_type", ctx_for(vqa("c", im, "How many nodules are there?", "Two."))).reason
        == "question type count"
    )
    assert score("medical.modality", ctx_for(vqa("d", im, "What is this?", "A picture."))).score < 0.5


def test_safety_scorers(imgs, dicom_files) -> None:
    im = imgs["sharp"]
    phi = score("safety.text_phi", ctx_for(vqa("a", im, "Is there a nodule?", "Yes, MRN: 1234567, jane@x.org")))
    assert phi.score == 0 and "direct_identifiers" in phi.flags and "1234567" not in phi.reason
    dated = score("safety.text_phi", ctx_for(vqa("b", im, "Findings on 2021-03-04?", "Stable.")))
    assert "dates" in dated.flags and "direct_identifiers" not in dated.flags
    # the patient's name comes from the DICOM header
    named = score(
        "safety.text_phi",
        ctx_for(vqa("c", str(dicom_files["CT_small.dcm"]), "Is this CompressedSamples CT normal?", "Yes.")),
    )
    assert "name" in named.reason
    head = score("safety.header_phi", ctx_for(vqa("d", str(dicom_files["CT_small.dcm"]), "Normal?", "Yes.")))
    assert head.score < 1 and "PatientName" in head.reason and "header_phi" in head.flags
    assert score("safety.header_phi", ctx_for(vqa("e", str(dicom_files["clean"]), "Normal?", "Yes."))).score == 1.0
    burned = score("safety.burned_in", ctx_for(vqa("f", str(dicom_files["burned"]), "Normal?", "Yes.")))
    assert burned.score == 0 and "burned_in_annotation" in burned.flags
    us = score("safety.burned_in", ctx_for(vqa("u", str(dicom_files["examples_rgb_color.dcm"]), "Normal?", "Yes.")))
    assert us.score < 1 and "burned_in_risk" in us.flags and "US image" in us.reason
    lic = score("safety.licence", ctx_for(vqa("g", im, "Normal?", "Yes.", licence="CC-BY-NC-ND-4.0"), ["CC-BY-4.0"]))
    assert lic.score == 0 and "licence" in lic.flags
    assert (
        score("safety.licence", ctx_for(vqa("h", im, "Normal?", "Yes.", licence="CC-BY-4.0"), ["cc-by-4.0"])).score == 1
    )


def test_ocr_without_its_package_fails_clearly(imgs, monkeypatch) -> None:
    import core._redact

    monkeypatch.setattr(core._redact, "ocr_engine", lambda: None)  # as where the ocr extra is not installed
    with pytest.raises(ValueError, match=r"infimed\[ocr\]"):
        run_scorer("safety.burned_in", ctx_for(vqa("a", imgs["sharp"], "q?", "a.")), {"ocr": True})


def test_bad_scorer_params_name_the_scorer(imgs) -> None:
    with pytest.raises(ValueError, match="visual.resolution"):
        run_scorer("visual.resolution", ctx_for(vqa("a", imgs["sharp"], "q?", "a.")), {"min_sidee": 3})


def test_clip_scorer_needs_a_local_model_folder(imgs, tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot load a local CLIP-style model"):
        run_scorer("consistency.clip", ctx_for(vqa("a", imgs["sharp"], "q?", "a.")), {"model": str(tmp_path / "none")})


def _tiny_clip(folder: Path) -> Path:
    """A CLIP model with random weights, built from a config with a byte-level vocabulary (no download)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    image = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image, tokenizer=CLIPTokenizer(vocab=vocab, merges=[])).save_pretrained(folder)
    layer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(text_config={"vocab_size": len(vocab), "max_position_embeddings": 77, **layer},
                        vision_config={"image_size": 32, "patch_size": 8, **layer}, projection_dim=16)  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_clip_scorer_runs_a_local_model(imgs, tmp_path) -> None:
    """The CLIP path end to end with a tiny random model: loads from the folder only, returns a score in [0, 1]
    and the similarity in its reason (real weights give meaningful similarities; these give noise)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    model = _tiny_clip(tmp_path / "clip")
    ctx = ctx_for(vqa("a", imgs["sharp"], "Is there a nodule on this chest CT?", "Yes, in the left lung."))
    s = run_scorer("consistency.clip", ctx, {"model": str(model)})
    assert 0.0 <= s.score <= 1.0 and s.reason.startswith("CLIP similarity ")
    sim = float(s.reason.rsplit(" ", 1)[1])
    assert -1.0 <= sim <= 1.0
    assert run_scorer("consistency.clip", ctx, {"model": str(model)}).reason == s.reason  # deterministic


def _burned_in_picture(path: Path, text: str | None) -> Path:
    from PIL import ImageDraw, ImageFont

    img = Image.new("L", (512, 512), 20)
    draw = ImageDraw.Draw(img)
    draw.ellipse((150, 150, 350, 350), fill=120)
    if text:
        draw.text((20, 20), text, fill=255, font=ImageFont.load_default(size=28))
    img.save(path)
    return path


def test_ocr_finds_burned_in_identifiers(tmp_path) -> None:
    """With the ocr extra (RapidOCR, as the renderer's redaction uses it): text with a date/ID burned into the
    pixels trips the ``burned_in_annotation`` gate; a picture without text passes. The dev lock installs the
    extra, so this runs in CI; skipped only where it is absent."""
    from core._redact import ocr_available

    if not ocr_available():
        pytest.skip("the ocr extra is not installed (pip install 'infimed[ocr]')")
    marked = _burned_in_picture(tmp_path / "marked.png", "DOE^JOHN  MRN 12345678  2021-03-04")
    clean = _burned_in_picture(tmp_path / "clean.png", None)
    s = run_scorer("safety.burned_in", ctx_for(vqa("a", str(marked), "Nodule?", "Yes.")), {"ocr": True})
    assert s.score == 0.0 and "burned_in_annotation" in s.flags and "characters of burned-in text" in s.reason
    assert "12345678" not in s.reason and "DOE" not in s.reason  # the reason names kinds, never the text
    c = run_scorer("safety.burned_in", ctx_for(vqa("b", str(clean), "Nodule?", "Yes.")), {"ocr": True})
    assert c.score == 1.0 and not c.flags


def test_optional_scorers_are_checked_before_a_run(tmp_path) -> None:
    """An OCR or CLIP scorer this installation cannot run stops the run at the start, naming what is missing;
    the default recipe needs neither."""
    import importlib.util

    from curation import CurationError, InputSpec, curate
    from curation.scorers import optional_problems

    from .conftest import test_recipe

    assert optional_problems(test_recipe().scorers) == []
    data = test_recipe().model_dump()
    for spec in data["scorers"]:
        if spec["name"] == "safety.burned_in":
            spec["params"] = {"ocr": True}
    data["scorers"].append({"name": "consistency.clip", "params": {"model": str(tmp_path / "no-model")}})
    recipe = Recipe.model_validate(data)
    problems = optional_problems(recipe.scorers)
    has_ocr = any(importlib.util.find_spec(m) for m in ("rapidocr", "rapidocr_onnxruntime"))
    assert len(problems) == (1 if has_ocr else 2)
    assert any("no-model" in p and "nothing is downloaded" in p for p in problems)
    assert has_ocr or any("infimed[ocr]" in p for p in problems)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(vqa("a", None, "Is it normal?", "Yes.")) + "\n")
    with pytest.raises(CurationError, match="cannot run"):
        curate(recipe, [InputSpec(src)], tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out" / ".state").exists()  # stopped before any work


def test_missing_ocr_extra_is_named(monkeypatch) -> None:
    import importlib.util

    from curation.scorers import optional_problems

    from .conftest import test_recipe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "rapidocr" in name else real(name, *a))
    data = test_recipe().model_dump()
    for spec in data["scorers"]:
        if spec["name"] == "safety.burned_in":
            spec["params"] = {"ocr": True}
    (problem,) = optional_problems(Recipe.model_validate(data).scorers)
    assert "safety.burned_in" in problem and "pip install 'infimed[ocr]'" in problem
