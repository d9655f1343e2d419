"""The README shows the shipped spec as it is, and its check examples are valid checks."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pytest_saliency.spec.schema import CheckSpec

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_the_shipped_spec_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What a spec looks like") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    block = block[: block.index("```")]
    assert block == (ROOT / "specs" / "shapes.saliency.yaml").read_text(encoding="utf-8")


def test_every_check_example_in_the_readme_is_a_valid_check() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    checks = [item for block in examples if isinstance(block, list) for item in block if isinstance(item, dict) and "id" in item]
    assert {"on-the-shape", "concentrated", "stable", "insertion"} <= {check["id"] for check in checks}
    for check in checks:
        CheckSpec.model_validate(check)
