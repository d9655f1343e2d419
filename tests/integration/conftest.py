"""Fixtures for the plugin's end-to-end tests, which run pytest on generated projects (pytester).

Each test gets a fresh directory (``pytester.path``) holding:

- ``tinymodel.py``: models whose gradient saliency is known exactly, so every measured value is
  known in advance and pass/fail is deterministic (see ``TINYMODEL``);
- ``data.npz``: six 16x16 RGB images, 2 per class, with object masks and a ``decoy`` mask;
- ``specs/*.saliency.yaml``: written by the ``write_spec`` fixture from :func:`spec_yaml`.

Most tests run pytest in-process (``runpytest_inprocess``): torch, captum and the plugin's
engine are imported once in this process (``_heavy_modules``), before pytester snapshots
``sys.modules``, so they survive each run and are not imported again. A spec run then takes about
0.1 s in-process against 3-8 s in a subprocess (which imports torch each time). Tests that
inspect what a fresh process imports, that compare numbers across processes, or that start
xdist workers use ``runpytest_subprocess``.
"""

from __future__ import annotations

import io
import linecache
import re
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Enable pytester. ``pytest_plugins = ["pytester"]`` is only allowed in a top-level
    conftest, and this one is not loaded at startup by a plain ``pytest`` run (``tests/integration``
    does not match the ``test*`` anchors pytest searches); registering the plugin here works
    either way, and does nothing when a top-level conftest already enabled it."""
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


# --- the model -------------------------------------------------------------------------------

TINYMODEL = '''\
"""Tiny models whose gradient saliency is known exactly.

Images: channel 0 is the object mask, channel 1 the decoy mask, channel 2 the class code
``k / num_classes`` everywhere. ``Focus`` computes

    logits[c] = weight[c] * (1 + [c == k + shift]) * sum over looked-at channels of x**2 / 2

reading the class code detached, so the gradient of every logit is a positive multiple of the
looked-at masks and nothing else: Saliency's map IS the object (looks_at=object), the decoy
(decoy) or both (both). Predictions are correct when shift == 0 and all wrong otherwise.
"""
import torch
import torch.nn.functional as F
from torch import nn

LOOKS_AT = {"object": (0,), "decoy": (1,), "both": (0, 1)}


class Focus(nn.Module):
    def __init__(self, num_classes=3, looks_at="object", shift=0):
        super().__init__()
        self.num_classes = num_classes
        self.channels = LOOKS_AT[looks_at]
        self.shift = shift
        self.weight = nn.Parameter(torch.ones(num_classes))

    def forward(self, x):
        energy = sum(0.5 * (x[:, c] ** 2).flatten(1).sum(1) for c in self.channels)
        code = x[:, 2].detach().flatten(1).mean(1)
        k = ((code * self.num_classes).round().long() + self.shift) % self.num_classes
        gate = 1 + F.one_hot(k, self.num_classes).to(x.dtype)
        return energy[:, None] * gate * self.weight


def build(num_classes=3, looks_at="object", shift=0):
    return Focus(num_classes, looks_at, shift)


def broken(num_classes=3):
    raise RuntimeError("factory is broken on purpose")
'''

CLASSES = ("circle", "square", "triangle")
SAMPLES, SIZE, OBJECT, DECOY = 6, 16, 4, 3


def make_arrays(mask_size: int = SIZE) -> dict[str, np.ndarray]:
    """Sample i: a 4x4 object at (2+i, 1+2i), a 3x3 decoy at (12, 12), label i mod 3.

    With ``looks_at=both`` the saliency region is object + decoy (16 + 9 pixels): IoU = SC =
    16/25 = 0.64 and GTC = 1 exactly; with ``object`` every score is 1, with ``decoy`` 0.
    """
    images = np.zeros((SAMPLES, 3, SIZE, SIZE), np.float32)
    masks = np.zeros((SAMPLES, SIZE, SIZE), bool)
    decoy = np.zeros((SAMPLES, SIZE, SIZE), bool)
    labels = np.arange(SAMPLES) % len(CLASSES)
    for i in range(SAMPLES):
        masks[i, 2 + i : 2 + i + OBJECT, 1 + 2 * i : 1 + 2 * i + OBJECT] = True
        decoy[i, 12 : 12 + DECOY, 12 : 12 + DECOY] = True
        images[i, 0], images[i, 1], images[i, 2] = masks[i], decoy[i], labels[i] / len(CLASSES)
    if mask_size != SIZE:
        masks = masks[:, :mask_size, :mask_size]
    return {"images": images, "masks": masks, "labels": labels, "decoy": decoy}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.fixture(scope="session")
def data_npz() -> bytes:
    """``data.npz`` contents, generated once per session."""
    return npz_bytes(make_arrays())


# --- specs -----------------------------------------------------------------------------------

GRAD = "grad: {method: Saliency, params: {abs: true}}"
COV = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
"""


