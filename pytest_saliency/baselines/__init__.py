"""Drift snapshots: the stored reference a ``drift`` check with ``against: {snapshot: NAME}``
compares with, and the options that write them (``--saliency-update-baselines``).

- :mod:`.settings`: where snapshots live, the update modes, the CI refusal, the update command;
- :mod:`.store`: the files (tensors + JSON metadata), written atomically, and their hashes;
- :mod:`.drift`: what a drift check stores, when it rewrites it, the obtained summary of a mismatch;
- :mod:`.summary`: the end-of-run lines.

This ``__init__`` imports nothing heavy: the plugin loads :mod:`.settings` and :mod:`.summary`
without torch; :mod:`.store` and :mod:`.drift` need torch and are imported by the drift check.
"""

from __future__ import annotations

from .settings import BaselineSettings, settings_from_config, update_command
from .summary import summary_lines

__all__ = ["BaselineSettings", "settings_from_config", "summary_lines", "update_command"]
