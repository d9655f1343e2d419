"""The Ray runner's choices that need no cluster: how many actors with how much GPU, the line of a
lost shard, errors made fit to travel back."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pytest_saliency.cluster import RayRunner, _picklable
from pytest_saliency.errors import ClusterUnavailable
from pytest_saliency.spec import load_spec


@pytest.mark.parametrize(
    ("workers", "device", "gpus", "layout"),
    [
        (None, "auto", 0, (2, 0.0)),  # a CPU cluster: two actors
        (None, "auto", 4, (4, 1.0)),  # one actor per GPU
        (2, "auto", 4, (2, 1.0)),  # fewer actors than GPUs: one GPU each
        (8, "auto", 2, (8, 0.25)),  # more: they share the GPUs, none waits for one of its own
        (None, "cpu", 4, (2, 0.0)),  # --saliency-device cpu keeps them off the GPUs
        (3, "cpu", 4, (3, 0.0)),
    ],
)
def test_actors_and_their_share_of_the_gpus(
    workers: int | None, device: str, gpus: int, layout: tuple[int, float]
) -> None:
    assert RayRunner(workers=workers, device=device)._layout(gpus) == layout


def test_a_lost_shard_is_one_line_naming_its_samples_and_the_error() -> None:
    error = RayRunner._lost(range(4, 8), RuntimeError("The actor died.\nmore detail"), died=True)
    assert error.location == ("model",)
    assert error.message == (
        "the Ray worker computing samples 4-7 died again after a restart and a retry: RuntimeError: The actor died."
    )
    assert "sample 3 failed:" in RayRunner._lost(range(3, 4), RuntimeError("x"), died=False).message


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle calls it with args=(message,) only
        super().__init__(f"{a} and {b}")


def test_an_error_that_cannot_travel_back_becomes_its_line() -> None:
    picklable = ValueError("bad value")
    assert _picklable(picklable) is picklable
    replaced = _picklable(Unpicklable(1, 2))
    assert type(replaced) is RuntimeError
    assert str(replaced) == "Unpicklable: 1 and 2"


def test_a_cluster_that_does_not_start_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")

    def refuse(**options: object) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify one.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    runner = RayRunner("ray://head:10001")
    with pytest.raises(ClusterUnavailable) as caught:
        runner.connect()
    assert str(caught.value) == (
        "--saliency-ray=ray://head:10001: Ray did not start: ConnectionError: Could not find any running Ray instance."
    )
    assert not runner.started


def test_a_loaded_spec_pickles_for_the_actors() -> None:
    """What every actor gets: the validated spec with its source positions and overrides."""
    root = Path(__file__).resolve().parents[2]
    loaded = load_spec(root / "specs" / "shapes.saliency.yaml", display="specs/shapes.saliency.yaml")
    copy = pickle.loads(pickle.dumps(loaded))
    assert copy.spec == loaded.spec
    assert copy.path == loaded.path
    assert copy.source.values == loaded.source.values
    assert copy.problem(("model", "factory"), "x") == loaded.problem(("model", "factory"), "x")


@pytest.mark.parametrize("started", [True, False])
def test_closing_ends_the_actors_and_only_a_ray_the_run_started(monkeypatch: pytest.MonkeyPatch, started: bool) -> None:
    ray = pytest.importorskip("ray")
    calls: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "kill", lambda actor: calls.append(f"kill {actor}"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    runner = RayRunner()
    runner.started = started
    runner._actors = ["a", "b"]
    runner.close()
    assert calls == ["kill a", "kill b", *(["shutdown"] if started else [])]
    assert not runner.started
