"""Curation: five-dimension quality assessment of medical image-text data, with reports.

Public API: :func:`load_recipe`, :func:`curate`, :class:`InputSpec`, :func:`read_input`.
"""

from __future__ import annotations

from curation.pipeline import CurationError, CurationResult, InputSpec, curate
from curation.readers import ReaderError, ReaderIssue, read_input
from curation.recipe import Recipe, RecipeError, load_recipe, parse_recipe

__all__ = [
    "CurationError",
    "CurationResult",
    "InputSpec",
    "ReaderError",
    "ReaderIssue",
    "Recipe",
    "RecipeError",
    "curate",
    "load_recipe",
    "parse_recipe",
    "read_input",
]
