"""The eight Shared Interest behaviour patterns (docs/methods.md#behaviour-patterns)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saliency.metrics.patterns import PATTERN_NAMES, behaviour_patterns, pattern_fractions

NAN = math.nan


def assigned(
    iou: float, gtc: float, sc: float, correct: bool, dtype: torch.dtype = torch.float32, **levels: float
) -> set[str]:
    """The set of pattern names one sample gets."""
    row = behaviour_patterns(
        torch.tensor([iou], dtype=dtype),
        torch.tensor([gtc], dtype=dtype),
        torch.tensor([sc], dtype=dtype),
        torch.tensor([correct]),
        **levels,
    )
    assert row.shape == (1, 8) and row.dtype == torch.bool
    return {name for name, hit in zip(PATTERN_NAMES, row[0].tolist(), strict=True) if hit}


def test_pattern_names_and_order() -> None:
    assert PATTERN_NAMES == (
        "human_aligned",
        "sufficient_subset",
        "sufficient_context",
        "context_dependent",
        "confuser",
        "insufficient_subset",
        "distractor",
        "context_confusion",
    )


def test_the_spec_language_accepts_exactly_the_pattern_names() -> None:
    from typing import get_args

    from pytest_saliency.spec.schema import PatternName

    assert get_args(PatternName) == PATTERN_NAMES


# Consistent hand-made samples (IoU <= min(GTC, SC) as for real regions). GTC low forces IoU
# low, and so does SC low: the subset and context patterns always come with the IoU-low one.
@pytest.mark.parametrize(
    ("iou", "gtc", "sc", "correct", "expected"),
    [
        (0.80, 0.90, 0.85, True, {"human_aligned"}),
        (0.15, 0.20, 0.90, True, {"sufficient_subset", "sufficient_context"}),
        (0.10, 0.50, 0.50, True, {"sufficient_context"}),
        (0.15, 0.90, 0.20, True, {"context_dependent", "sufficient_context"}),
        (0.80, 0.90, 0.85, False, {"confuser"}),
        (0.15, 0.20, 0.90, False, {"insufficient_subset", "distractor"}),
        (0.10, 0.50, 0.50, False, {"distractor"}),
        (0.15, 0.90, 0.20, False, {"context_confusion", "distractor"}),
        (0.50, 0.60, 0.65, True, set()),  # medium everything: no pattern
        (0.50, 0.60, 0.65, False, set()),
    ],
)
def test_each_pattern_from_a_hand_made_sample(
    iou: float, gtc: float, sc: float, correct: bool, expected: set[str]
) -> None:
    assert assigned(iou, gtc, sc, correct) == expected


def test_each_pattern_condition_in_isolation() -> None:
    # inconsistent scores, to see that each column reads exactly its own condition
    assert assigned(0.5, 0.1, 0.9, True) == {"sufficient_subset"}
    assert assigned(0.5, 0.9, 0.1, True) == {"context_dependent"}
    assert assigned(0.5, 0.1, 0.9, False) == {"insufficient_subset"}
    assert assigned(0.5, 0.9, 0.1, False) == {"context_confusion"}
    assert assigned(0.9, 0.5, 0.5, False) == {"confuser"}
    assert assigned(0.1, 0.5, 0.5, True) == {"sufficient_context"}


def test_a_batch_gives_one_row_per_sample() -> None:
    patterns = behaviour_patterns(
        torch.tensor([0.8, 0.1, 0.8]),
        torch.tensor([0.9, 0.5, 0.9]),
        torch.tensor([0.9, 0.5, 0.9]),
        torch.tensor([True, False, False]),
    )
    assert patterns.shape == (3, 8)
    assert patterns[0, PATTERN_NAMES.index("human_aligned")]
    assert patterns[1, PATTERN_NAMES.index("distractor")]
    assert patterns[2, PATTERN_NAMES.index("confuser")]
    assert patterns.sum().item() == 3


# --- levels: rounded to two decimals, inclusive ----------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("score", "is_low", "is_high"),
    [
        (0.0, True, False),
        (0.29, True, False),
        (0.30, True, False),  # low is inclusive
        (0.304, True, False),  # rounds to 0.30
        (0.306, False, False),  # rounds to 0.31
        (0.31, False, False),
        (0.50, False, False),
        (0.69, False, False),
        (0.694, False, False),  # rounds to 0.69
        (0.696, False, True),  # rounds to 0.70
        (0.70, False, True),  # high is inclusive
        (0.71, False, True),
        (1.0, False, True),
    ],
)
def test_level_boundaries(score: float, is_low: bool, is_high: bool, dtype: torch.dtype) -> None:
    # correct prediction, GTC and SC medium: only the IoU level decides
    patterns = assigned(score, 0.5, 0.5, True, dtype=dtype)
    assert ("sufficient_context" in patterns) is is_low
    assert ("human_aligned" in patterns) is is_high


def test_rounding_applies_to_coverages_too() -> None:
    assert assigned(0.5, 0.304, 0.696, True) == {"sufficient_subset"}
    assert assigned(0.5, 0.306, 0.696, True) == set()
    assert assigned(0.5, 0.304, 0.694, True) == set()


def test_custom_levels() -> None:
    assert assigned(0.25, 0.5, 0.5, True, low=0.2, high=0.9) == set()
    assert assigned(0.20, 0.5, 0.5, True, low=0.2, high=0.9) == {"sufficient_context"}
    assert assigned(0.85, 0.5, 0.5, True, low=0.2, high=0.9) == set()
    assert assigned(0.90, 0.5, 0.5, True, low=0.2, high=0.9) == {"human_aligned"}
    # wider levels than the defaults catch what the defaults leave medium
    assert assigned(0.40, 0.5, 0.5, False, low=0.4, high=0.6) == {"distractor"}
    assert assigned(0.60, 0.5, 0.5, False, low=0.4, high=0.6) == {"confuser"}


# --- undefined scores ------------------------------------------------------------------------


@pytest.mark.parametrize("correct", [True, False])
@pytest.mark.parametrize(
    ("iou", "gtc", "sc"),
    [
        (NAN, NAN, NAN),  # both regions empty
        (0.0, NAN, 0.0),  # empty ground truth, non-empty saliency: IoU is 0 but GTC undefined
        (0.0, 0.0, NAN),  # empty saliency region
        (NAN, 0.1, 0.9),
        (0.9, NAN, 0.9),
    ],
)
def test_an_undefined_score_gives_no_pattern(iou: float, gtc: float, sc: float, correct: bool) -> None:
    assert assigned(iou, gtc, sc, correct) == set()


# --- fractions -------------------------------------------------------------------------------


def test_pattern_fractions() -> None:
    patterns = behaviour_patterns(
        torch.tensor([0.8, 0.8, 0.1, 0.5]),
        torch.tensor([0.9, 0.9, 0.5, 0.5]),
        torch.tensor([0.9, 0.9, 0.5, 0.5]),
        torch.tensor([True, True, False, True]),
    )
    fractions = pattern_fractions(patterns)
    assert list(fractions) == list(PATTERN_NAMES)
    assert fractions["human_aligned"] == pytest.approx(0.5)
    assert fractions["distractor"] == pytest.approx(0.25)
    assert sum(fractions.values()) == pytest.approx(0.75)  # the medium sample is in none


def test_pattern_fractions_of_an_empty_batch_are_zero() -> None:
    fractions = pattern_fractions(torch.zeros(0, 8, dtype=torch.bool))
    assert fractions == {name: 0.0 for name in PATTERN_NAMES}


# --- properties ------------------------------------------------------------------------------

scores = st.one_of(st.floats(0.0, 1.0), st.just(NAN))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(scores, scores, scores, st.booleans()), min_size=1, max_size=8))
def test_correct_and_incorrect_patterns_never_mix(rows: list[tuple[float, float, float, bool]]) -> None:
    iou, gtc, sc, correct = (torch.tensor(column) for column in zip(*rows, strict=True))
    patterns = behaviour_patterns(iou, gtc, sc, correct)
    assert not patterns[correct, 4:].any()
    assert not patterns[~correct, :4].any()
    # IoU cannot be both low and high, so human_aligned/sufficient_context never meet
    assert not (patterns[:, 0] & patterns[:, 2]).any()
    undefined = iou.isnan() | gtc.isnan() | sc.isnan()
    assert not patterns[undefined].any()
    fractions = pattern_fractions(patterns)
    assert all(0.0 <= value <= 1.0 for value in fractions.values())
