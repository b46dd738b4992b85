"""The judge scorer: a VLM rates image + text on the recipe's dimensions through any OpenAI-compatible
endpoint (this product's gateway included), via the shared client (:mod:`core.client`: bounded
concurrency, retries, a cache keyed by request content).

The model is asked for JSON ``{"<dimension>": {"score": 0..1, "rationale": "…"}, …}``. An answer that
cannot be parsed into a score in [0, 1] for every asked dimension is recorded as invalid with the reason,
and the sample keeps its deterministic scores: a bad judge never crashes a run. Text sent to the judge is
scrubbed of PHI first (names from headers were already removed or the sample was dropped by its gate).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.phi import scrub
from curation.recipe import Judge

log = logging.getLogger(__name__)

DEFAULT_RUBRIC = """You rate one medical image-text training sample for quality. Rate each dimension from 0 (unusable)
to 1 (excellent):
- visual: is the image clear, well exposed, of adequate resolution, a real medical image?
- text: is the text fluent, complete, not repetitive, with an answer when there is a question?
- consistency: does the text describe this image (modality, body part, findings)?
- medical: is it medically meaningful and plausibly correct?
- safety: is it free of patient identifiers (names, record numbers, dates, burned-in text)?"""
JUDGE_IMAGE_SIDE = 448


@dataclass
class JudgeResult:
    """One judged sample: ``valid`` with per-dimension scores, or invalid with ``error``."""

    valid: bool
    scores: dict[str, float] = field(default_factory=dict)
    rationale: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "scores": self.scores, "rationale": self.rationale, "error": self.error}


def _json_candidates(text: str) -> list[str]:
    t = text.strip()
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", t, re.DOTALL)
    out = fenced + [t]
    start, end = t.find("{"), t.rfind("}")
    if 0 <= start < end:
        out.append(t[start : end + 1])
    return out


def parse_judge_answer(text: str, dimensions: list[str]) -> JudgeResult:
    """Parse a judge answer; anything short of a score in [0, 1] for every dimension is invalid."""
    data: Any = None
    for cand in _json_candidates(text or ""):
        try:
            data = json.loads(cand)
            break
        except json.JSONDecodeError:
            continue
    if not isinstance(data, dict):
        return JudgeResult(False, error="no JSON object in the answer")
    scores: dict[str, float] = {}
    rationale: dict[str, str] = {}
    for dim in dimensions:
        value = data.get(dim)
        why = ""
        if isinstance(value, dict):
            why = str(value.get("rationale", value.get("reason", "")))[:300]
            value = value.get("score")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return JudgeResult(False, error=f"no numeric score for {dim!r}")
        if not 0 <= float(value) <= 1:
            return JudgeResult(False, error=f"score for {dim!r} out of [0, 1]: {value}")
        scores[dim] = float(value)
        rationale[dim] = why
    return JudgeResult(True, scores, rationale)


def _image_part(ref: dict[str, Any]) -> dict[str, Any]:
    """One image slot as a PNG data-URL part, rendered by ``core.render`` (the only way pixels reach a model).

    Burned-in text policy ``refuse``: an image that may show patient data in its pixels is never sent.
    """
    from core.budget import PixelBudget
    from core.client import image_part
    from core.manifest import RenderSpec
    from core.render import render

    files = ref.get("files")
    source: Any = [Path(f) for f in files] if files else Path(ref["path"])
    spec = RenderSpec.model_validate(ref["render"]) if ref.get("render") else None
    budget = PixelBudget(56 * 56, JUDGE_IMAGE_SIDE * JUDGE_IMAGE_SIDE)
    images, _record = render(source, spec, budget, max_images=1, policy="refuse")
    return image_part(images[0])


def build_messages(sample: dict[str, Any], cfg: Judge) -> list[dict[str, Any]]:
    """The judge request for one (cleaned) sample: its images, its scrubbed text, the rubric."""
    if sample.get("text") is not None:
        body = sample["text"].replace("<image>", "").strip()
    else:
        lines = []
        for m in sample.get("messages") or []:
            c = m["content"]
            t = c if isinstance(c, str) else " ".join(p.get("text") or "" for p in c)
            lines.append(f"{m['role']}: {t.replace('<image>', '').strip()}")
        body = "\n".join(lines)
    dims = ", ".join(f'"{d}"' for d in cfg.dimensions)
    prompt = (
        f'{cfg.rubric or DEFAULT_RUBRIC}\n\nSample text:\n"""\n{scrub(body)[:4000]}\n"""\n\n'
        f'Answer with JSON only, keys {dims}, each {{"score": <number 0..1>, "rationale": "<one sentence>"}}.'
    )
    content: list[dict[str, Any]] = [_image_part(ref) for ref in sample.get("images") or []]
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def run_judge(samples: dict[int, dict[str, Any]], client: Any, cfg: Judge, model: str) -> dict[int, JudgeResult]:
    """Judge every sample (key → cleaned sample dict); failures of any kind become invalid results."""
    from core.client import ChatRequest

    keys: list[int] = []
    requests: list[ChatRequest] = []
    results: dict[int, JudgeResult] = {}
    for key, sample in samples.items():
        try:
            msgs = build_messages(sample, cfg)
        except (OSError, ValueError) as e:
            results[key] = JudgeResult(False, error=f"request not built: {e}")
            continue
        keys.append(key)
        requests.append(ChatRequest(msgs, model, {"temperature": 0, "max_tokens": cfg.max_tokens}))
    for i, res in client.map_chat(requests, progress="judge"):
        key = keys[i]
        if isinstance(res, Exception):
            results[key] = JudgeResult(False, error=f"request failed: {type(res).__name__}")
        else:
            results[key] = parse_judge_answer(res.text, cfg.dimensions)
    bad = sum(1 for r in results.values() if not r.valid)
    log.info("judge: %d sample(s), %d invalid answer(s)", len(results), bad)
    return results
