"""The manifest dataset of one stage: its data mix, planned lengths, and lazily rendered samples.

Nothing is decoded to plan: a sample's planned length is its formatted text length (one pad per image)
plus ``visual_tokens - 1`` per image from :class:`core.budget.PixelBudget` at the stage's limits
(the smaller of the stage's and the image's own ``max_pixels``), with image sizes taken from the
manifest (``width``/``height``) or read from the file header. Pixels are produced only in
:meth:`StageDataset.encode`, through :func:`core.render.render` (the same path serving uses) and the
model's own image processor.

The dataset is indexed by *packs* (tuples of sample indices) so that a DataLoader driven by
:class:`training.packing.PackBatchSampler` fetches whole packs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.budget import PixelBudget
from core.manifest import ImageRef, Sample, read_manifest
from training.collator import EncodedSample
from training.format import ChatFormatter, FormattedText, expand_images
from training.packing import Pack, PackPlan, epoch_rng, plan_packs
from training.stage import DataSource, Stage

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A manifest or image of the stage's data cannot be used; the message names the file/sample."""


@dataclass(frozen=True)
class Entry:
    sample: Sample
    base_dir: Path
    source: int  # index into the stage's data list


def load_sources(sources: list[DataSource]) -> list[Entry]:
    """Read every manifest of a data mix, applying each source's task / split filter."""
    entries: list[Entry] = []
    for k, src in enumerate(sources):
        path = Path(src.manifest)
        if not path.is_file():
            raise DataError(f"{path}: manifest not found")
        n0 = len(entries)
        for s in read_manifest(path):
            if src.tasks is not None and s.task not in src.tasks:
                continue
            if src.split is not None and s.meta.split not in (src.split, None):
                continue
            entries.append(Entry(s, path.parent, k))
        if len(entries) == n0:
            raise DataError(f"{path}: no sample left after the task/split filter")
    return entries


def images_per_ref(ref: ImageRef) -> int:
    """How many images one slot renders to (frames list / ``uniform:N``; otherwise one)."""
    frames = ref.render.frames if ref.render else None
    if isinstance(frames, list):
        return len(frames)
    if isinstance(frames, str) and frames.startswith("uniform:"):
        n = int(frames.split(":", 1)[1])
        total = len(ref.files) if ref.kind == "series" and ref.files else ref.frames
        return min(n, total) if total else n
    return 1


@functools.lru_cache(maxsize=65536)
def _header_size(path: str, kind: str) -> tuple[int, int]:
    if kind == "image":
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return int(ds.Columns), int(ds.Rows)


def budget_from_processor(processor: Any) -> PixelBudget:
    """The pixel budget a loaded processor applies (its ``size`` limits and patch geometry)."""
    ip = processor.image_processor
    size = ip.size if isinstance(ip.size, dict) else dict(ip.size)
    min_px = size.get("shortest_edge") or getattr(ip, "min_pixels", None)
    max_px = size.get("longest_edge") or getattr(ip, "max_pixels", None)
    if not min_px or not max_px:
        raise DataError("the model's image processor has no min/max pixel limits")
    return PixelBudget(
        min_pixels=int(min_px), max_pixels=int(max_px), patch_size=int(ip.patch_size),
        merge_size=int(ip.merge_size), temporal_patch_size=int(ip.temporal_patch_size),
    )  # fmt: skip


