"""Side-by-side speed of pytest-saliency's localisation and complexity metrics and Quantus 0.6.0.

One process, one workload: ``--images`` random tie-free maps of ``--size`` x ``--size`` pixels and
a random box mask per image, the same arrays for both libraries (Quantus with ``normalise`` and
``abs`` off, so both see identical maps; its model is not used by these metrics). Every metric's
per-sample scores are checked to agree within 1e-5 before it is timed (``PointingGame``: no
tolerance on our side). Timings are the minimum over ``--repeats`` interleaved runs after a
warm-up; torch's thread count is left as it is.

Run: ``pip install -e ".[bench]"`` then ``python benchmarks/localisation_vs_quantus.py``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np
import torch
from _timing import best_of, cpu_name

from pytest_saliency.metrics import complexity, localisation


def workload(images: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(images, size, size, generator=generator, dtype=torch.float64)
    corners = torch.randint(0, size // 2, (images, 2), generator=generator)
    sides = torch.randint(size // 8, size // 2, (images, 2), generator=generator)
    rows, columns = torch.arange(size).view(1, -1, 1), torch.arange(size).view(1, 1, -1)
    masks = (
        (rows >= corners[:, 0].view(-1, 1, 1))
        & (rows < (corners[:, 0] + sides[:, 0]).view(-1, 1, 1))
        & (columns >= corners[:, 1].view(-1, 1, 1))
        & (columns < (corners[:, 1] + sides[:, 1]).view(-1, 1, 1))
    )
    return maps, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    import quantus

    maps, masks = workload(arguments.images, arguments.size, arguments.seed)
    a = maps.numpy()[:, None].copy()
    s = masks.numpy()[:, None].astype(np.float64)
    x = np.zeros((len(a), 1, arguments.size, arguments.size), np.float32)
    y = np.zeros(len(a), int)
    plain = {"normalise": False, "abs": False, "disable_warnings": True, "display_progressbar": False}
    pairs: dict[str, tuple[Callable[[], torch.Tensor], object]] = {
        "pointing_game": (lambda: localisation.pointing_game(maps, masks, tolerance=0), quantus.PointingGame(**plain)),
        "relevance_mass_accuracy": (
            lambda: localisation.relevance_mass_accuracy(maps, masks),
            quantus.RelevanceMassAccuracy(**plain),
        ),
        "relevance_rank_accuracy": (
            lambda: localisation.relevance_rank_accuracy(maps, masks),
            quantus.RelevanceRankAccuracy(**plain),
        ),
        "top_k_intersection": (
            lambda: localisation.top_k_intersection(maps, masks, arguments.k),
            quantus.TopKIntersection(k=arguments.k, **plain),
        ),
        "auc": (lambda: localisation.auc(maps, masks), quantus.AUC(**plain)),
        "sparseness": (lambda: complexity.sparseness(maps), quantus.Sparseness(**{**plain, "abs": True})),
        "complexity": (lambda: complexity.complexity(maps), quantus.Complexity(**{**plain, "abs": True})),
    }
    print(
        f"# {arguments.images} maps of {arguments.size}x{arguments.size}, best of {arguments.repeats}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, quantus {quantus.__version__}, "
        f"{cpu_name()}"
    )
    print(f"{'metric':<26}{'ours (s)':>10}{'quantus (s)':>13}{'ratio':>8}")
    for name, (ours, metric) in pairs.items():

        def theirs(metric: object = metric) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(
                    metric(
                        model=None,
                        x_batch=x,
                        y_batch=y,
                        a_batch=a.copy(),
                        s_batch=s,
                        device="cpu",
                        batch_size=arguments.images,
                    ),
                    dtype=np.float64,
                )

        np.testing.assert_allclose(ours().numpy(), theirs(), atol=1e-5, rtol=0, err_msg=name)
        ours_time, their_time = best_of(arguments.repeats, ours)[0], best_of(arguments.repeats, theirs)[0]
        print(f"{name:<26}{ours_time:>10.4f}{their_time:>13.4f}{their_time / ours_time:>7.1f}x")


if __name__ == "__main__":
    main()
