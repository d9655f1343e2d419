"""The model passes of a spec against the bare eager passes it needs, with the exact speed-ups
(``model.memory_format``) and the opt-in ones (``model.precision: bf16``, ``model.compile``), and
how far each moves the shipped specs' numbers; side by side in one process.

**ResNet-18 part.** A spec on torchvision's ResNet-18 (random weights, seeded; 1000 classes),
generated 3x224x224 images (``_workloads:shapes``), Integrated Gradients with 32 steps and a
fidelity check with MIF and LIF curves of 20 steps. The **bare eager** loop runs the model passes
the spec makes, without the plugin: the default memory layout, eager, the same batch size,
``inference_mode`` for the passes without gradients. How many those are is counted, not
assumed: the warm-up run (2 images) counts the network's inputs with and without gradients
(a global forward hook), which per image is 1 + 32 (the prediction and IG's steps, forward and
backward) and 39 forward-only (the curves' clean point and 19 points of each order). Each variant of the spec (``contiguous``,
the default ``auto`` = channels_last for this network, ``bf16``, ``compile``) runs with pytest in
this process (``--saliency-cache off``; the items' wall time, model loading and data included),
interleaved with the bare loop, best of ``--repeats``. Printed: ``spec_over_bare_eager`` per
variant (target <= 0.9 for ``auto``) and each variant's largest difference to ``contiguous`` over
the gated numbers.

**Shipped specs part** (``--shipped``): every shipped spec under each variant, with each
measurement's largest absolute and relative difference to ``contiguous`` and whether every
status is the same.

    python benchmarks/passes.py                                # 32 images, best of 2
    python benchmarks/passes.py --images 4 --size 64 --repeats 1 --variants contiguous auto   # smoke
    python benchmarks/passes.py --shipped --variants contiguous auto bf16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _timing import cpu_name
from _workloads import resnet18
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torchvision.models import ResNet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IG_STEPS = 32
FIDELITY_STEPS = 20
WARM_UP_IMAGES = 2
VARIANTS = {
    "contiguous": ["model.memory_format=contiguous"],
    "auto": [],
    "bf16": ["model.precision=bf16"],
    "compile": ["model.compile=true"],
}

SPEC = """\
version: 1
name: passes
model:
  factory: _workloads:resnet18
  kwargs: {{classes: 1000}}
data:
  factory: _workloads:shapes
  kwargs: {{count: {images}, size: {size}}}
  batch_size: {batch_size}
attributions:
  ig: {{method: IntegratedGradients, params: {{n_steps: {ig_steps}}}, baseline: zeros}}
target: predicted
checks:
  - id: faithful
    fidelity: {{steps: {fidelity_steps}, orders: [mif, lif], gap: ">= -1"}}
"""


def bare_eager(model: nn.Module, passes: Passes, images: int, size: int, batch_size: int) -> float:
    """Seconds of the spec's passes without the plugin (default layout, eager): per batch, the
    forward-only passes under inference mode, then the passes with gradients (IG's scaled inputs)
    as forward and backward passes of ``batch_size`` inputs each."""
    generator = torch.Generator().manual_seed(0)
    alphas = (torch.arange(passes.with_gradient) + 0.5) / passes.with_gradient
    start = time.perf_counter()
    for first in range(0, images, batch_size):
        count = min(batch_size, images - first)
        batch = torch.rand(count, 3, size, size, generator=generator)
        with torch.inference_mode():
            for step in range(0, count * passes.forward_only, batch_size):
                chosen = torch.arange(step, min(step + batch_size, count * passes.forward_only)) % count
                model(batch[chosen]).softmax(dim=1)
        for step in range(0, count * passes.with_gradient, batch_size):
            chosen = torch.arange(step, min(step + batch_size, count * passes.with_gradient))
            scaled = (batch[chosen % count] * alphas[chosen // count].view(-1, 1, 1, 1)).requires_grad_(True)
            torch.autograd.grad(model(scaled)[:, 0].sum(), scaled)
    return time.perf_counter() - start


@dataclass
class Passes:
    """The network's inputs per image: forward-only ones, and ones with gradients (forward and
    backward)."""

    forward_only: int = 0
    with_gradient: int = 0


@contextlib.contextmanager
def counting(passes: Passes, images: int) -> Iterator[None]:
    """Count the inputs of every ResNet's forward pass meanwhile into ``passes`` (per image)."""
    seen = Passes()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, ResNet):
            if torch.is_grad_enabled():
                seen.with_gradient += len(inputs[0])
            else:
                seen.forward_only += len(inputs[0])

    handle = register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
    passes.forward_only, passes.with_gradient = seen.forward_only // images, seen.with_gradient // images