class StageDataset(torch.utils.data.Dataset):
    """A stage's samples: planned lengths per epoch mix, and packs encoded on demand."""

    def __init__(
        self, stage: Stage, processor: Any, *, base_budget: PixelBudget, seed: int = 0, caption_prompt: str = ""
    ) -> None:
        self.stage = stage
        self.processor = processor
        self.seed = seed
        self.formatter = ChatFormatter(processor.tokenizer, caption_prompt=caption_prompt)
        self.budget = base_budget.with_limits(
            min_pixels=stage.min_pixels or base_budget.min_pixels, max_pixels=stage.max_pixels or base_budget.max_pixels
        )
        if self.budget.min_pixels > self.budget.max_pixels:
            self.budget = self.budget.with_limits(min_pixels=self.budget.max_pixels)
        self.entries = load_sources(stage.data)
        self._text: dict[int, FormattedText] = {}
        self._lengths: list[int] | None = None
        self._images: list[int] | None = None
        self._plans: dict[int, PackPlan] = {}

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ planning

    def sample_budget(self, ref: ImageRef) -> PixelBudget:
        if ref.max_pixels is None or ref.max_pixels >= self.budget.max_pixels:
            return self.budget
        cap = max(ref.max_pixels, self.budget.factor**2)
        return self.budget.with_limits(min_pixels=min(self.budget.min_pixels, cap), max_pixels=cap)

    def image_size(self, entry: Entry, ref: ImageRef) -> tuple[int, int]:
        if ref.width and ref.height:
            return ref.width, ref.height
        first = ref.files[0] if ref.kind == "series" and ref.files else ref.path
        path = entry.sample.resolve(entry.base_dir, ImageRef(path=first))
        try:
            return _header_size(str(path), "image" if ref.kind == "image" else "dicom")
        except Exception as e:
            raise DataError(
                f"{path}: cannot read the image size ({type(e).__name__}) for sample {entry.sample.id}"
            ) from e

    def text(self, i: int) -> FormattedText:
        if i not in self._text:
            s = self.entries[i].sample
            self._text[i] = self.formatter.format(s, [images_per_ref(r) for r in s.images])
        return self._text[i]

    def visual_tokens(self, i: int) -> list[int]:
        e = self.entries[i]
        out: list[int] = []
        for ref in e.sample.images:
            w, h = self.image_size(e, ref)
            b = self.sample_budget(ref)
            # Two resizes happen: render() to the budget, then the image processor's own smart_resize
            # of that result. The second is not always a no-op (a max-pixels shrink can land below
            # min_pixels and be scaled back up), so plan with both.
            out.extend([b.visual_tokens(*b.resized(w, h))] * images_per_ref(ref))
        return out

    def length(self, i: int) -> int:
        """Planned token count of sample ``i`` (text with one pad per image + visual tokens − 1 each)."""
        vt = self.visual_tokens(i)
        return len(self.text(i).input_ids) + sum(vt) - len(vt)

    def lengths(self) -> tuple[list[int], list[int]]:
        if self._lengths is None:
            self._lengths = [self.length(i) for i in range(len(self.entries))]
            self._images = [len(self.text(i).image_positions) for i in range(len(self.entries))]
        assert self._images is not None
        return self._lengths, self._images

    def epoch_indices(self, epoch: int) -> list[int]:
        """This epoch's mix: each source contributes ``weight`` × its samples (seeded subset / repeats)."""
        rng = epoch_rng(self.seed, epoch, "mix")
        out: list[int] = []
        for k, src in enumerate(self.stage.data):
            idx = [i for i, e in enumerate(self.entries) if e.source == k]
            whole, frac = divmod(src.weight, 1.0)
            out.extend(idx * int(whole))
            if frac > 1e-9:
                out.extend(sorted(rng.sample(idx, round(frac * len(idx)))))
        return out

    def plan(self, epoch: int) -> PackPlan:
        """The packs of one epoch (cached)."""
        if epoch not in self._plans:
            lengths, images = self.lengths()
            plan = plan_packs(
                lengths, images, max_length=self.stage.max_length, max_images=self.stage.max_images_per_pack,
                seed=self.seed, epoch=epoch, indices=self.epoch_indices(epoch), packing=self.stage.packing,
            )  # fmt: skip
            if plan.dropped and epoch == 0:
                log.warning(
                    "stage %s: %d sample(s) longer than %d tokens dropped (not truncated)",
                    self.stage.name,
                    len(plan.dropped),
                    self.stage.max_length,
                )
            self._plans[epoch] = plan
        return self._plans[epoch]

    # ------------------------------------------------------------------ encoding

    def render_images(self, entry: Entry, ref: ImageRef) -> list[Any]:
        from core.render import render

        src: Any
        if ref.kind == "series" and ref.files:
            src = [str(entry.sample.resolve(entry.base_dir, ImageRef(path=f))) for f in ref.files]
        else:
            src = str(entry.sample.resolve(entry.base_dir, ref))
        policy = self.stage.data[entry.source].render_policy
        images, _record = render(src, ref.render, self.sample_budget(ref), policy=policy)
        return images

    def encode(self, i: int) -> EncodedSample:
        """Render, process and tokenise sample ``i``; its length equals :meth:`length` (checked)."""
        e = self.entries[i]
        text = self.text(i)
        pixel_values = grid = None
        visual: list[int] = []
        if e.sample.images:
            pv, grids = [], []
            for ref in e.sample.images:
                images = self.render_images(e, ref)
                if len(images) != images_per_ref(ref):
                    raise DataError(
                        f"sample {e.sample.id}: {ref.path} rendered {len(images)} images, planned {images_per_ref(ref)}"
                    )
                b = self.sample_budget(ref)
                out = self.processor.image_processor(
                    images=images,
                    size={"shortest_edge": b.min_pixels, "longest_edge": b.max_pixels},
                    return_tensors="pt",
                )
                pv.append(out["pixel_values"])
                grids.append(out["image_grid_thw"])
            pixel_values, grid = torch.cat(pv), torch.cat(grids)
            merge = self.budget.merge_size**2
            visual = [int(t * h * w) // merge for t, h, w in grid.tolist()]
        ids, labels = expand_images(text, visual)
        if len(ids) != self.length(i):
            raise DataError(f"sample {e.sample.id}: {len(ids)} tokens after encoding, {self.length(i)} planned")
        return EncodedSample(ids, labels, pixel_values, grid, e.sample.id)

    def __getitem__(self, pack: Pack | int) -> list[EncodedSample]:
        if isinstance(pack, int):
            return [self.encode(pack)]
        return [self.encode(i) for i in pack]
