"""The training engine both recipes (``pretrain``, ``finetune``) share.

Public API: :class:`~training.stage.Stage` / :class:`~training.stage.RunConfig` (configuration),
:class:`~training.data.StageDataset` (manifest dataset, planned lengths), :func:`~training.packing.plan_packs`
and :class:`~training.packing.PackBatchSampler` (packing), :class:`~training.collator.PackCollator` and
:class:`~training.collator.PackBoundaries` (packed batches), :func:`~training.trainability.apply_trainability`,
:func:`~training.trainer.run_stages` (one HF Trainer per stage, exact resume) and
:func:`~training.memory.estimate_memory` (``--dry-run``). Import submodules directly: this package
imports nothing heavy at import time.
"""
