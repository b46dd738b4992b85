"""Everything curation does to one sample that needs no other sample (runs in the worker processes).

Order: decode images → deterministic scorers → gate flags → patient hash and split → text clean-up (date
shift / scrub, per the recipe) → token budget. The result is one JSON-able record; the patient identity
and any names found in headers never leave this function.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from core.manifest import Sample
from core.phi import DIRECT_KINDS, find_phi, shift_date_text
from curation.features import ImageInfo, analyse_image
from curation.recipe import DIMENSIONS, Recipe
from curation.scorers import SCORERS, SampleContext, run_scorer
from curation.splits import assign_split, date_shift_days, patient_hash
from curation.tokens import check_budget

log = logging.getLogger(__name__)

# Identity-bearing meta keys readers may set: used here, never written out.
PRIVATE_META = ("patient_id", "study_uid", "patient_name")


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int) -> Any:
    """MinHash permutations for ``seed=1`` (generating them costs more than hashing a short text)."""
    from datasketch import MinHash

    template = MinHash(num_perm=num_perm, seed=1)
    return template.permutations, template.scheme


def text_fingerprint(text: str, num_perm: int) -> tuple[str, list[int] | None]:
    """(sha256 of the normalised text, MinHash values of its character 5-grams or None when empty)."""
    norm = re.sub(r"\s+", " ", text.lower()).strip()
    sha = hashlib.sha256(norm.encode()).hexdigest()
    if not norm:
        return sha, None
    from datasketch import MinHash

    grams = {norm[i : i + 5].encode() for i in range(max(1, len(norm) - 4))}
    perms, scheme = _permutations(num_perm)
    mh = MinHash(num_perm=num_perm, seed=1, permutations=perms, scheme=scheme)
    mh.update_batch(list(grams))
    return sha, [int(x) for x in mh.hashvalues]


def _identity(sample: Sample, images: list[ImageInfo]) -> tuple[str, str]:
    """(identity, what it is) for the split: patient, else study, else image content, else sample id."""
    extra = sample.meta.model_extra or {}
    if extra.get("patient_id"):
        return str(extra["patient_id"]), "patient"
    for im in images:
        if im.patient_key:
            return im.patient_key, "patient"
    if sample.meta.patient_hash:
        return sample.meta.patient_hash, "patient_hash"
    if extra.get("study_uid"):
        return str(extra["study_uid"]), "study"
    for im in images:
        if im.study_uid:
            return im.study_uid, "study"
    for im in images:
        if im.sha256:
            return im.sha256, "image"
    return sample.id, "sample"


def _clean(text: str, names: list[str], *, scrub_direct: bool, dates: str, shift: int) -> str:
    """Replace direct identifiers (when ``scrub_direct``) and shift / scrub dates, per the recipe."""
    out = text
    for span in reversed(find_phi(text, names=names)):
        piece = text[span.start : span.end]
        if span.kind == "date":
            if dates == "shift":
                rep = shift_date_text(piece, shift) or "[DATE]"
            elif dates == "scrub":
                rep = "[DATE]"
            else:
                continue
        elif span.kind in DIRECT_KINDS and scrub_direct:
            rep = f"[{span.kind.upper()}]"
        else:
            continue
        out = out[: span.start] + rep + out[span.end :]
    return out


def _clean_sample(data: dict[str, Any], names: list[str], *, scrub_direct: bool, dates: str, shift: int) -> None:
    def fix(t: str) -> str:
        return _clean(t, names, scrub_direct=scrub_direct, dates=dates, shift=shift)

    if data.get("text") is not None:
        data["text"] = fix(data["text"])
    for m in data.get("messages") or []:
        if isinstance(m["content"], str):
            m["content"] = fix(m["content"])
        else:
            for p in m["content"]:
                if p.get("text"):
                    p["text"] = fix(p["text"])
    meta = data.get("meta") or {}
    if isinstance(meta.get("answer"), str):
        meta["answer"] = fix(meta["answer"])


def analyse_sample(sample: Sample, index: int, recipe: Recipe, salt: str) -> dict[str, Any]:
    """Score one sample and prepare its output version; returns the record the shard file stores."""
    images = [
        analyse_image(Path(ref.path), ref.kind, [Path(f) for f in ref.files] if ref.files else None)
        for ref in sample.images
    ]
    ctx = SampleContext(sample, images, allowed_licences=recipe.gates.allowed_licences)
    scores: dict[str, dict[str, Any]] = {}
    flags: dict[str, str] = {}
    for spec in recipe.scorers:
        dim = SCORERS[spec.name][0]
        sc = run_scorer(spec.name, ctx, spec.params)
        scores[spec.name] = {"dimension": dim, "score": round(sc.score, 4), "reason": sc.reason, "weight": spec.weight}
        for gate, reason in sc.flags.items():
            flags.setdefault(gate, reason)
    dims: dict[str, float] = {}
    for dim in DIMENSIONS:
        items = [(s["score"], s["weight"]) for s in scores.values() if s["dimension"] == dim]
        wsum = sum(w for _, w in items)
        if items and wsum > 0:
            dims[dim] = round(sum(s * w for s, w in items) / wsum, 4)

    # --- identity → hash, split, per-patient date shift
    identity, id_kind = _identity(sample, images)
    phash = identity if id_kind == "patient_hash" else patient_hash(identity, salt)
    shift = date_shift_days(identity, salt, recipe.gates.date_shift_max_days)
    data = sample.model_dump(mode="json", exclude_none=True)
    meta = data.setdefault("meta", {})
    for key in PRIVATE_META:
        meta.pop(key, None)
    meta["patient_hash"] = phash
    if recipe.splits.enabled and not (recipe.splits.keep_existing and meta.get("split")):
        meta["split"] = assign_split(phash, recipe.splits.fractions)
    header_modality = ctx.header_modality
    if header_modality and not meta.get("modality"):
        meta["modality"] = header_modality
    for ref, im in zip(data.get("images", []), images):
        if im.width and im.height and not ref.get("width"):
            ref["width"], ref["height"] = im.width, im.height
        if im.sha256 and ref.get("kind") == "image":
            ref.setdefault("sha256", im.sha256)
        if im.frames and im.frames > 1 and not ref.get("frames"):
            ref["frames"] = im.frames

    # --- text clean-up (only what the recipe repairs instead of dropping)
    scrub_direct = "direct_identifiers" in flags and recipe.gates.direct_identifiers == "scrub"
    dates_mode = recipe.gates.dates if "dates" in flags else "keep"
    repaired = []
    if scrub_direct or dates_mode in ("shift", "scrub"):
        _clean_sample(data, ctx.person_names, scrub_direct=scrub_direct, dates=dates_mode, shift=shift)
        repaired = (["direct identifiers scrubbed"] if scrub_direct else []) + (
            [f"dates {'shifted' if dates_mode == 'shift' else 'scrubbed'}"] if dates_mode in ("shift", "scrub") else []
        )

    # --- token budget (on the cleaned sample, with sizes filled in)
    budget_info: dict[str, Any] = {}
    out_sample = Sample.model_validate(data)
    if recipe.budget.enabled:
        text_tok, vis_tok, new_max, problem = check_budget(out_sample, recipe.budget)
        budget_info = {"text_tokens": text_tok, "visual_tokens": vis_tok}
        if problem:
            flags["over_length"] = problem
        elif new_max is not None:
            for ref in data.get("images", []):
                ref["max_pixels"] = new_max
            budget_info["max_pixels"] = new_max
            repaired.append(f"over-long: max_pixels lowered to {new_max}")

    text_sha, minhash = text_fingerprint(ctx.all_text, recipe.dedup.minhash_perm)
    return {
        "index": index,
        "id": sample.id,
        "task": sample.task,
        "scores": scores,
        "dimensions": dims,
        "flags": flags,
        "repaired": repaired,
        "budget": budget_info,
        "images": [
            {
                "sha256": im.sha256,
                "phash": im.phash,
                "width": im.width,
                "height": im.height,
                "ok": im.ok,
                "burned_in": im.burned_in == "YES" or bool(im.burned_in_risk and im.burned_in != "NO"),
            }
            for im in images
        ],
        "text_sha": text_sha,
        "minhash": minhash,
        "sample": data,
    }
