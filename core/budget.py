"""Pixel budget: the resize and visual-token arithmetic every package reuses.

A Qwen2-VL-family vision encoder cuts an image into ``patch_size``² patches and merges
``merge_size``² neighbouring patches into one visual token, so image sides must be multiples of
``factor = patch_size * merge_size`` and the pixel count must stay within ``[min_pixels, max_pixels]``.
:meth:`PixelBudget.resized` gives transformers' ``smart_resize`` result whenever that result honours
the budget (tested against it on many sizes), and otherwise the size the image processor settles on,
so a rendered image is never resized again by the processor: ``resized`` is idempotent and its
output is a fixed point of ``smart_resize``. The gateway, curation, the pack planner and the training
loader therefore agree on sizes and token counts without decoding an image twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# Qwen2-VL / Qwen2.5-VL processor defaults (preprocessor_config.json of the released models).
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
MAX_ASPECT_RATIO = 200


class BudgetError(ValueError):
    """A pixel budget or its configuration file is invalid; the message names the file or value."""


@dataclass(frozen=True)
class PixelBudget:
    """Min/max pixels plus the encoder's patch geometry.

    ``patch_size`` × ``merge_size`` is the side granularity (``factor``); ``temporal_patch_size`` is the
    number of frames the encoder folds into one temporal patch (a still image is repeated to fill it).
    """

    min_pixels: int
    max_pixels: int
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2

    def __post_init__(self) -> None:
        for name in ("min_pixels", "max_pixels", "patch_size", "merge_size", "temporal_patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BudgetError(f"PixelBudget.{name} must be a positive integer, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise BudgetError(f"PixelBudget: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if self.max_pixels < self.factor**2:
            raise BudgetError(f"PixelBudget: max_pixels {self.max_pixels} is below one merged patch ({self.factor}²)")
        cell = self.factor**2
        if self.max_pixels // cell < -(-self.min_pixels // cell):
            raise BudgetError(
                f"PixelBudget: no image size fits [{self.min_pixels}, {self.max_pixels}] pixels with sides that are"
                f" multiples of {self.factor}: widen the range to include a multiple of {cell}"
            )

    @property
    def factor(self) -> int:
        """Side granularity in pixels: ``patch_size * merge_size``."""
        return self.patch_size * self.merge_size

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after the aspect-preserving resize to this budget.

        Both sides become multiples of ``factor`` and the area lands in ``[min_pixels, max_pixels]``.
        This is transformers' Qwen2-VL ``smart_resize`` whenever its result honours the budget (the
        usual case). Its per-side rounding can miss the budget when ``min_pixels`` is close to
        ``max_pixels`` (150×150 at min = max = 3136 gives 28×28, 784 pixels), and the processor then
        resizes the rendered image a second time (to 56×56). Here the second step is folded in:
        ``smart_resize`` is repeated until it settles (3 rounds at most), and if it never settles on
        a size within the budget, the in-budget size closest in aspect ratio is chosen. So
        ``resized(*resized(w, h)) == resized(w, h)`` and the processor leaves a rendered image as it is.
        Raises :class:`BudgetError` for non-positive sides or an aspect ratio above 200.
        """
        if width < 1 or height < 1:
            raise BudgetError(f"image size must be positive, got {width}x{height}")
        if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
            raise BudgetError(f"aspect ratio of {width}x{height} is above {MAX_ASPECT_RATIO}")
        w, h = width, height
        for _ in range(3):
            w, h = self._smart_resize(w, h)
            if self.min_pixels <= w * h <= self.max_pixels:
                return w, h
        return self._closest_in_budget(width, height)

    def _smart_resize(self, width: int, height: int) -> tuple[int, int]:
        """transformers' ``smart_resize`` (Qwen2-VL image processor), line for line, in (width, height) order."""
        f = self.factor
        h_bar = round(height / f) * f
        w_bar = round(width / f) * f
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(f, math.floor(height / beta / f) * f)
            w_bar = max(f, math.floor(width / beta / f) * f)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / f) * f
            w_bar = math.ceil(width * beta / f) * f
        return w_bar, h_bar

    def _closest_in_budget(self, width: int, height: int) -> tuple[int, int]:
        """The in-budget size (sides multiples of ``factor``) closest in aspect ratio, then in area.

        Only reached for budgets whose range is narrow compared with one ``factor``² cell; a valid
        size always exists (checked when the budget is made).
        """
        cell = self.factor**2
        lo_cells, hi_cells = -(-self.min_pixels // cell), self.max_pixels // cell
        aspect = math.log(width / height)
        target_cells = min(max(width * height / cell, lo_cells), hi_cells)
        best: tuple[float, float, int, int] | None = None
        for a in range(1, hi_cells + 1):  # a: width in factors, b: height in factors
            b_lo, b_hi = max(1, -(-lo_cells // a)), hi_cells // a
            if b_lo > b_hi:
                continue
            guess = a * height / width
            for b in {min(max(math.floor(guess), b_lo), b_hi), min(max(math.ceil(guess), b_lo), b_hi)}:
                key = (abs(math.log(a / b) - aspect), abs(a * b - target_cells), a, b)
                if best is None or key < best:
                    best = key
        assert best is not None  # __post_init__ guarantees a cell count in [lo_cells, hi_cells]
        return best[2] * self.factor, best[3] * self.factor

    def grid_thw(self, width: int, height: int) -> tuple[int, int, int]:
        """``(t, h, w)`` patch grid of the resized still image (``t`` is 1: one temporal patch)."""
        w, h = self.resized(width, height)
        return 1, h // self.patch_size, w // self.patch_size

    def visual_tokens(self, width: int, height: int) -> int:
        """Number of visual tokens the language model sees for one image of this size."""
        t, h, w = self.grid_thw(width, height)
        return t * h * w // (self.merge_size**2)

    def with_limits(self, *, min_pixels: int | None = None, max_pixels: int | None = None) -> PixelBudget:
        """A copy with other pixel limits (e.g. a low-resolution training stage)."""
        return replace(
            self,
            min_pixels=self.min_pixels if min_pixels is None else min_pixels,
            max_pixels=self.max_pixels if max_pixels is None else max_pixels,
        )

    @classmethod
    def from_preprocessor_config(cls, path_or_dir: str | Path) -> PixelBudget:
        """Read a model's ``preprocessor_config.json`` (a file or the model directory).

        Understands ``min_pixels``/``max_pixels`` (older transformers) and
        ``size.shortest_edge``/``size.longest_edge`` (newer transformers, where those keys hold pixel
        counts), plus ``patch_size``, ``merge_size`` and ``temporal_patch_size``. Raises
        :class:`BudgetError` naming the file when it is absent or invalid.
        """
        path = Path(path_or_dir)
        if path.is_dir():
            path = path / "preprocessor_config.json"
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as e:
            raise BudgetError(f"{path}: cannot read preprocessor config: {e.strerror or e}") from e
        try:
            cfg: Any = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BudgetError(f"{path}: not valid JSON: {e.msg} (line {e.lineno})") from e
        if not isinstance(cfg, dict):
            raise BudgetError(f"{path}: expected a JSON object")
        size = cfg.get("size") if isinstance(cfg.get("size"), dict) else {}
        min_px = cfg.get("min_pixels", size.get("shortest_edge", size.get("min_pixels")))
        max_px = cfg.get("max_pixels", size.get("longest_edge", size.get("max_pixels")))
        if min_px is None or max_px is None:
            raise BudgetError(
                f"{path}: no pixel limits (expected 'min_pixels'/'max_pixels' or 'size.shortest_edge'/'size.longest_edge')"
            )
        values: dict[str, Any] = {"min_pixels": min_px, "max_pixels": max_px}
        for key in ("patch_size", "merge_size", "temporal_patch_size"):
            if key in cfg and cfg[key] is not None:
                values[key] = cfg[key]
        for key, value in values.items():
            if isinstance(value, float) and value.is_integer():
                values[key] = int(value)
            if not isinstance(values[key], int) or isinstance(values[key], bool):
                raise BudgetError(f"{path}: '{key}' must be an integer, got {value!r}")
        try:
            return cls(**values)
        except BudgetError as e:
            raise BudgetError(f"{path}: {e}") from e
