"""Smoke-test sources a recipe may name instead of real paths: ``tiny://PRESET`` and ``phantoms://N``.

``tiny://tiny`` builds the tiny Qwen2.5-VL-architecture model (:mod:`core.tiny`) and
``phantoms://N?seed=S&size=PX`` writes ``N`` synthetic DICOM phantoms with captions and VQA
(:mod:`core.phantoms`); both land in ``$INFIMED_CACHE`` (default ``~/.cache/infimed``), are built once
and are deterministic, so every process of a multi-GPU launch resolves them to the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from training.stage import ConfigError, RunConfig


def cache_dir() -> Path:
    """Where ``tiny://`` and ``phantoms://`` are built (``$INFIMED_CACHE``, default ``~/.cache/infimed``)."""
    return Path(os.environ.get("INFIMED_CACHE", Path.home() / ".cache" / "infimed"))


def resolve_sources(cfg: RunConfig) -> RunConfig:
    """Replace ``tiny://`` models and ``phantoms://`` manifests (also in ``init_from``) by real paths."""
    if cfg.model.startswith("tiny://"):
        cfg.model = str(tiny_model(cfg.model))
    for stage in cfg.stages:
        if stage.init_from.startswith("tiny://"):
            stage.init_from = str(tiny_model(stage.init_from))
        for src in stage.data:
            if src.manifest.startswith("phantoms://"):
                src.manifest = str(phantoms_manifest(src.manifest))
    return cfg


def tiny_model(uri: str) -> Path:
    from core.tiny import ensure_tiny_model

    preset = uri.removeprefix("tiny://").strip("/") or "tiny"
    return ensure_tiny_model(cache_dir() / "tiny", preset=preset)


def phantoms_manifest(uri: str) -> Path:
    """``phantoms://N?seed=S&size=PX`` → the manifest of those phantoms (written once, then reused)."""
    from core.phantoms import generate_phantoms

    u = urlparse(uri)
    raw_n = u.netloc or u.path.strip("/") or "32"
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    try:
        n, seed, size = int(raw_n), int(q.pop("seed", 0)), int(q.pop("size", 128))
    except ValueError as e:
        raise ConfigError(f"{uri}: phantoms://N?seed=S&size=PX takes integers ({e})") from e
    if q:
        raise ConfigError(f"{uri}: unknown phantoms option(s) {sorted(q)} (seed, size)")
    out = cache_dir() / "phantoms" / f"n{n}-seed{seed}-size{size}"
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        generate_phantoms(out, n=n, seed=seed, size=size)
    return manifest