GRADIENT_METHODS = """\
grad: {method: Saliency, params: {abs: true}}
ig: {method: IntegratedGradients, params: {n_steps: 4}}
"""
COVERAGE_AND_FIDELITY = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0"}
    gtc: {mean: ">= 0"}
- id: faithful
  fidelity: {steps: 4, gap: "> -1"}
"""
"""What a model source must get through, whatever the model (the model-source and zoo tests):
two gradient methods, a Shared Interest and a fidelity check with thresholds any finite value meets."""


def spec_yaml(
    *,
    looks_at: str = "object",
    model: str | None = None,
    data: str | None = None,
    attributions: str = GRAD,
    checks: str = COV,
) -> str:
    """A spec for the tiny model and ``data.npz`` (from ``specs/``). ``model``, ``data``,
    ``attributions`` and ``checks`` replace the body of those blocks (indentation is added)."""
    model = model or f"factory: tinymodel:build\nkwargs: {{looks_at: {looks_at}}}"
    data = data or "npz: ../data.npz\nclasses: [circle, square, triangle]"
    return (
        "version: 1\n"
        f"model:\n{textwrap.indent(textwrap.dedent(model), '  ')}\n"
        f"data:\n{textwrap.indent(textwrap.dedent(data), '  ')}\n"
        f"attributions:\n{textwrap.indent(textwrap.dedent(attributions), '  ')}\n"
        f"checks:\n{textwrap.indent(textwrap.dedent(checks), '  ')}"
    )


def position(text: str, needle: str) -> str:
    """``line:col`` (1-based) of the first occurrence of ``needle`` in ``text``."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{column}"


