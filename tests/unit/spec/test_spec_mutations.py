"""Mutated copies of the shipped specs either load or give one positioned line per problem.

The mutations are those a person makes by hand: a key renamed (a typo, another key's name), a
value replaced by one of another type (a number, a string, a list, a mapping, null, a long or
odd path), a block deleted or duplicated, and the YAML itself broken (a character inserted or
deleted, a line dropped or re-indented). Whatever the spec, :func:`load_spec` raises nothing but
:class:`SpecError`, whose every line reads ``path:line:col: message``.

A few hundred examples run in the suite; ``pytest -m slow`` runs 10,000 too (about three minutes,
always the same 10,000: a fixed seed), except where the ``CI`` environment variable is set, where
the few hundred stand for them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_saliency.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = [ROOT / "specs" / "shapes.saliency.yaml", *sorted((ROOT / "examples").glob("*.saliency.yaml"))]
LINE = re.compile(r"^[^\n]+:\d+:\d+: [^\n]+$")
KEYS = [
    "version",
    "model",
    "data",
    "checks",
    "gtc",
    "iou",
    "mean",
    "p10",
    "methods",
    "factory",
    "weights",
    "npz",
    "fill",
]
ODD_PATHS = ["a\x00b.pt", "x" * 5000 + ".pt", "/", "..", "", " ", "\t", "../" * 300 + "w.pt", "dir/"]
Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every place in a loaded YAML tree: mapping keys and list items, depth first."""
    found: list[Path_] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _parent(tree: Any, path: Path_) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    return tree


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(ODD_PATHS),
    st.sampled_from([">= 0.5", "<= x", "0.3", "mean", "Saliency", "zeros", "patch:0"]),
    st.lists(st.integers(-2, 9), max_size=3),
    st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3), max_size=2),
)


@st.composite
def tree_mutation(draw: st.DrawFn, tree: dict[str, Any]) -> str:
    """The spec after one to three edits of its tree, written back as YAML."""
    import copy

    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, 3))):
        places = _paths(tree)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent, last = _parent(tree, path), path[-1]
        action = draw(st.sampled_from(["rename", "replace", "delete", "duplicate"]))
        if action == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8)))
            parent[new] = parent.pop(last)
        elif action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.insert(int(last), copy.deepcopy(parent[last]))
        else:
            parent[f"{last}_copy" if draw(st.booleans()) else last] = copy.deepcopy(parent[last])
    return yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str:
    """The spec's text with one edit that may break its YAML."""
    lines = text.splitlines(keepends=True)
    action = draw(st.sampled_from(["insert", "delete", "drop-line", "indent", "dedent"]))
    if action in ("insert", "delete"):
        at = draw(st.integers(0, len(text) - 1))
        if action == "delete":
            return text[:at] + text[at + 1 :]
        return (
            text[:at]
            + draw(st.sampled_from([":", "-", "{", "}", "[", "]", "'", '"', "\t", " ", "&", "*", "!", "#", "\x00"]))
            + text[at:]
        )
    line = draw(st.integers(0, len(lines) - 1))
    if action == "drop-line":
        del lines[line]
    elif action == "indent":
        lines[line] = "  " + lines[line]
    else:
        lines[line] = lines[line][2:] if lines[line].startswith("  ") else lines[line]
    return "".join(lines)


@st.composite
def mutated_spec(draw: st.DrawFn) -> tuple[int, str]:
    """``(index into SHIPPED, mutated text)``."""
    index = draw(st.integers(0, len(SHIPPED) - 1))
    text = SHIPPED[index].read_text(encoding="utf-8")
    if draw(st.booleans()):
        return index, draw(tree_mutation(yaml.safe_load(text)))
    return index, draw(text_mutation(text))


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the repository (``specs/``, ``examples/`` with the shipped data
    linked in), so that a mutated spec's paths resolve as the original's do."""
    root = tmp_path_factory.mktemp("layout")
    (root / "specs").mkdir()
    (root / "examples").mkdir()
    (root / "examples" / "shapes").symlink_to(ROOT / "examples" / "shapes", target_is_directory=True)
    return root


def check_loads_or_reports(layout: Path, index: int, text: str) -> None:
    original = SHIPPED[index]
    path = layout / original.parent.name / "mutated.saliency.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_spec(path)
    except SpecError as error:
        assert error.problems, text
        for line in str(error).split("\n"):
            assert LINE.match(line), f"not one positioned line: {line!r}\n--- spec ---\n{text}"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(case=mutated_spec())
def test_a_mutated_spec_loads_or_gives_positioned_lines(layout: Path, case: tuple[int, str]) -> None:
    check_loads_or_reports(layout, *case)


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("CI")), reason="CI runs the few hundred examples of the test above")
@settings(
    max_examples=10_000,
    derandomize=True,  # the same 10,000 specs on every run
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated_spec())
def test_ten_thousand_mutated_specs_load_or_give_positioned_lines(layout: Path, case: tuple[int, str]) -> None:
    check_loads_or_reports(layout, *case)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a\x00b.pt", "model.weights: a path cannot hold a NUL character: remove it"),
        ("x" * 5000 + ".pt", "model.weights: unusable path xxxxxxxxxxxxxxxxxxxxxxxx…: File name too long"),
    ],
    ids=["nul-byte", "too-long"],
)
def test_unusable_paths_are_one_line(layout: Path, path: str, message: str) -> None:
    tree = yaml.safe_load(SHIPPED[0].read_text(encoding="utf-8"))
    tree["model"]["weights"] = path
    spec = layout / "specs" / "paths.saliency.yaml"
    text = yaml.safe_dump(tree, sort_keys=False)
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    assert len(raised.value.problems) == 1, str(raised.value)
    (problem,) = raised.value.problems
    assert problem.message == message
    lines = text.splitlines()
    line = next(number for number, content in enumerate(lines, start=1) if content.startswith("  weights:"))
    assert (problem.line, problem.column) == (line, len("  weights: ") + 1)


@pytest.mark.parametrize("path", ["a\nb.pt", "weights\r\n.pt", "tab\there.pt", "escape\x1b[31m.pt"])
def test_a_path_with_control_characters_is_one_line_with_them_escaped(layout: Path, path: str) -> None:
    tree = yaml.safe_load(SHIPPED[0].read_text(encoding="utf-8"))
    tree["model"]["weights"] = path
    spec = layout / "specs" / "controls.saliency.yaml"
    spec.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    (line,) = str(raised.value).split("\n")
    assert LINE.match(line) and repr(path)[1:-1] in line, line
