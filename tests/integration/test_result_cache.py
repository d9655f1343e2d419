"""The persistent result cache in real runs: a rerun computes nothing and reports the same JSON,
an edited threshold is decided from the cached statistics, a corrupt entry is recomputed, the
modes and folders, and concurrent xdist workers leave valid entries.

Each test's project has its own pytest cache folder (under ``pytester.path``), so nothing is
cached across tests; the inner runs take only their own arguments, so these tests run the cache
even when the outer run has ``-p no:cacheprovider`` (as CI does)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_saliency.cache import ResultCache

WriteSpec = Callable[..., Path]

CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
- id: pat
  patterns:
    max_fraction: {distractor: 0.05}
"""


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.pt"))


def default_folder(project: pytest.Pytester) -> Path:
    return project.path / ".pytest_cache" / "d" / "saliency"


def results_without_timing(path: Path) -> list[dict[str, object]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [{key: value for key, value in result.items() if key != "duration"} for result in data["results"]]


def test_a_rerun_comes_from_the_cache_with_the_same_json(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(checks=CHECKS)
    cold = project.runpytest_inprocess("--saliency-json", "cold.json")
    cold.assert_outcomes(passed=2)
    cold.stdout.fnmatch_lines(["saliency: result cache readwrite, .pytest_cache/d/saliency/ (at most 2048 MiB)"])
    cold.stdout.fnmatch_lines(["saliency cache: 0 of 1 shards from the cache, 1 computed"])
    stored = entries(default_folder(project))
    assert len(stored) > 2  # the shard, the maps its worst examples show, their thumbnails' PNGs

    warm = project.runpytest_inprocess("--saliency-json", "warm.json")
    warm.assert_outcomes(passed=2)
    warm.stdout.fnmatch_lines(["saliency cache: 1 of 1 shards from the cache, 0 computed"])
    assert results_without_timing(project.path / "warm.json") == results_without_timing(project.path / "cold.json")
    assert entries(default_folder(project)) == stored  # nothing computed, nothing stored


def test_an_edited_threshold_is_decided_from_the_cached_statistics(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(looks_at="both", checks=CHECKS)  # IoU 0.64 on every sample
    project.runpytest_inprocess().assert_outcomes(passed=1, failed=1)
    write_spec(looks_at="both", checks=CHECKS.replace(">= 0.9", ">= 0.6"))
    edited = project.runpytest_inprocess()
    edited.assert_outcomes(passed=2)
    edited.stdout.fnmatch_lines(["saliency cache: 1 of 1 shards from the cache, 0 computed"])
    last_failed = project.runpytest_inprocess("--lf")  # nothing failed last: all run, all cached
    last_failed.stdout.fnmatch_lines(["saliency cache: 1 of 1 shards from the cache, 0 computed"])


def test_an_edited_threshold_reuses_the_intervals_derived_before(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    checks = CHECKS.replace('iou: {mean: ">= 0.9"}', 'iou: {median: ">= 0.9", p10: ">= 0.5"}')
    write_spec(looks_at="both", checks=checks)
    project.runpytest_inprocess().assert_outcomes(passed=1, failed=1)
    stored = {path: path.read_bytes() for path in entries(default_folder(project))}
    assert len(stored) == 3  # the shard and two bootstrap intervals (median, p10)
    write_spec(looks_at="both", checks=checks.replace(">= 0.9", ">= 0.6"))
    project.runpytest_inprocess().assert_outcomes(passed=2)
    assert {path: path.read_bytes() for path in entries(default_folder(project))} == stored


def test_a_changed_model_or_method_setting_is_computed_again(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(checks=CHECKS)
    project.runpytest_inprocess().assert_outcomes(passed=2)
    write_spec(looks_at="both", checks=CHECKS)  # another model: every number changes
    changed = project.runpytest_inprocess()
    changed.assert_outcomes(passed=1, failed=1)  # the cached IoU of 1 would pass
    changed.stdout.fnmatch_lines(["saliency cache: 0 of 1 shards from the cache, 1 computed"])
    write_spec(looks_at="both", checks=CHECKS, attributions="grad: {method: Saliency, params: {abs: false}}")
    project.runpytest_inprocess().stdout.fnmatch_lines(["saliency cache: 0 of 1 shards from the cache, 1 computed"])


def test_a_corrupt_entry_is_recomputed_with_one_note(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(checks=CHECKS)
    project.runpytest_inprocess().assert_outcomes(passed=2)
    (entry,) = entries(default_folder(project))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated, as by a killed writer without the rename
    again = project.runpytest_inprocess()
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(
        [
            "saliency cache: 0 of 1 shards from the cache, 1 computed",
            f"saliency cache: 1 unreadable entry ignored and recomputed (first: {entry})",
        ]
    )
    assert ResultCache(entry.parent.parent).load(entry.stem) is not None  # written again, whole


@pytest.mark.parametrize(
    ("arguments", "header"),
    [
        (("--saliency-cache", "off"), "saliency: result cache off"),
        (("-p", "no:cacheprovider"), "saliency: result cache off"),
    ],
)
def test_off_and_without_the_cache_provider_nothing_is_read_or_written(
    write_spec: WriteSpec, project: pytest.Pytester, arguments: tuple[str, ...], header: str
) -> None:
    write_spec(checks=CHECKS)
    result = project.runpytest_inprocess(*arguments)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([header])
    result.stdout.no_fnmatch_line("saliency cache: *")
    assert not entries(default_folder(project))


def test_read_mode_does_not_write_and_write_mode_does_not_read(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(checks=CHECKS)
    project.runpytest_inprocess("--saliency-cache", "read").assert_outcomes(passed=2)
    assert not entries(default_folder(project))
    for _ in range(2):
        written = project.runpytest_inprocess("--saliency-cache", "write")
        written.stdout.fnmatch_lines(["saliency cache: 0 of 1 shards from the cache, 1 computed"])
    assert len(entries(default_folder(project))) == 1
    read = project.runpytest_inprocess("--saliency-cache", "read")
    read.stdout.fnmatch_lines(["saliency cache: 1 of 1 shards from the cache, 0 computed"])


def test_a_cache_folder_from_the_ini_file_is_cleared_by_cache_clear(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec(checks=CHECKS)
    project.makeini("[pytest]\nsaliency_cache_dir = ci-cache\nsaliency_cache_max_mb = 64\n")
    first = project.runpytest_inprocess()
    first.stdout.fnmatch_lines(["saliency: result cache readwrite, ci-cache/ (at most 64 MiB)"])
    assert len(entries(project.path / "ci-cache")) == 1
    (project.path / "ci-cache" / "notes.txt").write_text("kept")  # not an entry: --cache-clear leaves it
    cleared = project.runpytest_inprocess("--cache-clear")
    cleared.stdout.fnmatch_lines(["saliency cache: 0 of 1 shards from the cache, 1 computed"])
    assert (project.path / "ci-cache" / "notes.txt").exists()


def test_a_bad_bound_is_a_usage_error(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    write_spec(checks=CHECKS)
    project.makeini("[pytest]\nsaliency_cache_max_mb = lots\n")
    result = project.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*saliency_cache_max_mb = lots: give a whole number of MiB*"])


def test_concurrent_xdist_workers_leave_valid_entries(write_spec: WriteSpec, project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    spread = CHECKS + "".join(
        f"- id: cov{index}\n  shared_interest:\n    gtc: {{mean: '>= 0.9'}}\n" for index in range(6)
    )
    for name in ("x", "y", "z"):  # the same shard in three specs: the workers write the same entries
        write_spec(name, checks=spread)
    result = project.runpytest_subprocess("-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=24)
    folder = default_folder(project)
    found = entries(folder)
    assert found and not list(folder.glob("*/.*.tmp"))
    store = ResultCache(folder)
    assert all(store.load(path.stem) is not None for path in found)
    again = project.runpytest_inprocess()
    again.assert_outcomes(passed=24)
    again.stdout.fnmatch_lines(["saliency cache: 3 of 3 shards from the cache, 0 computed"])
