"""Pack planning without decoding, and the stateful sampler that walks the plans.

The planner only needs each sample's token length (text tokens from the formatter + visual tokens from
:class:`core.budget.PixelBudget`) and image count, so a whole epoch is planned in milliseconds before a
single image is decoded. Steps of :func:`plan_packs`:

1. samples longer than ``max_length`` are dropped and counted (never truncated: cutting through image
   tokens would desynchronise pixels and pads);
2. the rest are ordered by length, longest first, ties broken by a seeded shuffle (seed, epoch);
3. first-fit decreasing: each sample goes into the first pack with room for its tokens and, when
   ``max_images`` is set, for its images;
4. the packs are shuffled with the same (seed, epoch) generator, so the order is deterministic.

``packing=False`` gives one sample per pack (the padded baseline).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

Pack = tuple[int, ...]


def epoch_rng(seed: int, epoch: int, salt: str = "") -> random.Random:
    """A generator fixed by (seed, epoch, salt), independent of Python's hash seed."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class PackPlan:
    """One epoch's packs (tuples of sample indices), their token lengths, and what was dropped."""

    packs: list[Pack]
    lengths: list[int]
    max_length: int
    dropped: list[int] = field(default_factory=list)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    def efficiency(self, pad_to_multiple_of: int = 1) -> float:
        """Real tokens / tokens in the padded packs (each pack padded to ``max_length``, rounded up)."""
        if not self.packs:
            return 0.0
        width = -(-self.max_length // pad_to_multiple_of) * pad_to_multiple_of
        return self.real_tokens / (width * len(self.packs))

    def fingerprint(self) -> str:
        """A short hash of the plan (to check on resume that the data did not change)."""
        return hashlib.sha256(json.dumps([self.packs, self.max_length]).encode()).hexdigest()[:16]


def plan_packs(
    lengths: Sequence[int],
    images: Sequence[int],
    *,
    max_length: int,
    max_images: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    indices: Sequence[int] | None = None,
    packing: bool = True,
) -> PackPlan:
    """Plan one epoch's packs over ``indices`` (default: every sample), see the module docstring."""
    rng = epoch_rng(seed, epoch, "plan")
    order = list(range(len(lengths))) if indices is None else list(indices)
    dropped = [i for i in order if lengths[i] > max_length or (max_images is not None and images[i] > max_images)]
    keep = [i for i in order if not (lengths[i] > max_length or (max_images is not None and images[i] > max_images))]
    rng.shuffle(keep)
    if not packing:
        packs = [(i,) for i in keep]
        return PackPlan(packs, [lengths[i] for i in keep], max_length, dropped)
    keep.sort(key=lambda i: -lengths[i])  # stable: ties keep the seeded order
    smallest = min((lengths[i] for i in keep), default=0)
    bins: list[list[int]] = []
    room: list[int] = []
    pics: list[int] = []
    open_bins: list[int] = []  # bins that can still take the smallest sample, in creation order
    for i in keep:
        n, k = lengths[i], images[i]
        placed = -1
        for b in open_bins:
            if room[b] >= n and (max_images is None or pics[b] + k <= max_images):
                placed = b
                break
        if placed < 0:
            bins.append([])
            room.append(max_length)
            pics.append(0)
            placed = len(bins) - 1
            open_bins.append(placed)
        bins[placed].append(i)
        room[placed] -= n
        pics[placed] += k
        if room[placed] < smallest:  # full for every remaining sample
            open_bins.remove(placed)
    packs = [tuple(b) for b in bins]
    rng.shuffle(packs)
    return PackPlan(packs, [sum(lengths[i] for i in p) for p in packs], max_length, dropped)


class PackBatchSampler:
    """Yields batches of packs, epoch after epoch, from a deterministic plan per epoch.

    ``plan_epoch(epoch)`` returns that epoch's :class:`PackPlan`; the stream of packs is the
    concatenation of the epochs' packs, cut into batches of ``batch_size`` packs, and stops after
    ``total_batches``. The stream depends only on the seed and the data, so the position in it (batches
    consumed) is the whole resumable state; :meth:`state_dict` records it with the plan's fingerprint,
    which a resumed run checks before it trusts the position.
    """

    drop_last = True

    def __init__(self, plan_epoch: Callable[[int], PackPlan], *, batch_size: int, total_batches: int) -> None:
        self.plan_epoch = plan_epoch
        self.batch_size = batch_size
        self.total_batches = total_batches
        self.consumed = 0  # batches handed out by the last full pass (for state_dict)

    def __len__(self) -> int:
        return self.total_batches

    def set_epoch(self, epoch: int) -> None:  # the Trainer's epochs are not ours: our stream is fixed
        return None

    def packs(self) -> Iterator[tuple[int, Pack]]:
        epoch = 0
        while True:
            plan = self.plan_epoch(epoch)
            if not plan.packs:
                raise ValueError(f"epoch {epoch}: no pack could be planned (every sample was dropped?)")
            for p in plan.packs:
                yield epoch, p
            epoch += 1

    def __iter__(self) -> Iterator[list[Pack]]:
        batch: list[Pack] = []
        emitted = 0
        if self.total_batches <= 0:
            return
        for _epoch, p in self.packs():
            batch.append(p)
            if len(batch) == self.batch_size:
                yield batch
                emitted += 1
                self.consumed = emitted
                batch = []
                if emitted >= self.total_batches:
                    return

    def position(self, batches: int) -> dict[str, Any]:
        """Where batch number ``batches`` starts: epoch and pack index within it."""
        target = batches * self.batch_size
        epoch, seen = 0, 0
        while True:
            n = len(self.plan_epoch(epoch).packs)
            if seen + n > target:
                return {"epoch": epoch, "pack_in_epoch": target - seen}
            seen += n
            epoch += 1

    def state_dict(self, batches_consumed: int) -> dict[str, Any]:
        return {
            "batches_consumed": batches_consumed,
            "batch_size": self.batch_size,
            "total_batches": self.total_batches,
            "first_plan": self.plan_epoch(0).fingerprint(),
            **self.position(batches_consumed),
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` when a saved state does not belong to this data/plan."""
        if state.get("first_plan") != self.plan_epoch(0).fingerprint() or state.get("batch_size") != self.batch_size:
            raise ValueError("the checkpoint's packed-data state does not match this stage's data or batch size")


def batches_per_epoch(plan: PackPlan, batch_size: int) -> int:
    return len(plan.packs) // batch_size
