"""Side-by-side speed of pytest-saliency's fidelity engine and Quantus 0.6.0.

One process, one workload, both libraries producing the same curves:

* Pixel flipping (MIF and LIF, zero fill, softmax probability of the clean prediction) on a
  small random-weight CNN at 3x64x64, 256 images, gradient-saliency attributions.
  Quantus ``PixelFlipping`` counts every channel value as a feature and must walk through all of
  them; with ``features_in_step=256`` (it must divide H*W = 4096) it makes 48 passes per order and
  every third point has flipped whole pixels. Ours evaluates those 16 whole-pixel points (1/16
  steps; 20 steps cannot be expressed by Quantus at 64x64 since 20 does not divide 4096) plus the
  clean images. The curves are checked to be identical at the shared points.
  For reference the same comparison is also run on 1x64x64 inputs, where both sides make the
  same number of forward passes.
* ROAD (MoRF order, noisy linear imputation, accuracy) at 10, 20, 30, 40, 50 % removed. Quantus
  0.6.0's imputation indexes a 3-channel image with indices of the flattened C*H*W attribution
  and raises IndexError, so that comparison runs on 1x64x64 inputs (printed). Equality is checked
  with the noise switched off; the timed runs use ROAD's default noise 0.01 on both sides.

Run: ``pip install -e ".[bench]"`` then ``python benchmarks/fidelity_vs_quantus.py``.
Timings are the minimum over ``--repeats`` interleaved runs after a warm-up; torch's thread
count is left as it is.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from _timing import best_of, cpu_name
from _workloads import SmallCNN
from torch import Tensor, nn

from pytest_saliency.metrics.fidelity import FidelityResult, fidelity_curves, sample_scores
from pytest_saliency.metrics.imputation import linear_impute


class TimedModel(nn.Module):
    """Wraps a model and accumulates the wall time spent in its forward passes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0
        self.inputs = 0

    def forward(self, x: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.inner(x)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.inputs += x.shape[0]
        return out

    def reset(self) -> None:
        self.seconds, self.calls, self.inputs = 0.0, 0, 0


def make_workload(channels: int, n: int, size: int, seed: int) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Seeded model, images, clean predictions and gradient-saliency importance ``(N, H, W)``."""
    torch.manual_seed(seed)
    model = SmallCNN(in_channels=channels).eval()
    images = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    x = images.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    importance = x.grad.abs().sum(dim=1).detach()
    return model, images, target, importance


def pixel_flipping(quantus, channels: int, args: argparse.Namespace) -> dict[str, float]:
    model, images, target, importance = make_workload(channels, args.images, 64, args.seed)
    timed = TimedModel(model).eval()
    steps = 16
    features_in_step = 64 * 64 // steps  # pixels per whole-pixel point, a divisor of H*W
    per_point = channels  # Quantus points per whole-pixel point
    fractions = [j / steps for j in range(steps + 1)]
    x_np, y_np = images.numpy(), target.numpy()
    a_np = importance.numpy()[:, None]

    def ours() -> FidelityResult:
        # what a fidelity check does: the per-sample scores of a shard (here one shard of every
        # image, with their data-set indices), summed up from the merged samples
        samples = sample_scores(
            timed,
            images,
            importance,
            target=target,
            indices=range(len(images)),
            fractions=fractions,
            orders=("mif", "lif"),
            fill="zeros",
            score="probability",
            batch_size=args.batch_size,
        )
        return FidelityResult.from_scores(samples, score="probability", fill="zeros", unit=1)

    def theirs(n: int = args.images) -> dict[str, np.ndarray]:
        curves = {}
        # Quantus sorts descending and rejects all-negative attributions, so LIF gets the
        # order-reversing ``max - a`` (float64, no new ties).
        a64 = a_np.astype(np.float64)
        for order, a in (("mif", a_np), ("lif", a64.max() - a64)):
            metric = quantus.PixelFlipping(
                features_in_step=features_in_step,
                abs=False,
                normalise=False,
                perturb_baseline=0.0,
                disable_warnings=True,
                display_progressbar=False,
            )
            curves[order] = np.asarray(
                metric(
                    model=model,
                    x_batch=x_np[:n],
                    y_batch=y_np[:n],
                    a_batch=a[:n],
                    softmax=True,
                    device="cpu",
                    batch_size=args.batch_size,
                )
            )
        return curves

    # Warm-up on a few images, then interleaved timed runs.
    fidelity_curves(model, images[:8], importance[:8], target=target[:8], fractions=fractions, batch_size=8)
    theirs(8)
    ours_s, theirs_s = float("inf"), float("inf")
    model_share = model_s = float("nan")
    result = q_curves = None
    for _ in range(args.repeats):
        timed.reset()
        start = time.perf_counter()
        result = ours()
        elapsed = time.perf_counter() - start
        if elapsed < ours_s:
            ours_s, model_s, model_share = elapsed, timed.seconds, timed.seconds / elapsed
        our_inputs = timed.inputs
        seconds, q_curves = best_of(1, theirs)
        theirs_s = min(theirs_s, seconds)
    max_diff = 0.0
    for order in ("mif", "lif"):
        shared = q_curves[order][:, per_point - 1 :: per_point]  # whole-pixel points, j = 1..16
        ours_points = result.scores[order][:, 1:].numpy()
        max_diff = max(max_diff, float(np.abs(shared - ours_points).max()))
    q_inputs = 2 * args.images * (channels * 64 * 64 // features_in_step)
    print(
        f"pixel flipping {channels}x64x64: quantus {theirs_s:.2f} s ({q_inputs} model inputs), "
        f"ours {ours_s:.2f} s ({our_inputs} model inputs, {model_s:.2f} s in the model); "
        f"max |curve difference| at the {steps} shared points: {max_diff:.2e}"
    )
    return {"ours": ours_s, "theirs": theirs_s, "model_share": model_share, "max_diff": max_diff}


def road(quantus, args: argparse.Namespace) -> dict[str, float]:
    percentages = [10, 20, 30, 40, 50]
    fractions = [p / 100 for p in percentages]
    rgb_model, rgb_images, rgb_target, rgb_importance = make_workload(3, 4, 64, args.seed)
    try:
        quantus.ROAD(percentages=[10], disable_warnings=True, display_progressbar=False)(
            model=rgb_model,
            x_batch=rgb_images.numpy(),
            y_batch=rgb_target.numpy(),
            a_batch=rgb_importance.numpy()[:, None],
            device="cpu",
            batch_size=4,
        )
        channels = 3
        print("road: Quantus ROAD ran on 3-channel inputs")
    except IndexError as error:
        channels = 1
        print(f"road: Quantus 0.6.0 ROAD raises IndexError on 3-channel inputs ({error}); comparing on 1x64x64")
    model, images, target, importance = make_workload(channels, args.images, 64, args.seed)
    timed = TimedModel(model).eval()
    x_np, y_np, a_np = images.numpy(), target.numpy(), importance.numpy()[:, None]

    def ours(noise: float, n: int) -> FidelityResult:
        return fidelity_curves(
            timed,
            images[:n],
            importance[:n],
            target=target[:n],
            fractions=fractions,
            orders=("mif",),
            fill="noisy_linear",
            noise_std=noise,
            score="accuracy",
            batch_size=args.batch_size,
        )

    def theirs(noise: float, n: int, batch_size: int) -> dict:
        metric = quantus.ROAD(
            percentages=percentages,
            noise=noise,
            abs=False,
            normalise=False,
            disable_warnings=True,
            display_progressbar=False,
        )
        metric(model=model, x_batch=x_np[:n], y_batch=y_np[:n], a_batch=a_np[:n], device="cpu", batch_size=batch_size)
        return metric.evaluation_scores

    # Equality, noise off. Quantus 0.6.0 keeps only the first batch's scores, so one batch.
    n_check = min(64, args.images)
    q_acc = theirs(0.0, n_check, n_check)
    our_acc = ours(0.0, n_check).mean_curve("mif")
    acc_diff = max(abs(float(q_acc[p]) - float(our_acc[i])) for i, p in enumerate(percentages))
    from quantus.functions.perturb_func import noisy_linear_imputation

    order = np.argsort(-a_np[:4].reshape(4, -1), axis=1)
    k = int(64 * 64 * 0.3)
    removed = torch.zeros(4, 64 * 64, dtype=torch.bool)
    removed.scatter_(1, torch.from_numpy(order[:, :k].copy()), True)
    mine = linear_impute(images[:4], removed.view(4, 64, 64)).numpy()
    ref = np.stack([noisy_linear_imputation(x_np[i], order[i, :k], noise=0.0) for i in range(4)])
    impute_diff = float(np.abs(mine - ref).max())

    ours(0.01, 8)  # warm-up
    ours_s, theirs_s, model_share = float("inf"), float("inf"), float("nan")
    for _ in range(args.repeats):
        timed.reset()
        start = time.perf_counter()
        ours(0.01, args.images)
        elapsed = time.perf_counter() - start
        if elapsed < ours_s:
            ours_s, model_share = elapsed, timed.seconds / elapsed
        seconds, _ = best_of(1, lambda: theirs(0.01, args.images, args.batch_size))
        theirs_s = min(theirs_s, seconds)
    print(
        f"road {channels}x64x64: quantus {theirs_s:.2f} s, ours {ours_s:.2f} s "
        f"(model share {model_share:.2f}); noise-off check on {n_check} images: "
        f"max |accuracy difference| {acc_diff:.3g}, max |imputed pixel difference| vs Quantus "
        f"(4 images, 30 %) {impute_diff:.2e}"
    )
    return {"ours": ours_s, "theirs": theirs_s, "acc_diff": acc_diff, "impute_diff": impute_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, help="model batch size (both libraries)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (minimum is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-road", action="store_true")
    parser.add_argument("--skip-pixel-flipping", action="store_true")
    parser.add_argument("--skip-1ch", action="store_true", help="skip the equal-pass 1-channel run")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    import quantus

    print(
        f"machine: {cpu_name()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), quantus {quantus.__version__}, numpy {np.__version__}; "
        f"{args.images} images, batch size {args.batch_size}, best of {args.repeats}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_pixel_flipping:
        pf = pixel_flipping(quantus, 3, args)
        print(f"model_share: {pf['model_share']:.3f}")
        print(f"pixel_flipping_ratio: {pf['theirs'] / pf['ours']:.2f}")
    if not (args.skip_1ch or args.skip_pixel_flipping):
        pf1 = pixel_flipping(quantus, 1, args)
        print(f"pixel_flipping_ratio_1ch_equal_passes: {pf1['theirs'] / pf1['ours']:.2f} (context)")
    if not args.skip_road:
        rd = road(quantus, args)
        print(f"road_ratio: {rd['theirs'] / rd['ours']:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
