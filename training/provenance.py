"""What a run was made from: manifest hashes, the code version, library versions.

:func:`run_provenance` is written by :func:`training.trainer.run_stages` into ``<run>/provenance.json``
before the first stage trains, so an export (and its model card) can say exactly which data and which
code produced a model, even when the manifests have changed since.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

from training.stage import RunConfig

REPO = Path(__file__).resolve().parent.parent


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def code_version(repo: Path = REPO) -> dict[str, Any]:
    """``{"git_sha", "dirty", "package_version"}``; ``git_sha`` is None outside a git checkout."""
    import importlib.metadata as md

    try:
        version = md.version("infimed")
    except md.PackageNotFoundError:
        version = None
    out: dict[str, Any] = {"git_sha": None, "dirty": None, "package_version": version}
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        )
        if sha.returncode == 0:
            out["git_sha"] = sha.stdout.strip()
            st = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo, capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            out["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def manifest_hashes(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """``{manifest path: {"sha256", "samples", "stages"}}`` over every stage's data mix."""
    out: dict[str, dict[str, Any]] = {}
    for stage in cfg.stages:
        for src in stage.data:
            entry = out.get(src.manifest)
            if entry is None:
                path = Path(src.manifest)
                lines = sum(1 for line in path.open(encoding="utf-8") if line.strip()) if path.is_file() else None
                entry = out[src.manifest] = {
                    "sha256": file_sha256(path) if path.is_file() else None,
                    "samples": lines,
                    "stages": [],
                }
            if stage.name not in entry["stages"]:
                entry["stages"].append(stage.name)
    return out


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def run_provenance(cfg: RunConfig) -> dict[str, Any]:
    """Everything :mod:`finetune.card` needs to say what a run was made from."""
    return {
        "kind": cfg.kind,
        "base_model": cfg.model,
        "manifests": manifest_hashes(cfg),
        "code": code_version(),
        "libraries": library_versions(),
    }
