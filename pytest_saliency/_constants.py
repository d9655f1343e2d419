"""Names shared across the package, in a module that imports nothing (the plugin, the spec
language and the reports read them without loading torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

SPEC_SUFFIXES: tuple[str, ...] = (".saliency.yaml", ".saliency.yml")
"""What a spec file's name ends with; pytest collects such files wherever it collects tests."""

PatternName = Literal[
    "human_aligned",
    "sufficient_subset",
    "sufficient_context",
    "context_dependent",
    "confuser",
    "insufficient_subset",
    "distractor",
    "context_confusion",
]
"""A Shared Interest behaviour pattern, as the spec language names it."""

PATTERN_NAMES: tuple[str, ...] = get_args(PatternName)
"""The eight Shared Interest behaviour patterns, in the order of the authors' table
(docs/methods.md#behaviour-patterns): the correct-prediction four, then the incorrect four."""


def spec_stem(path: Path) -> str:
    """``shapes`` for ``shapes.saliency.yaml``: a spec's name when it gives none."""
    for suffix in SPEC_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


STEP_SUMMARY = "GITHUB_STEP_SUMMARY"
"""The environment variable GitHub Actions sets to the job summary's file: the Markdown summary
(``--saliency-markdown``) is appended to it too."""

CacheMode = Literal["off", "read", "write", "readwrite"]
"""``--saliency-cache``: what a run does with the persistent result cache."""

CACHE_MODES: tuple[str, ...] = get_args(CacheMode)

DEFAULT_CACHE_MAX_MB = 2048
"""The default bound of the result cache's directory (``saliency_cache_max_mb``), in MiB."""
