"""The README shows the shipped spec as it is, and the check examples of the spec reference
(``docs/spec.md``) are valid checks."""

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


def test_every_check_example_in_the_spec_reference_is_a_valid_check() -> None:
    reference = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    examples = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", reference, re.DOTALL)]
    checks = [
        item
        for block in examples
        if isinstance(block, list)
        for item in block
        if isinstance(item, dict) and "id" in item
    ]
    assert {"on-the-shape", "concentrated", "stable", "insertion"} <= {check["id"] for check in checks}
    for check in checks:
        CheckSpec.model_validate(check)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings (outside code blocks): lower case, punctuation
    dropped, spaces to hyphens."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    headings = re.findall(r"^#{1,6} (.+)$", prose, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_of_the_readme_and_docs_resolves() -> None:
    """The README and docs/ link into each other: every such link names a file that exists and,
    with a ``#fragment``, one of its headings."""
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        prose = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and fragment not in heading_anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_import_in_the_docs_python_examples_resolves() -> None:
    """``from pytest_saliency... import a, b`` lines of the README's and docs' Python blocks name
    modules and attributes that exist."""
    import importlib

    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            for module, names in re.findall(r"^from (pytest_saliency[\w.]*) import ([\w, ]+)", block, re.MULTILINE):
                imported = importlib.import_module(module)
                missing += [
                    f"{page.name}: {module}.{n.strip()}" for n in names.split(",") if not hasattr(imported, n.strip())
                ]
    assert not missing, "\n".join(missing)