def run_pytest(folder: Path, targets: list[str], name: str, options: list[str]) -> tuple[float, dict[str, dict]]:
    """One in-process pytest run: (wall seconds, results by node id)."""
    report = folder / f"{name}.json"
    arguments = [
        *targets, "-q", "-p", "no:randomly", "--rootdir", str(folder), "-c", str(folder / "pytest.ini"),
        "--saliency-cache", "off", "--saliency-json", str(report),
        *(f"--saliency-set={option}" for option in options),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        pytest.main(arguments)
        seconds = time.perf_counter() - start
    results = json.loads(report.read_text())["results"] if report.exists() else []
    return seconds, {result["nodeid"]: result for result in results}


def differences(reference: dict[str, dict], other: dict[str, dict]) -> tuple[float, float, bool]:
    """(largest |Δ|, largest |Δ| / |reference| over reference values of at least 1e-3, every
    status the same) over the measurements."""
    largest = relative = 0.0
    same = reference.keys() == other.keys()
    for nodeid, result in reference.items():
        theirs = other.get(nodeid)
        if theirs is None:
            continue
        same = same and theirs["status"] == result["status"]
        for mine, its in zip(result["measurements"], theirs["measurements"], strict=False):
            a, b = mine.get("value"), its.get("value")
            if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b):
                largest = max(largest, abs(a - b))
                if abs(a) >= 1e-3:  # relative to values near zero says nothing
                    relative = max(relative, abs(a - b) / abs(a))
    return largest, relative, same


def write_spec(folder: Path, name: str, images: int, size: int, batch_size: int) -> None:
    text = SPEC.format(
        images=images, size=size, batch_size=batch_size, ig_steps=IG_STEPS, fidelity_steps=FIDELITY_STEPS
    )
    (folder / name).write_text(text)


def resnet_part(args: argparse.Namespace, folder: Path) -> None:
    write_spec(folder, "passes.saliency.yaml", args.images, args.size, args.batch_size)
    write_spec(folder, "warm-up.saliency.yaml", WARM_UP_IMAGES, args.size, args.batch_size)
    print(
        f"ResNet-18 (random, 1000 classes), {args.images} images of 3x{args.size}x{args.size}, batch_size "
        f"{args.batch_size}; IG {IG_STEPS} steps, MIF/LIF {FIDELITY_STEPS} steps; best of {args.repeats}",
        flush=True,
    )
    model = resnet18()
    passes = Passes()
    with counting(passes, WARM_UP_IMAGES):
        run_pytest(folder, ["warm-up.saliency.yaml"], "warm-up", VARIANTS["contiguous"])
    print(
        f"the spec's passes per image: {passes.forward_only} forward-only, {passes.with_gradient} forward and backward",
        flush=True,
    )
    bare_eager(model, passes, WARM_UP_IMAGES, args.size, args.batch_size)  # warm-up
    times: dict[str, list[float]] = {"bare eager": []}
    results: dict[str, dict[str, dict]] = {}
    for repeat in range(args.repeats):
        times["bare eager"].append(bare_eager(model, passes, args.images, args.size, args.batch_size))
        print(f"  repeat {repeat + 1}: bare eager {times['bare eager'][-1]:.2f} s", flush=True)
        for variant in args.variants:
            seconds, results[variant] = run_pytest(folder, ["passes.saliency.yaml"], variant, VARIANTS[variant])
            times.setdefault(variant, []).append(seconds)
            print(f"  repeat {repeat + 1}: {variant} {seconds:.2f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    bare = min(times["bare eager"])
    for variant in args.variants:
        line = f"spec_over_bare_eager[{variant}]: {min(times[variant]) / bare:.3f}"
        if variant != "contiguous" and "contiguous" in results:
            largest, relative, same = differences(results["contiguous"], results[variant])
            line += f"; vs contiguous: max |Δ| {largest:.2e}, max relative {relative:.2e}, same statuses {same}"
        print(line, flush=True)


def shipped_part(args: argparse.Namespace, folder: Path) -> None:
    for part in ("specs", "examples"):
        shutil.copytree(ROOT / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
    found = sorted((folder / "specs").glob("*.saliency.yaml")) + sorted((folder / "examples").glob("*.saliency.yaml"))
    specs = [path for path in found if path.name != "photos.saliency.yaml" or (ROOT / "examples/photos/data").is_dir()]
    sys.path.insert(0, str(folder))
    print(f"shipped specs: {', '.join(path.name for path in specs)}", flush=True)
    for spec in specs:
        target = [str(spec.relative_to(folder))]
        reference_time, reference = run_pytest(folder, target, "contiguous", VARIANTS["contiguous"])
        for variant in args.variants:
            if variant == "contiguous":
                continue
            seconds, other = run_pytest(folder, target, variant, VARIANTS[variant])
            largest, relative, same = differences(reference, other)
            print(
                f"  {spec.name} [{variant}]: max |Δ| {largest:.2e}, max relative {relative:.2e}, same statuses "
                f"{same}; {seconds / reference_time:.2f}x the contiguous run's time",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--shipped", action="store_true", help="compare the shipped specs instead of timing")
    args = parser.parse_args()
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="saliency-passes-") as name:
        folder = Path(name)
        (folder / "pytest.ini").write_text("[pytest]\n")
        os.chdir(folder)
        sys.path[:0] = [str(HERE), str(folder)]
        if args.shipped:
            shipped_part(args, folder)
        else:
            resnet_part(args, folder)
    print(f"load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
