"""Throughput of a spec on a GPU beside the bare forward and backward passes it needs.

The spec: torchvision's ResNet-50 (random weights, seeded; 1000 classes) on generated 3x224x224
images (``_workloads:shapes``), Integrated Gradients with 32 steps, and a fidelity check with MIF
and LIF curves of 20 steps. Per image that is 1 clean forward pass, 32 forward and backward
passes (the IG steps) and 2 x 21 forward passes (the curves' points), which is what the bare
loop times on the same model, device and batch size, without the plugin. Printed: the spec's
images/s (``python -m pytest`` in a subprocess with only this plugin; the items' time, which
includes loading the model and generating the images), the bare images/s, their ratio, and then
the same spec over every visible GPU through Ray (``--saliency-ray --saliency-workers <GPUs>``)
where Ray, several GPUs and those options are there (else one line says why it is skipped).

Run it on a GPU machine (under 5 minutes on one H100/H200-class GPU, 512 images)::

    pip install -e .          # torch, torchvision and captum; ray for the multi-GPU part
    python benchmarks/gpu.py

``python benchmarks/gpu.py --device cpu --images 16`` is a smoke run on a CPU: its images are
64x64 unless ``--size`` says otherwise, since ResNet-50 at 224x224 takes minutes per image on a
few cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import cpu_name
from _workloads import resnet50
from torch import nn

HERE = Path(__file__).resolve().parent
IG_STEPS = 32
FIDELITY_STEPS = 20
ORDERS = ("mif", "lif")

SPEC = """\
version: 1
name: gpu
model:
  factory: _workloads:resnet50
  kwargs: {{classes: 1000}}
data:
  factory: _workloads:shapes
  kwargs: {{count: {images}, size: {size}}}
  batch_size: {batch_size}
  shard_size: {shard_size}
attributions:
  ig: {{method: IntegratedGradients, params: {{n_steps: {ig_steps}}}, baseline: zeros}}
target: predicted
checks:
  - id: faithful
    fidelity: {{steps: {fidelity_steps}, orders: [{orders}], gap: ">= -1"}}
