"""Make PyPI's torchvision importable beside the CPU build of torch.

PyPI's torchvision wheel is built against CUDA torch; beside ``torch==2.13.0+cpu`` its compiled ops do
not load, and two *unconditional* fake registrations in ``torchvision/_meta_registrations.py``
(``torchvision::nms`` and ``torchvision::qnms``) then fail at import with
``operator torchvision::nms does not exist``. Every other registration in that file is guarded by
``torchvision.extension._has_ops()``; this script adds the same guard to those two.

It checks the exact text it replaces and fails loudly if upstream changed, so a new torchvision
release is noticed instead of patched blindly. Idempotent: an already-patched file is left alone.

Usage: python scripts/patch_torchvision.py [--check]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARK = "# infimed: guarded by scripts/patch_torchvision.py"
TARGETS = ("nms", "qnms")


def _original(op: str) -> str:
    return f'@torch.library.register_fake("torchvision::{op}")\ndef meta_{op}(dets, scores, iou_threshold):\n'


def _patched(op: str) -> str:
    # A decorator that registers only when the compiled ops exist, like register_meta above it.
    return (
        f"{MARK}\n"
        f'@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() else (lambda fn: fn))\n'
        f"def meta_{op}(dets, scores, iou_threshold):\n"
    )


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        print("patch_torchvision: torchvision is not installed; nothing to do")
        return 0
    path = Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
    text = path.read_text()
    if all(_patched(op) in text for op in TARGETS):
        print(f"patch_torchvision: {path} already patched")
        return 0
    missing = [op for op in TARGETS if text.count(_original(op)) != 1]
    if missing or "torchvision.extension._has_ops()" not in text:
        print(
            f"patch_torchvision: ERROR: {path} does not contain the expected registrations for {missing or TARGETS};\n"
            "  upstream torchvision changed. Check whether the nms/qnms fake registrations are still\n"
            "  unguarded and update scripts/patch_torchvision.py before installing.",
            file=sys.stderr,
        )
        return 1
    if check_only:
        print(f"patch_torchvision: {path} needs the patch")
        return 1
    for op in TARGETS:
        text = text.replace(_original(op), _patched(op))
    path.write_text(text)
    print(f"patch_torchvision: patched {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
