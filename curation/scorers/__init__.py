"""The five-dimension scorers (deterministic, CPU) and the registry the recipe names them from.

Dimensions: ``visual``, ``text``, ``consistency``, ``medical``, ``safety``. Each scorer returns a
:class:`Score` (a value in [0, 1], a reason, and the hard gates it trips). The judge scorer
(:mod:`curation.scorers.judge`) runs separately, in the parent process, over HTTP.
"""

from __future__ import annotations

from curation.scorers import consistency, medical, safety, text, visual  # noqa: F401  (registration)
from curation.scorers.base import SCORERS, SampleContext, Score, run_scorer, scorer

__all__ = ["SCORERS", "SampleContext", "Score", "run_scorer", "scorer"]
