"""The README shows the shipped spec as it is."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_the_shipped_spec_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## What a spec looks like") :]
    block = section[section.index("```yaml\n") + len("```yaml\n") :]
    block = block[: block.index("```")]
    assert block == (ROOT / "specs" / "shapes.saliency.yaml").read_text(encoding="utf-8")