@pytest.fixture
def project(pytester: pytest.Pytester, data_npz: bytes, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """``pytester.path`` with ``tinymodel.py``, ``data.npz`` and an empty ``specs/``."""
    # Warnings located in a spec show its line, read through linecache under the relative name
    # "specs/x.saliency.yaml"; in-process runs share this process's cache, so start it afresh.
    linecache.clearcache()
    # In-process runs load the plugin again from the already imported package; pytest warns
    # that it cannot rewrite its asserts (under the `pytest` script, not `python -m pytest`).
    monkeypatch.setenv("PYTEST_ADDOPTS", "-W ignore::pytest.PytestAssertRewriteWarning")
    pytester.makepyfile(tinymodel=TINYMODEL)
    (pytester.path / "data.npz").write_bytes(data_npz)
    (pytester.path / "specs").mkdir()
    return pytester


WriteSpec = Callable[..., Path]


@pytest.fixture
def write_spec(project: pytest.Pytester) -> WriteSpec:
    """``write_spec(name="x", text=None, **spec_yaml_arguments)`` -> ``specs/<name>.saliency.yaml``."""

    def write(name: str = "x", text: str | None = None, **arguments: str) -> Path:
        path = project.path / "specs" / f"{name}.saliency.yaml"
        path.write_text(text if text is not None else spec_yaml(**arguments), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session", autouse=True)
def _heavy_modules() -> None:
    """Import what running a spec imports, so in-process runs reuse it (see the module doc)."""
    import captum.attr  # noqa: F401
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    import torch  # noqa: F401

    # Contextual decomposition imports it on first use; it pulls in torch._dynamo, whose operator
    # registrations fail when a run's module snapshot removes them and a later run imports them again.
    import torchvision.models.resnet  # noqa: F401

    # data.transform dispatches on tv_tensors' classes: a run that re-imported transforms.v2 while
    # the torchvision package kept its old tv_tensors would pass every image through unresized.
    import torchvision.transforms.v2  # noqa: F401
    import torchvision.tv_tensors  # noqa: F401

    import pytest_saliency.checks.patterns  # noqa: F401
    import pytest_saliency.checks.shared_interest  # noqa: F401
    import pytest_saliency.engine  # noqa: F401
    import pytest_saliency.report.terminal  # noqa: F401
    import pytest_saliency.spec  # noqa: F401

    try:  # its pytest plugin imports it in every run; assertion-rewritten, that is ~2 s a run
        import hypothesis  # noqa: F401
    except ImportError:
        pass


# --- reading output --------------------------------------------------------------------------


def summary_lines(output: str) -> list[str]:
    """The lines of the "saliency summary" section (empty when there is none)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"=+ saliency summary =+", line)), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if re.fullmatch(r"=+( .* =+)?", lines[i])), len(lines))
    return [line.rstrip() for line in lines[start + 1 : end]]


def summary(output: str) -> pytest.LineMatcher:
    """A matcher over the summary section only. Its layout is the report's business, so tests
    match rows loosely, e.g. ``"*cov*grad*iou.mean*0.6400*>= 0.9*failed*"``."""
    return pytest.LineMatcher(summary_lines(output))


def summary_values(output: str) -> list[str]:
    """Every measured value in the summary section, in order (``0.6400`` ...)."""
    return re.findall(r"(?<![\d.])-?\d+\.\d{4}\b", "\n".join(summary_lines(output)))


TEST_ID = re.compile(r"^(?P<check>[^\[\s]+)(?:\[(?P<method>[^\]]*)\])?$")
BOX = str.maketrans(dict.fromkeys("│┃║|", " "))


def summary_rows(output: str) -> list[dict[str, str]]:
    """The summary table(s) as rows ``{spec, check, method, measured, value, interval, threshold,
    status, ok}``: one per measurement (``interval``: the half-width after ``±``, or ""); ``status`` is the item's, ``ok`` the measurement's own status when
    the table shows one apart from the item's.

    The layout belongs to ``report/terminal.py`` and changes, so this reads it loosely: a header
    line has the words value, threshold and status; a spec's name is the first word of the title
    above its header (or a ``spec`` column); cells go to the header column they overlap; a check
    column holding test ids (``cov[grad-circle]``) is split into check and method; an item row
    followed by indented measurement rows (a ``check / measured`` column) is understood; a line
    without a status continues the wrapped cells of the row above.
    """
    rows: list[dict[str, str]] = []
    header: list[tuple[str, int, int]] | None = None
    title = spec = check_id = item_status = ""
    for raw in summary_lines(output):
        line = raw.translate(BOX)
        if not re.search(r"\w", line):
            continue
        tokens = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+(?: \S+)*", line)]
        names = [token[0] for token in tokens]
        if {"value", "threshold", "status"} <= set(names):
            header, spec = tokens, title.split()[0] if title else ""
            continue
        if header is None or len(tokens) == 1 and tokens[0][1] <= 1:
            title, header = line.strip(), None  # the next table's title
            continue
        cells = {name: "" for name, _, _ in header}
        for text, start, end in tokens:  # the column the text overlaps, else the nearest
            name = min(header, key=lambda h: (max(h[1], start) >= min(h[2], end), abs(h[1] - start)))[0]
            cells[name] = f"{cells[name]} {text}".strip()
        combined = next((name for name in cells if "/" in name), None)
        if not cells["status"]:  # a wrapped cell continues here
            for name, text in cells.items():
                key = {combined: "measured"}.get(name, name)
                if text and rows and key in rows[-1]:
                    rows[-1][key] = f"{rows[-1][key]} {text}".strip()
            continue
        if combined is not None:
            if tokens[0][1] <= header[0][1]:  # an item row: test id and status
                check_id, item_status = cells[combined], cells["status"]
                continue
            measured, status, ok = cells[combined], item_status, cells["status"]
        else:
            check_id = cells.get("check") or check_id
            if cells.get("method"):
                check_id = f"{check_id}[{cells['method']}]"
            measured, status, ok = cells.get("measured", ""), cells["status"], cells["status"]
        match = TEST_ID.match(check_id)
        value, _, interval = cells["value"].partition("±")  # "0.3301 ± 0.028": value and interval
        rows.append(
            {
                "spec": (cells["spec"] or (rows[-1]["spec"] if rows else "")) if "spec" in cells else spec,
                "check": match["check"] if match else check_id,
                "method": (match["method"] or "") if match else "",
                "measured": measured,
                "value": value.strip(),
                "interval": interval.strip(),
                "threshold": cells["threshold"],
                "status": status,
                "ok": ok,
            }
        )
    return rows


def literal(text: str) -> str:
    """``text`` as an fnmatch pattern that matches only itself (``[grad]`` is a character class)."""
    return re.sub(r"([*?[])", r"[\1]", text)


def assert_no_traceback(output: str) -> None:
    """A check failure or spec error reads as plain lines: no Python traceback, no torch frames."""
    for marker in ("Traceback", "site-packages/torch", "site-packages/pydantic", "pytest_saliency/", "raise "):
        assert marker not in output, f"{marker!r} in the output:\n{output}"


@pytest.fixture(scope="session")
def helpers() -> types.SimpleNamespace:
    """This module's helpers for the test modules (a conftest is not importable by name)."""
    return types.SimpleNamespace(
        CLASSES=CLASSES,
        COV=COV,
        COVERAGE_AND_FIDELITY=COVERAGE_AND_FIDELITY,
        GRADIENT_METHODS=GRADIENT_METHODS,
        GRAD=GRAD,
        literal=literal,
        assert_no_traceback=assert_no_traceback,
        make_arrays=make_arrays,
        npz_bytes=npz_bytes,
        position=position,
        spec_yaml=spec_yaml,
        summary=summary,
        summary_lines=summary_lines,
        summary_rows=summary_rows,
        summary_values=summary_values,
    )
