"""Hand-made results and a strict HTML parser, shared by the report tests (no model runs)."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from typing import Any

import pytest
import torch

from pytest_saliency.checks.outcome import measurement_key
from pytest_saliency.report import thumbnails

Image = pytest.importorskip("PIL.Image")


def decode(png: str) -> Any:
    picture = Image.open(io.BytesIO(base64.b64decode(png)))
    picture.load()
    return picture.convert("RGB")


# --- markup ------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Parses a page strictly enough for tests: every non-void element closed in order, and
    what the tests look at collected (elements with their attributes, and the text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.elements: list[tuple[str, dict[str, str], tuple[str, ...]]] = []  # tag, attributes, ancestors
        self.doctype = ""
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed: {self.stack}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, tuple(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.problems.append(f"end tag of void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())

    def find(self, tag: str, **attributes: str) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs, _ in self.elements
            if name == tag and all(attributes[k] in attrs.get(k.rstrip("_"), "").split() for k in attributes)
        ]

    def inside(self, tag: str, ancestor: str) -> list[dict[str, str]]:
        return [attrs for name, attrs, stack in self.elements if name == tag and ancestor in stack]


# --- hand-made results ------------------------------------------------------------------------


def png_of(colour: tuple[float, float, float], size: int = 8) -> str:
    return thumbnails.png_base64(torch.tensor(colour).expand(size, size, 3).clone())


def worst_rows(count: int, thumbnail: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "index": index,
            "label": "circle",
            "predicted": "square" if index % 2 else "circle",
            "iou": 0.1 * index,
            "gtc": None if index == 0 else 0.5,
            "sc": 0.25,
            "patterns": ["distractor"] if index % 2 else [],
            **({"thumbnail": png_of((0.9, 0.1, 0.1))} if thumbnail else {}),
        }
        for index in range(count)
    ]


def measurement(
    name: str, value: float | None, threshold: str, passed: bool, interval: float | None = None
) -> dict[str, Any]:
    """A measurement as results carry it: its label, and its key as the checks derive it."""
    return {
        "name": name,
        "key": measurement_key(name),
        "value": value,
        "threshold": threshold,
        "passed": passed,
        "interval": interval,
    }


def sample_results() -> list[dict[str, Any]]:
    """One of each: shared_interest (failing), patterns (passing), fidelity, drift, spec error."""
    fractions = [i / 10 for i in range(10)]
    base = {
        "spec": "shapes",
        "spec_path": "specs/shapes.saliency.yaml",
        "severity": "fail",
        "samples": 6,
        "undefined": 0,
    }
    return [
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::cov[grad]",
            "line": 20,
            "check": "cov",
            "kind": "shared_interest",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "failed",
            "passed": False,
            "undefined": 1,
            "measurements": [
                measurement("iou.mean", 0.64, ">= 0.9", False),
                measurement("gtc.mean", float("nan"), ">= 0.5", False),
            ],
            "details": ["worst samples by iou (of 6; 1 undefined):"],
            "per_sample": {"index": [0, 1, 2], "iou": [0.1, None, 0.3]},
            "worst": worst_rows(3),
            "worst_by": "iou",
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::pat[grad]",
            "line": 25,
            "check": "pat",
            "kind": "patterns",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "passed",
            "measurements": [measurement("fraction distractor", 0.0, "<= 0.05", True)],
            "details": [],
            "pattern_counts": {"human_aligned": 4, "distractor": 0, "confuser": 2},
            "pattern_fractions": {"human_aligned": 0.666667, "distractor": 0.0, "confuser": 0.333333},
            "worst": worst_rows(2),
            "worst_in": None,
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::faithful[ig]",
            "line": 30,
            "check": "faithful",
            "kind": "fidelity",
            "variant": "ig",
            "method": "ig",
            "class_index": None,
            "status": "warned",
            "severity": "warn",
            "measurements": [measurement("gap", 0.2, ">= 0.3", False, 0.05)],
            "curves": {
                "mif": [1 - f for f in fractions],
                "lif": [1.0 - 0.1 * f for f in fractions],
                "random": [1 - 0.5 * f for f in fractions],
            },
            "fractions": fractions,
        },
        {
            **base,
            "nodeid": "specs/shapes.saliency.yaml::drifted[grad]",
            "line": 40,
            "check": "drifted",
            "kind": "drift",
            "variant": "grad",
            "method": "grad",
            "class_index": None,
            "status": "passed",
            "measurements": [measurement("max |shift|", 0.01, "<= 0.05", True)],
            "against": "other weights",
            "drift": {
                "num_images": 6,
                "max_abs_shift": 0.01,
                "mean_abs_shift": 0.01,
                "clusters": [
                    {
                        "cluster": 0,
                        "count": 5,
                        "share_a": 0.3,
                        "share_b": 0.31,
                        "shift": 0.01,
                        "mean_share_a": 0.3,
                        "mean_share_b": 0.31,
                        "representatives": [[0, 1]],
                        "crops": [png_of((0.1, 0.1, 0.9))],
                    },
                    {
                        "cluster": 1,
                        "count": 0,
                        "share_a": 0.0,
                        "share_b": 0.0,
                        "shift": 0.0,
                        "mean_share_a": 0.0,
                        "mean_share_b": 0.0,
                        "representatives": [],
                    },
                    {
                        "cluster": 2,
                        "count": 3,
                        "share_a": 0.2,
                        "share_b": 0.19,
                        "shift": -0.01,
                        "mean_share_a": 0.2,
                        "mean_share_b": 0.19,
                        "representatives": [[1, 2], [2, 3]],
                    },
                ],
                "segments_kept": 8,
                "undefined_a": 0,
                "undefined_b": 0,
                "inertia": None,
                "rank_correlation": {"mean": 0.9, "median": 0.9, "min": 0.8, "undefined": 0},
                "settings": {"segments": {"patch": 4}, "keep": 2, "clusters": 3, "seed": 0},
            },
            "regions": {"decoy": {"segments": 2, "cluster": 0, "share_a": 0.1, "share_b": 0.1}},
        },
        {
            "spec": "broken",
            "spec_path": "specs/broken.saliency.yaml",
            "nodeid": "specs/broken.saliency.yaml::spec",
            "line": 3,
            "check": "spec",
            "variant": "",
            "status": "error",
            "measurements": [],
            "message": "specs/broken.saliency.yaml:3:5: model: unknown key 'factori' (did you mean 'factory'?)",
        },
    ]
