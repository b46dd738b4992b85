"""The five-dimension scorers (deterministic, CPU) and the registry the recipe names them from.

Dimensions: ``visual``, ``text``, ``consistency``, ``medical``, ``safety``. Each scorer returns a
:class:`Score` (a value in [0, 1], a reason, and the hard gates it trips). The judge scorer
(:mod:`curation.scorers.judge`) runs separately, in the parent process, over HTTP.
"""

from __future__ import annotations

from curation.scorers import consistency, medical, safety, text, visual  # noqa: F401  (registration)
from curation.scorers.base import SCORERS, SampleContext, Score, run_scorer, scorer

__all__ = ["SCORERS", "SampleContext", "Score", "optional_problems", "run_scorer", "scorer"]


def optional_problems(specs: list) -> list[str]:
    """What keeps the optional scorers in ``specs`` (recipe ``scorers``) from running here, checked before a run.

    ``safety.burned_in`` with ``ocr: true`` needs the ``ocr`` extra (``rapidocr``); ``consistency.clip`` needs a
    local model folder (``config.json``; nothing is ever downloaded) and ``transformers`` + ``torch``.
    Without this check each sample would fail on its own, deep in a worker. The other scorers need nothing
    optional: a recipe that leaves these two out (the default) runs anywhere.
    """
    import importlib.util
    from pathlib import Path

    problems = []
    for i, spec in enumerate(specs):
        where = f"scorers.{i} ({spec.name})"
        if spec.name == "safety.burned_in" and spec.params.get("ocr"):
            if not any(importlib.util.find_spec(m) for m in ("rapidocr", "rapidocr_onnxruntime")):
                problems.append(
                    f"{where}: ocr: true needs the ocr extra (pip install 'infimed[ocr]': rapidocr and onnxruntime, "
                    "models in the wheel); or remove ocr: true"
                )
        elif spec.name == "consistency.clip":
            model = spec.params.get("model")
            if not model or not (Path(model) / "config.json").is_file():
                problems.append(
                    f"{where}: model must be a local folder holding a CLIP-style model (config.json, weights, "
                    f"processor files); {model!r} is not one (nothing is downloaded); or remove this scorer"
                )
            missing = [m for m in ("transformers", "torch") if importlib.util.find_spec(m) is None]
            if missing:
                problems.append(f"{where}: needs {' and '.join(missing)} (the train or cpu extra)")
    return problems
