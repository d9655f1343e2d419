"""``--saliency-ray``: a spec's shards on Ray actors give the same results as in-process; a dead
actor is restarted and its shard retried once, a second death is one line; the option's usage
errors. One local Ray cluster (2 CPUs) serves the whole module: the inner runs are in-process,
find Ray initialised and use it (and leave it running, since they did not start it)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ray = pytest.importorskip("ray")

WriteSpec = Callable[..., Path]

ATTRIBUTIONS = """\
grad: {method: Saliency, params: {abs: true}}
ixg: {method: InputXGradient}
random: {method: random}
"""
CHECKS = """\
- id: cov
  shared_interest:
    iou: {mean: ">= 0.9"}
    gtc: {min: ">= 0.9"}
    per_class: true
- id: aligned
  patterns:
    min_fraction: {human_aligned: 0.5}
- id: on-the-object
  localisation:
    pointing_game: {mean: ">= 0.5"}
    tolerance: 0
    auc: {mean: ">= 0.6"}
- id: concentrated
  complexity:
    sparseness: {mean: ">= 0.5"}
    complexity: {mean: "<= 5.0"}
"""
DATA = "npz: ../data.npz\nclasses: [circle, square, triangle]\nshard_size: 2"

KILLER = '''\
"""A tiny model whose factory kills the Ray worker process that calls it, ``deaths`` times in all
(counted in a file), and never the driver."""
import os
from pathlib import Path

from tinymodel import build


def dying(driver, deaths, counter):
    counter = Path(counter)
    died = int(counter.read_text()) if counter.exists() else 0
    if os.getpid() != driver and died < deaths:
        counter.write_text(str(died + 1))
        os._exit(1)
    return build()
'''


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for the module (the inner runs find it initialised)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    if started:
        ray.shutdown()


def items(path: Path) -> dict[str, dict[str, Any]]:
    """The ``--saliency-json`` results by node id, without what differs between runs (the time)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return {result["nodeid"]: {k: v for k, v in result.items() if k != "duration"} for result in document["results"]}


def test_two_actors_give_the_measurements_of_an_in_process_run(
    cluster: None, write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    write_spec("x", looks_at="both", data=DATA, attributions=ATTRIBUTIONS, checks=CHECKS)
    local = project.runpytest_inprocess("--saliency-json", "local.json")
    assert local.ret == pytest.ExitCode.TESTS_FAILED  # the decoy costs IoU: failures travel back too
    # write: computed on the actors (not served from the in-process run's cache entries), then stored
    ray_options = ("--saliency-ray", "--saliency-workers", "2")
    on_ray = project.runpytest_inprocess(*ray_options, "--saliency-cache", "write", "--saliency-json", "ray.json")
    assert on_ray.ret == local.ret
    on_ray.stdout.fnmatch_lines(["saliency: ray local cluster (2 CPUs, 0 GPUs), 2 workers on cpu"])
    on_ray.stdout.fnmatch_lines(["saliency cache: 0 of 3 shards from the cache, 3 computed"])
    assert on_ray.parseoutcomes() == local.parseoutcomes()
    assert ray.is_initialized()  # the run did not start this cluster, so it left it running

    expected, measured = items(project.path / "local.json"), items(project.path / "ray.json")
    assert len(expected) == 3 * (3 + 1 + 1 + 1)  # three methods x (three classes, patterns, localisation, complexity)
    assert measured.keys() == expected.keys()
    for nodeid, result in expected.items():
        assert result["measurements"], nodeid
        assert measured[nodeid] == result, nodeid  # every measurement (random's per-sample draws too), thumbnail
    helpers.assert_no_traceback(on_ray.stdout.str())

    cached = project.runpytest_inprocess(*ray_options, "--saliency-json", "cached.json")  # the driver looks up first
    cached.stdout.fnmatch_lines(["saliency cache: 3 of 3 shards from the cache, 0 computed"])
    assert items(project.path / "cached.json") == expected


def dying_spec(write_spec: WriteSpec, project: pytest.Pytester, deaths: int) -> None:
    project.makepyfile(killer=KILLER)
    counter = project.path / "deaths.txt"
    model = f"factory: killer:dying\nkwargs: {{driver: {os.getpid()}, deaths: {deaths}, counter: '{counter}'}}"
    write_spec("x", model=model, data=DATA)


def test_an_actor_that_dies_is_restarted_and_its_shard_retried(
    cluster: None, write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    dying_spec(write_spec, project, deaths=1)
    result = project.runpytest_inprocess("--saliency-ray", "--saliency-workers", "1")
    result.assert_outcomes(passed=1)
    assert (project.path / "deaths.txt").read_text() == "1"  # it did die once
    assert helpers.summary_values(result.stdout.str()) == ["1.0000"]


def test_a_second_death_is_one_line_at_the_model(
    cluster: None, write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    project.makepyfile(test_after="def test_after():\n    pass\n")
    dying_spec(write_spec, project, deaths=2)
    result = project.runpytest_inprocess("--saliency-ray", "--saliency-workers", "1", "-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)  # the run goes on after it
    assert (project.path / "deaths.txt").read_text() == "2"
    result.stdout.fnmatch_lines(
        [
            "specs/x.saliency.yaml:3:3: model: the Ray worker computing samples 0-1 died again after a restart and a retry: *"
        ]
    )
    failure = [line for line in result.stdout.lines if line.startswith("specs/x.saliency.yaml:")]
    assert len(failure) == 1, failure  # one line, no traceback
    helpers.assert_no_traceback(result.stdout.str())


def test_an_error_in_an_actor_reaches_the_driver_as_itself(
    cluster: None, write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    write_spec("x", model="factory: tinymodel:broken", data=DATA)
    local = project.runpytest_inprocess()
    on_ray = project.runpytest_inprocess("--saliency-ray", "--saliency-workers", "1")
    assert on_ray.ret == local.ret == pytest.ExitCode.TESTS_FAILED

    def failures(result: pytest.RunResult) -> list[str]:
        return [line for line in result.stdout.lines if line.startswith("specs/x.saliency.yaml:")]

    assert failures(local) == [
        "specs/x.saliency.yaml:3:12: model.factory: tinymodel:broken() raised "
        "RuntimeError: factory is broken on purpose"
    ]
    assert failures(on_ray) == failures(local)  # the same positioned line, raised in the actor
    helpers.assert_no_traceback(on_ray.stdout.str())


def test_ray_and_xdist_are_refused_together(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = project.runpytest_inprocess("--saliency-ray", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --saliency-ray and -n (pytest-xdist) do not combine: *"])


def test_without_ray_the_option_says_how_to_install_it(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    result = project.runpytest_inprocess("--saliency-ray")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: --saliency-ray needs Ray: pip install "pytest-saliency[ray]"'])


def test_a_path_after_the_option_is_not_taken_for_an_address(project: pytest.Pytester) -> None:
    result = project.runpytest_inprocess("--saliency-ray", "specs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --saliency-ray specs: that is a path, not a Ray address: *"])


def test_collecting_starts_no_cluster(
    project: pytest.Pytester, write_spec: WriteSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_spec("x")

    def refuse(**options: object) -> None:
        raise AssertionError("ray.init called")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    result = project.runpytest_inprocess("--saliency-ray", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["specs/x.saliency.yaml::cov[[]grad[]]"])


def test_workers_without_ray_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest_inprocess("--saliency-workers", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --saliency-workers needs --saliency-ray (it counts Ray actors)"])