"""


def passes_per_image() -> tuple[int, int]:
    """(forward-only passes, forward and backward passes) the spec makes per image."""
    return 1 + len(ORDERS) * (FIDELITY_STEPS + 1), IG_STEPS


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_throughput(model: nn.Module, device: torch.device, images: int, size: int, batch_size: int) -> float:
    """Images/s of the spec's passes without the plugin, after one warm-up batch: per batch of
    ``batch_size`` images, the forward-only passes under inference mode, then the IG steps'
    ``images x steps`` scaled inputs as forward and backward passes of ``batch_size`` inputs each
    (captum's chunk: ``internal_batch_size`` defaults to ``data.batch_size``)."""
    forwards, steps = passes_per_image()
    generator = torch.Generator().manual_seed(0)
    alphas = (torch.arange(steps, device=device) + 0.5) / steps

    def one_batch(count: int) -> None:
        batch = torch.rand(count, 3, size, size, generator=generator).to(device)
        with torch.inference_mode():
            for _ in range(forwards):
                model(batch).softmax(dim=1)
        for first in range(0, count * steps, batch_size):  # input j: image j % count at step j // count
            chosen = torch.arange(first, min(first + batch_size, count * steps), device=device)
            scaled = (batch[chosen % count] * alphas[chosen // count].view(-1, 1, 1, 1)).requires_grad_(True)
            torch.autograd.grad(model(scaled)[:, 0].sum(), scaled)

    one_batch(min(batch_size, images))
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, images, batch_size):
        one_batch(min(batch_size, images - first))
    synchronize(device)
    return images / (time.perf_counter() - start)


def run_spec(folder: Path, args: argparse.Namespace, extra: list[str]) -> tuple[float, dict[str, int], str]:
    """Run the spec with pytest in a subprocess: (images/s over the items' time, outcome counts,
    the end of pytest's output)."""
    spec = folder / "gpu.saliency.yaml"
    spec.write_text(
        SPEC.format(
            images=args.images,
            size=args.size,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            ig_steps=IG_STEPS,
            fidelity_steps=FIDELITY_STEPS,
            orders=", ".join(ORDERS),
        )
    )
    report = folder / "gpu.json"
    report.unlink(missing_ok=True)
    env = dict(
        os.environ,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTEST_PLUGINS="pytest_saliency.plugin",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, "-m", "pytest", spec.name, "-q", "-p", "no:cacheprovider",
        "--saliency-json", report.name, *extra,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    outcomes: dict[str, int] = {}
    seconds = 0.0
    if report.exists():
        for result in json.loads(report.read_text()).get("results", []):
            outcomes[result["status"]] = outcomes.get(result["status"], 0) + 1
            seconds += result.get("duration") or 0.0
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-12:])
    return (args.images / seconds if seconds else float("nan")), outcomes, tail


def plugin_options() -> str:
    """The plugin's ``pytest --help`` text (to see which options this version has)."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTEST_PLUGINS="pytest_saliency.plugin")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout


def computed(outcomes: dict[str, int]) -> bool:
    """Every item ran to a decision (a failed loose threshold still measured everything)."""
    return bool(outcomes) and set(outcomes) <= {"passed", "failed"}


def show_spec(label: str, rate: float, outcomes: dict[str, int], tail: str) -> None:
    shown = ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items())) or "no results"
    if computed(outcomes):
        print(f"{label}: {rate:.2f} images/s ({shown})", flush=True)
    else:
        print(f"{label}: not measured, not every item was computed ({shown}); the end of pytest's output:")
        print("\n".join(f"    {line}" for line in tail.splitlines()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default; the first GPU) or cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, help="image side (default 224; 64 with --device cpu)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --device cpu --images 16 for a smoke run")
    args.size = args.size or (64 if device.type == "cpu" else 224)
    forwards, backwards = passes_per_image()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {os.cpu_count()} CPUs"
    print(f"device: {device} ({where}); torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(
        f"settings: ResNet-50 (random, 1000 classes), {args.images} images of 3x{args.size}x{args.size}, "
        f"batch_size {args.batch_size}, shard_size {args.shard_size}; IG {IG_STEPS} steps, fidelity "
        f"{'/'.join(ORDERS)} {FIDELITY_STEPS} steps: {forwards} forward + {backwards} forward+backward passes per image",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="saliency-gpu-") as name:
        folder = Path(name)
        spec_rate, outcomes, tail = run_spec(folder, args, ["--saliency-device", str(device)])
        show_spec("spec", spec_rate, outcomes, tail)
        model = resnet50().to(device)
        bare = bare_throughput(model, device, args.images, args.size, args.batch_size)
        del model
        print(f"bare passes: {bare:.2f} images/s")
        if computed(outcomes):
            print(f"spec_vs_bare: {spec_rate / bare:.3f} (1.0: the plugin costs nothing beyond the model's passes)")
        else:
            print("spec_vs_bare: not measured (see the spec's line above)")

        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if importlib.util.find_spec("ray") is None:
            print("ray: skipped (ray is not installed)")
        elif gpus < 2:
            print(f"ray: skipped ({gpus} GPU{'s' if gpus != 1 else ''} visible; it needs several)")
        elif "--saliency-ray" not in plugin_options():
            print("ray: unavailable (this version of the plugin has no --saliency-ray option)")
        else:
            extra = ["--saliency-ray", "--saliency-workers", str(gpus)]
            ray_rate, ray_outcomes, tail = run_spec(folder, args, extra)
            show_spec(f"spec on {gpus} GPUs through Ray", ray_rate, ray_outcomes, tail)
            if computed(outcomes) and computed(ray_outcomes):
                print(f"ray_speedup: {ray_rate / spec_rate:.2f} over one GPU ({gpus} GPUs)")


if __name__ == "__main__":
    main()
