"""Synthetic chest phantoms: CT-, X-ray- and MR-like DICOM with known ground truth and QA pairs.

Each phantom is a body outline with two lungs, a heart and a spine, and 0–3 round nodules placed
in the lungs; the ground truth (nodule count, side, positions, modality) is known exactly, so
question–answer pairs derived from it have certain answers. Images are valid DICOM with plausible
values: CT in HU through RescaleIntercept −1024 with a lung window, X-ray (CR) as a projection,
some in MONOCHROME1, MR as unsigned signal. Sides follow the radiological convention: the
patient's left lung is on the image's right.

Everything is deterministic for ``seed`` (each phantom draws from its own generator
``default_rng([seed, index])``). Generator parameters (lesion radius and contrast, image size,
noise, position of lesions relative to the model's patch grid) are exposed because a small model's
ability to see a lesion depends on them.

    generate_phantoms("out/", n=1000, seed=0)   # out/images/*.dcm + out/manifest.jsonl + out/truth.jsonl
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.manifest import ImageRef, Message, Meta, RenderSpec, Sample, write_manifest

log = logging.getLogger(__name__)

Modality = Literal["CT", "CR", "MR"]
GridAlign = Literal["random", "center", "edge"]
MODALITY_WORDS = {"CT": "CT", "CR": "X-ray", "MR": "MRI"}
_SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "CR": "1.2.840.10008.5.1.4.1.1.1", "MR": "1.2.840.10008.5.1.4.1.1.4"}
_NUMBERS = ["no", "one", "two", "three", "four", "five"]


@dataclass(frozen=True)
class PhantomParams:
    """Generator parameters (sizes and radii in pixels of the ``size``×``size`` image).

    ``lesion_contrast`` scales the nodule from invisible (0) to solid tissue (1);
    ``noise`` is the noise standard deviation relative to the soft-tissue / lung difference;
    ``grid_align`` places nodule centres anywhere (``random``), at the centres of the
    ``patch``-pixel merged patches (``center``) or on patch corners (``edge``).
    """

    size: int = 128
    modalities: tuple[str, ...] = ("CT", "CR", "MR")
    lesion_radius: tuple[float, float] = (3.0, 7.0)
    lesion_contrast: float = 1.0
    noise: float = 0.03
    max_nodules: int = 3
    p_no_nodule: float = 0.35
    monochrome1_fraction: float = 0.5
    grid_align: GridAlign = "random"
    patch: int = 28

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 2048:
            raise ValueError(f"size must be in 32..2048, got {self.size}")
        bad = set(self.modalities) - set(_SOP_CLASS)
        if bad or not self.modalities:
            raise ValueError(f"modalities must be among CT, CR, MR, got {self.modalities}")
        lo, hi = self.lesion_radius
        if not 0.5 <= lo <= hi <= self.size / 8:
            raise ValueError(f"lesion_radius must satisfy 0.5 <= min <= max <= size/8, got {self.lesion_radius}")
        if not 0.0 <= self.lesion_contrast <= 2.0 or self.noise < 0 or not 0 <= self.max_nodules <= 5:
            raise ValueError("lesion_contrast must be in [0, 2], noise ≥ 0, max_nodules in 0..5")


@dataclass
class Nodule:
    x: float
    y: float
    radius: float
    side: Literal["left", "right"]  # the patient's side


@dataclass
class PhantomTruth:
    """The ground truth of one phantom (everything the QA pairs are derived from)."""

    id: str
    modality: str
    size: int
    monochrome1: bool
    nodules: list[Nodule] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.nodules)

    @property
    def sides(self) -> list[str]:
        return sorted({n.side for n in self.nodules})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(count=self.count, sides=self.sides)
        return d


# --------------------------------------------------------------------------- geometry and pixels


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _layout(rng: np.random.Generator, s: int) -> dict[str, tuple[float, float, float, float]]:
    j = lambda a: float(rng.uniform(-a, a))
    c = s / 2
    return {
        "body": (c + j(0.01 * s), c + j(0.01 * s), s * (0.44 + j(0.02)), s * (0.33 + j(0.02))),
        "lung_r": (c - s * (0.19 + j(0.01)), c - s * 0.02, s * (0.12 + j(0.01)), s * (0.22 + j(0.015))),  # image left
        "lung_l": (c + s * (0.19 + j(0.01)), c - s * 0.02, s * (0.12 + j(0.01)), s * (0.22 + j(0.015))),  # image right
        "heart": (c + s * 0.03, c + s * 0.05, s * 0.09, s * 0.08),
        "spine": (c, c + s * 0.22, s * 0.05, s * 0.045),
    }


def _place_nodules(
    rng: np.random.Generator, p: PhantomParams, lay: dict[str, tuple[float, float, float, float]]
) -> list[Nodule]:
    if p.max_nodules == 0 or rng.random() < p.p_no_nodule:
        return []
    count = int(rng.integers(1, p.max_nodules + 1))
    nodules: list[Nodule] = []
    for _ in range(200):
        if len(nodules) == count:
            break
        side = "right" if rng.random() < 0.5 else "left"
        cx, cy, rx, ry = lay["lung_r" if side == "right" else "lung_l"]
        r = float(rng.uniform(*p.lesion_radius))
        x, y = float(rng.uniform(cx - rx, cx + rx)), float(rng.uniform(cy - ry, cy + ry))
        if p.grid_align != "random":
            off = p.patch / 2 if p.grid_align == "center" else 0.0
            x = float(np.floor(x / p.patch) * p.patch + off)
            y = float(np.floor(y / p.patch) * p.patch + off)
        inside = ((x - cx) / max(rx - r - 1, 1)) ** 2 + ((y - cy) / max(ry - r - 1, 1)) ** 2 <= 1.0
        apart = all((x - n.x) ** 2 + (y - n.y) ** 2 > (r + n.radius + 2) ** 2 for n in nodules)
        if inside and apart:
            nodules.append(Nodule(x=round(x, 2), y=round(y, 2), radius=round(r, 2), side=side))
    return nodules


# Tissue values: CT in HU; CR as attenuation 0..1; MR as signal 0..1.
_TISSUE = {
    "CT": {"air": -1000.0, "body": 40.0, "fat": -100.0, "lung": -850.0, "heart": 45.0, "bone": 700.0, "nodule": 30.0},
    "CR": {"air": 0.02, "body": 0.55, "fat": 0.5, "lung": 0.18, "heart": 0.62, "bone": 0.85, "nodule": 0.45},
    "MR": {"air": 0.01, "body": 0.45, "fat": 0.8, "lung": 0.05, "heart": 0.5, "bone": 0.25, "nodule": 0.6},
}


def _image(
    modality: str,
    s: int,
    lay: dict[str, Any],
    nodules: list[Nodule],
    p: PhantomParams,
    rng: np.random.Generator,
    *,
    dz: float = 0.0,
) -> np.ndarray:
    t = _TISSUE[modality]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    img = np.full((s, s), t["air"], dtype=np.float32)
    bx, by, brx, bry = lay["body"]
    img[_ellipse(xx, yy, bx, by, brx, bry)] = t["fat"]
    img[_ellipse(xx, yy, bx, by, brx * 0.93, bry * 0.9)] = t["body"]
    for organ in ("lung_r", "lung_l"):
        img[_ellipse(xx, yy, *lay[organ])] = t["lung"]
    img[_ellipse(xx, yy, *lay["heart"])] = t["heart"]
    img[_ellipse(xx, yy, *lay["spine"])] = t["bone"]
    value = t["lung"] + p.lesion_contrast * (t["nodule"] - t["lung"])
    for n in nodules:
        r2 = n.radius**2 - dz**2
        if r2 > 0:
            img[(xx - n.x) ** 2 + (yy - n.y) ** 2 <= r2] = value
    if p.noise > 0:
        scale = abs(t["body"] - t["lung"]) * p.noise
        img += rng.standard_normal((s, s), dtype=np.float32) * scale
    return img


def _stored(modality: str, img: np.ndarray, monochrome1: bool) -> tuple[np.ndarray, dict[str, Any]]:
    if modality == "CT":
        stored = np.clip(np.rint(img + 1024.0), 0, 4095).astype(np.uint16)
        return stored, {
            "RescaleIntercept": -1024,
            "RescaleSlope": 1,
            "RescaleType": "HU",
            "WindowCenter": -600,
            "WindowWidth": 1500,
            "BitsStored": 12,
        }
    if modality == "CR":
        att = np.clip(img, 0.0, 1.0)
        value = (1.0 - att) if monochrome1 else att  # MONOCHROME1: dense (white on display) = low value
        stored = np.rint(value * 4095.0).astype(np.uint16)
        return stored, {"WindowCenter": 2048, "WindowWidth": 4096, "BitsStored": 12}
    stored = np.clip(np.rint(img * 1000.0), 0, 4095).astype(np.uint16)
    return stored, {"WindowCenter": 450, "WindowWidth": 900, "BitsStored": 12}


def _dataset(
    truth: PhantomTruth,
    stored: np.ndarray,
    extra: dict[str, Any],
    uids: dict[str, str],
    *,
    position_z: float = 0.0,
    instance: int = 1,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[truth.modality]
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _SOP_CLASS[truth.modality]
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PatientName = f"Phantom^{truth.id}"
    ds.PatientID = truth.id
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.Modality = truth.modality
    ds.Manufacturer = "InfiMed phantom generator"
    ds.BodyPartExamined = "CHEST"
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if truth.modality == "CR":
        ds.ViewPosition = "PA"
        ds.ImagerPixelSpacing = [0.7, 0.7]
    else:
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.5
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-0.35 * truth.size, -0.35 * truth.size, position_z]
        ds.SliceLocation = position_z
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if truth.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = extra.pop("BitsStored")
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def _uids(seed: int, phantom_id: str) -> dict[str, str]:
    return {k: generate_uid(entropy_srcs=[str(seed), phantom_id, k]) for k in ("sop", "study", "series", "frame")}


# --------------------------------------------------------------------------- one phantom


def make_phantom(seed: int, index: int, params: PhantomParams | None = None) -> tuple[Dataset, PhantomTruth]:
    """Phantom ``index`` of ``seed``: its DICOM dataset and ground truth (pure function of the inputs)."""
    p = params or PhantomParams()
    rng = np.random.default_rng([seed, index])
    modality = p.modalities[int(rng.integers(len(p.modalities)))]
    monochrome1 = modality == "CR" and bool(rng.random() < p.monochrome1_fraction)
    lay = _layout(rng, p.size)
    nodules = _place_nodules(rng, p, lay)
    truth = PhantomTruth(
        id=f"ph-s{seed}-{index:05d}", modality=modality, size=p.size, monochrome1=monochrome1, nodules=nodules
    )
    img = _image(modality, p.size, lay, nodules, p, rng)
    stored, extra = _stored(modality, img, monochrome1)
    return _dataset(truth, stored, extra, _uids(seed, truth.id)), truth


def phantom_truth(seed: int, index: int, params: PhantomParams | None = None) -> PhantomTruth:
    """The ground truth of phantom ``index`` for ``seed`` and ``params`` (regenerated, deterministic)."""
    return make_phantom(seed, index, params)[1]


def read_truth(out_dir: str | Path) -> dict[str, PhantomTruth]:
    """Ground truth written by :func:`generate_phantoms` (``truth.jsonl``), by phantom id."""
    out: dict[str, PhantomTruth] = {}
    for line in (Path(out_dir) / "truth.jsonl").read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        nodules = [Nodule(**n) for n in d.pop("nodules")]
        d.pop("count", None)
        d.pop("sides", None)
        out[d["id"]] = PhantomTruth(nodules=nodules, **d)
    return out


# --------------------------------------------------------------------------- questions and captions


def split_of(phantom_id: str) -> str:
    """train / val / test (80/10/10) from a hash of the phantom id: stable across runs and seeds."""
    bucket = int(hashlib.sha256(phantom_id.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def _side_answer(truth: PhantomTruth) -> str:
    return truth.sides[0] if len(truth.sides) == 1 else "both"


QuestionSet = Literal["standard", "closed"]
QUESTION_SETS: tuple[str, ...] = ("standard", "closed")


def questions(
    truth: PhantomTruth, *, question_set: QuestionSet = "standard", max_nodules: int = 3
) -> list[tuple[str, str, str, str, list[str] | None]]:
    """(suffix, question, answer, question_type, options) pairs derived from the ground truth.

    ``standard``: closed modality (3 options), presence (yes/no), side (left/right/both; only with
    nodules); open modality and count (a number).
    ``closed`` (the end-to-end learning proof): every question closed, one per type — modality,
    presence, side (only with nodules) and count with the options ``0 … max_nodules`` — so that each
    type has a chance rate (its majority answer) to beat.
    """
    word = MODALITY_WORDS[truth.modality]
    side = (
        "side",
        "Which lung contains the nodules: left, right or both?",
        _side_answer(truth),
        "side",
        ["left", "right", "both"],
    )
    presence = (
        "pres",
        "Is there a nodule in the lungs? Answer yes or no.",
        "yes" if truth.count else "no",
        "presence",
        ["yes", "no"],
    )
    modality_closed = (
        "mod-c",
        "Which imaging modality is this: CT, X-ray or MRI?",
        word,
        "modality",
        ["CT", "X-ray", "MRI"],
    )
    if question_set == "closed":
        counts = [str(k) for k in range(max(max_nodules, truth.count) + 1)]
        qs = [
            modality_closed,
            presence,
            ("count", f"How many lung nodules are visible: {', '.join(counts)}?", str(truth.count), "count", counts),
        ]
        return qs + ([side] if truth.count else [])
    if question_set != "standard":
        raise ValueError(f"question_set must be one of {', '.join(QUESTION_SETS)}, got {question_set!r}")
    qs = [
        modality_closed,
        ("mod-o", "What imaging modality was used for this image?", word, "modality", None),
        presence,
        ("count", "How many lung nodules are visible? Answer with a number.", str(truth.count), "count", None),
    ]
    if truth.count:
        qs.append(side)
    return qs


def caption(truth: PhantomTruth, *, detailed: bool = False) -> str:
    """A one-sentence description of the ground truth.

    ``detailed`` is a compact caption in the words the ``closed`` questions answer with — modality, total
    nodule count and the count in each lung (the patient's sides), e.g. ``CT. 2 nodules: 1 right, 1 left.``
    — so that caption pretraining already ties every lung's pixels to those answers.
    """
    view = {"CT": "An axial CT slice", "CR": "A frontal chest X-ray", "MR": "An axial MRI slice"}[truth.modality]
    if detailed:
        right = sum(1 for n in truth.nodules if n.side == "right")
        return (
            f"{MODALITY_WORDS[truth.modality]}. {truth.count} nodule{'' if truth.count == 1 else 's'}: "
            f"{right} right, {truth.count - right} left."
        )
    if not truth.count:
        return f"{view} of a synthetic chest phantom with clear lungs and no nodules."
    n = _NUMBERS[truth.count] if truth.count < len(_NUMBERS) else str(truth.count)
    where = "in both lungs" if len(truth.sides) == 2 else f"in the {truth.sides[0]} lung"
    return f"{view} of a synthetic chest phantom with {n} nodule{'s' if truth.count > 1 else ''} {where}."


def samples_for(
    truth: PhantomTruth, image_path: str, *, question_set: QuestionSet = "standard", max_nodules: int = 3
) -> list[Sample]:
    """VQA samples (one per question of ``question_set``) and one caption sample for a phantom image."""
    ref = ImageRef(
        path=image_path,
        kind="dicom",
        width=truth.size,
        height=truth.size,
        frames=1,
        render=RenderSpec(window="lung") if truth.modality == "CT" else None,
    )
    base = {
        "modality": truth.modality,
        "body_part": "CHEST",
        "split": split_of(truth.id),
        "patient_hash": hashlib.sha256(truth.id.encode()).hexdigest()[:16],
        "source": "phantom",
        "licence": "CC0-1.0",
    }
    out: list[Sample] = []
    for suffix, q, a, qtype, options in questions(truth, question_set=question_set, max_nodules=max_nodules):
        out.append(
            Sample(
                id=f"{truth.id}-{suffix}",
                task="vqa",
                messages=[Message(role="user", content=f"<image>\n{q}"), Message(role="assistant", content=a)],
                images=[ref],
                meta=Meta(
                    question_type=qtype, answer_type="closed" if options else "open", answer=a, options=options, **base
                ),
            )
        )
    if question_set == "closed":
        out.append(_chat_sample(truth, ref, base, max_nodules=max_nodules))
    out.append(
        Sample(
            id=f"{truth.id}-cap",
            task="caption",
            text=f"<image>{caption(truth, detailed=question_set == 'closed')}",
            images=[ref],
            meta=Meta(**base),
        )
    )
    return out


def _chat_sample(truth: PhantomTruth, ref: ImageRef, base: dict[str, Any], *, max_nodules: int) -> Sample:
    """Every ``closed`` question of one image as one conversation, in a per-phantom seeded order.

    Training material: one image's visual tokens serve several answers (evaluation asks the single-question
    ``vqa`` samples; ``meta.question_type`` is ``"chat"`` so that loaders can tell them apart).
    """
    qs = questions(truth, question_set="closed", max_nodules=max_nodules)
    order = np.random.default_rng(int(hashlib.sha256(truth.id.encode()).hexdigest()[:8], 16)).permutation(len(qs))
    messages: list[Message] = []
    for k, i in enumerate(order):
        _, q, a, _, _ = qs[int(i)]
        messages += [
            Message(role="user", content=f"<image>\n{q}" if k == 0 else q),
            Message(role="assistant", content=a),
        ]
    return Sample(
        id=f"{truth.id}-chat", task="chat", messages=messages, images=[ref], meta=Meta(question_type="chat", **base)
    )


# --------------------------------------------------------------------------- writers


def generate_phantoms(
    out_dir: str | Path,
    *,
    n: int,
    seed: int,
    params: PhantomParams | None = None,
    question_set: QuestionSet = "standard",
    **kwargs: Any,
) -> Path:
    """Write ``n`` phantoms to ``out_dir/images/*.dcm`` with ``manifest.jsonl`` and ``truth.jsonl``.

    ``params`` or keyword arguments (the :class:`PhantomParams` fields) set the generator;
    ``question_set`` picks the questions (:func:`questions`). Returns the manifest path.
    """
    if question_set not in QUESTION_SETS:
        raise ValueError(f"question_set must be one of {', '.join(QUESTION_SETS)}, got {question_set!r}")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    p = params or PhantomParams(**kwargs)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    truths: list[str] = []
    for i in range(n):
        ds, truth = make_phantom(seed, i, p)
        rel = f"images/{truth.id}.dcm"
        ds.save_as(out / rel, enforce_file_format=True)
        samples.extend(samples_for(truth, rel, question_set=question_set, max_nodules=p.max_nodules))
        truths.append(json.dumps(truth.to_dict()))
    (out / "truth.jsonl").write_text("\n".join(truths) + "\n", encoding="utf-8")
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, samples)
    log.info("wrote %d phantoms (%d samples) to %s", n, len(samples), out)
    return manifest


def generate_series(
    out_dir: str | Path, *, slices: int, seed: int, size: int = 512, params: PhantomParams | None = None
) -> list[Path]:
    """A CT phantom series: ``slices`` files along z (2.5 mm apart) with spherical nodules.

    Files are named in a shuffled order so that readers must sort along the slice normal.
    Returns the paths sorted by true slice position (inferior → superior).
    """
    p = params or PhantomParams(size=size, modalities=("CT",), lesion_radius=(size / 40, size / 20))
    rng = np.random.default_rng([seed, 1_000_003])
    lay = _layout(rng, p.size)
    nodules = _place_nodules(rng, p, lay) or []
    centre_z = [float(rng.uniform(-slices * 0.3, slices * 0.3)) for _ in nodules]
    series_id = f"ph-series-s{seed}"
    base_uids = _uids(seed, series_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = np.random.default_rng([seed, 7]).permutation(slices)
    paths: list[Path] = []
    for k in range(slices):
        z = (k - slices / 2) * 2.5
        truth = PhantomTruth(id=series_id, modality="CT", size=p.size, monochrome1=False, nodules=nodules)
        dz_nodules = [
            Nodule(n.x, n.y, float(np.sqrt(max(n.radius**2 - ((k - slices / 2) - cz) ** 2, 0.0))), n.side)
            for n, cz in zip(nodules, centre_z)
        ]
        img = _image(
            "CT", p.size, lay, [n for n in dz_nodules if n.radius > 0], p, np.random.default_rng([seed, k, 11])
        )
        stored, extra = _stored("CT", img, False)
        uids = dict(base_uids, sop=generate_uid(entropy_srcs=[str(seed), series_id, str(k)]))
        ds = _dataset(truth, stored, extra, uids, position_z=z, instance=int(names[k]) + 1)
        path = out / f"slice-{int(names[k]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
