"""Side-by-side speed of pytest-saliency's ``sanity`` check and Quantus 0.6.0's MPRT.

One process, one workload, both sides producing the same similarities:

* The shipped shapes model (``examples/shapes``: three conv layers and a linear head, 3x32x32
  inputs), ``--images`` validation images, captum ``Saliency(abs=True)`` summed over channels,
  cascading randomisation of the 4 parameterised layers top-down (``10, 6, 3, 0``), Spearman
  rank correlation of the maps with the trained model's, seed 42 on both sides (the same
  randomised weights: see ``tests/unit/metrics/test_sanity_quantus.py``).
* Ours: the ``sanity`` check exactly as ``pytest`` runs it (a spec, the engine's streaming pass,
  the check's ``statistics`` per shard and ``decide``), from a fresh engine each time (model and
  data source already loaded; the trained attributions are computed inside the timed run), or
  with the trained attributions shared with another check of the same pass (``marginal``: the
  pass of a ``complexity`` check and the sanity check, less the pass of the ``complexity`` check
  alone).
* Quantus: ``quantus.MPRT(layer_order="top_down", seed=42)`` with the same explain function and
  batch size, ``a_batch=None`` (it explains the trained model itself); ``marginal``: given the
  trained attributions.

The per-layer mean similarities are compared (printed as ``max |difference|``). Timings are the
minimum over ``--repeats`` interleaved runs after a warm-up; torch's thread count is left as it
is. Run: ``pip install -e ".[bench]"`` then ``python benchmarks/sanity_vs_quantus.py``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from _timing import best_of, cpu_name

from pytest_saliency.checks.request import CheckRequest
from pytest_saliency.checks.sanity import KIND, decide
from pytest_saliency.engine import SpecEngine
from pytest_saliency.spec import load_spec
from pytest_saliency.streaming import Need, Plan

REPO = Path(__file__).resolve().parents[1]
SEED = 42
SPEC = """\
version: 1
model:
  factory: examples.shapes.model:build
  kwargs: {{num_classes: 3}}
  weights: {weights}
data:
  npz: {data}
  batch_size: {batch_size}
  limit: {images}
attributions:
  grad: {{method: Saliency, params: {{abs: true}}}}
target: label
seed: {seed}
checks:
  - id: randomisation
    sanity: {{test: cascading, similarity: spearman_abs, every_step: "<= 1"}}
  - id: sparse
    complexity: {{sparseness: {{mean: ">= 0"}}}}
"""
SANITY, OTHER = Need(0, "grad"), Need(1, "grad")


def saliency(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
    """Quantus' explain function: captum Saliency (abs), summed over channels, ``(N, 1, H, W)``."""
    from captum.attr import Saliency

    inputs = torch.as_tensor(inputs).clone().requires_grad_(True)
    maps = Saliency(model).attribute(inputs, target=torch.as_tensor(targets), abs=True)
    return maps.sum(dim=1, keepdim=True).detach().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, help="attribution batch size (both libraries)")
    parser.add_argument("--images", type=int, default=256, help="validation images (at most 256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (minimum is kept)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import quantus

    print(
        f"machine: {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"quantus {quantus.__version__}, numpy {np.__version__}; {args.images} images, batch size "
        f"{args.batch_size}, best of {args.repeats}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.saliency.yaml"
        path.write_text(
            SPEC.format(
                weights=REPO / "examples/shapes/clean.pt",
                data=REPO / "examples/shapes/val.npz",
                batch_size=args.batch_size,
                images=args.images,
                seed=SEED,
            )
        )
        loaded = load_spec(path)
    check = loaded.spec.checks[0]

    def fresh_engine() -> SpecEngine:
        engine = SpecEngine(loaded, torch.device("cpu"), (REPO,))
        engine.model, engine.source  # noqa: B018  (loaded before the clock starts)
        return engine

    def ours(needs: tuple[Need, ...] = (SANITY,)) -> dict[str, float]:
        engine = fresh_engine()
        result = engine.result(Plan(needs))
        if SANITY not in needs:
            return {}
        outcome = decide(CheckRequest(engine, check, KIND.config_of(check), "grad", None, result))
        sanity = outcome.extra["sanity"]
        return dict(zip(sanity["steps"], sanity["curve"], strict=True))

    network = fresh_engine().model.network
    data = np.load(REPO / "examples/shapes/val.npz")
    x = data["images"][: args.images].astype(np.float32)
    y = data["labels"][: args.images]
    a_trained = saliency(network, x, y)

    def theirs(a_batch: np.ndarray | None = None) -> dict[str, float]:
        metric = quantus.MPRT(layer_order="top_down", seed=SEED, disable_warnings=True)
        scores = metric(
            model=network,
            x_batch=x,
            y_batch=y,
            a_batch=a_batch,
            explain_func=saliency,
            device="cpu",
            batch_size=args.batch_size,
        )
        return {layer: float(np.mean(values)) for layer, values in scores.items()}

    ours(), theirs()  # warm-up
    times: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):  # interleaved
        for name, run in (
            ("ours", ours),
            ("theirs", theirs),
            ("ours_both", lambda: ours((OTHER, SANITY))),  # the trained attributions shared with another check
            ("ours_other", lambda: ours((OTHER,))),
            ("theirs_marginal", lambda: theirs(a_trained)),
        ):
            seconds, result = best_of(1, run)
            times[name] = min(times.get(name, float("inf")), seconds)
            results[name] = result
    times["ours_marginal"] = times["ours_both"] - times["ours_other"]
    differences = [abs(results["ours"][layer] - results["theirs"][layer]) for layer in results["theirs"]]
    curve = " -> ".join(f"{layer} {value:.4f}" for layer, value in results["ours"].items())
    print(f"curve (ours): {curve}")
    print(f"max |difference| of the per-layer mean similarity vs Quantus: {max(differences):.2e}")
    one_pass = times["ours_other"]  # one attribution pass (and a cheap check)
    layers = len(results["ours"]) - 1
    print(
        f"one attribution pass over the images: {one_pass:.3f} s; attribution passes: ours {1 + layers}, "
        f"Quantus {2 + layers} (it explains the trained model twice); marginal: ours {layers}, Quantus {1 + layers}"
    )
    print(
        f"seconds: ours {times['ours']:.3f}, Quantus {times['theirs']:.3f}; "
        f"marginal: ours {times['ours_marginal']:.3f} ({times['ours_both']:.3f} - {times['ours_other']:.3f}), "
        f"Quantus {times['theirs_marginal']:.3f}"
    )
    print(f"sanity_ratio: {times['theirs'] / times['ours']:.2f}")
    print(f"sanity_ratio_marginal: {times['theirs_marginal'] / times['ours_marginal']:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
