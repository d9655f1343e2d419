"""Peak memory of a spec run against the number of images: the streaming engine's memory bound.

One spec (a seeded 10-class CNN at 3x224x224, ``Saliency``, the checks of ``CHECKS``) runs on a
small and on a large data set, each as its own ``python -m pytest`` subprocess with only this
plugin loaded; the peak resident set size of each child comes from ``os.wait4`` (that child's own
rusage, so every run has its own maximum). Printed: both peaks, their ratio (target <= 1.5: the
memory must not grow with the data) and the growth per image in KB.

The images come from ``_workloads:shapes``, a Dataset that makes each image from its index
(seeded noise and a shape with its ground-truth mask), so nothing big is stored;
``--source npz`` writes the same samples to an uncompressed ``.npz`` in a temporary folder first
and measures reading that instead; ``--source jpeg`` writes a folder of 500x375 JPEGs with a
boxes CSV (``_workloads:write_jpeg_folder``) and reads it through ``data.folder`` with
``data.transform: {resize: SIZE, center_crop: SIZE}`` (default 256 vs 5,000 images);
``--source detection`` writes ``examples/objects`` images (two shapes per 48x48 image, the size is
fixed) to a compressed ``.npz`` and runs ``task: detection`` with the shipped
``detector_clean.pt``: a sample per object (default 256 vs 2,048 images).

Run: ``python benchmarks/memory.py`` (256 vs 4,096 images), ``--quick`` (64 vs 256 at 64x64,
under a minute), ``--images 20000`` (one run of 20,000 images: completed, time, peak RSS),
``--checks shared_interest,patterns,fidelity`` to add checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _timing import cpu_name
from _workloads import write_jpeg_folder, write_npz

HERE = Path(__file__).resolve().parent

# The checks a run can include, by kind; thresholds are loose on purpose: the outcome does not
# matter here, only that every item is computed. Add a kind here to measure it too.
CHECKS: dict[str, str] = {
    "shared_interest": """\
  - id: coverage
    shared_interest: {gtc: {mean: ">= 0"}, iou: {mean: ">= 0"}, sc_continuous: {mean: ">= 0"}}""",
    "patterns": """\
  - id: behaviour
    patterns: {max_fraction: {distractor: 1.0}}""",
    "fidelity": """\
  - id: faithful
    fidelity: {steps: 5, orders: [mif, lif], gap: ">= -1"}""",
}
DEFAULT_CHECKS = ("shared_interest", "patterns")

SPEC = """\
version: 1
name: memory
model:
  factory: _workloads:small_cnn
  kwargs: {{classes: 10}}
data:
  {data}
  batch_size: {batch_size}
  shard_size: {shard_size}
attributions:
  grad: {{method: Saliency, params: {{abs: true}}}}
target: predicted
checks:
{checks}
"""


DETECTION_SPEC = """\
version: 1
name: memory-detection
task: detection
model:
  factory: examples.objects.model:build_detector
  weights: {weights}
data:
  npz: {npz}
  batch_size: {batch_size}
  shard_size: {shard_size}
attributions:
  grad: {{method: Saliency, params: {{abs: true}}}}
checks:
{checks}
"""


@dataclass
class Run:
    images: int
    seconds: float
    item_seconds: float
    peak_rss_kb: int
    returncode: int
    outcomes: dict[str, int]


def write_spec(folder: Path, images: int, size: int, checks: list[str], args: argparse.Namespace) -> Path:
    """A spec over ``images`` samples of ``size``x``size`` with ``checks`` (keys of CHECKS)."""
    if args.source == "detection":
        from examples.objects.data import make_objects, save_npz

        npz = folder / f"objects-{images}.npz"
        save_npz(npz, make_objects(images, seed=2))
        path = folder / f"memory-{images}.saliency.yaml"
        weights = HERE.parent / "examples" / "objects" / "detector_clean.pt"
        text = DETECTION_SPEC.format(
            weights=weights,
            npz=npz.name,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            checks="\n".join(CHECKS[name] for name in checks),
        )
        path.write_text(text)
        return path
    if args.source == "npz":
        npz = folder / f"shapes-{images}-{size}.npz"
        free = shutil.disk_usage(folder).free
        needed = images * (3 + 1) * size * size
        if needed * 1.1 > free:
            raise SystemExit(f"{npz}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free in {folder}")
        if not npz.exists():
            start = time.perf_counter()
            write_npz(npz, images, size)
            print(f"wrote {npz} ({npz.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s", flush=True)
        data = f"npz: {npz.name}"
    elif args.source == "jpeg":
        jpegs = folder / f"jpegs-{images}"
        if not jpegs.exists():
            start = time.perf_counter()
            write_jpeg_folder(jpegs, images)
            print(f"wrote {images} JPEGs of 500x375 in {time.perf_counter() - start:.1f} s", flush=True)
        data = (
            f"folder: {{images: {jpegs.name}/images, labels: {jpegs.name}/labels.csv, boxes: {jpegs.name}/boxes.csv}}\n"
            f"  transform: {{resize: {size}, center_crop: {size}}}"
        )
    else:
        data = f"factory: _workloads:shapes\n  kwargs: {{count: {images}, size: {size}}}"
    path = folder / f"memory-{images}.saliency.yaml"
    path.write_text(
        SPEC.format(
            data=data,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            checks="\n".join(CHECKS[name] for name in checks),
        )
    )
    return path


def measure(spec: Path, images: int, device: str) -> Run:
    """Run pytest on ``spec`` in a fresh subprocess: its wall time, peak RSS (KB) and outcomes."""
    report = spec.with_suffix(".json")
    env = dict(
        os.environ,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTEST_PLUGINS="pytest_saliency.plugin",
        PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, "-m", "pytest", spec.name, "-q", "-p", "no:cacheprovider",
        "--saliency-json", report.name, "--saliency-device", device,
    ]  # fmt: skip
    start = time.perf_counter()
    with open(spec.with_suffix(".log"), "w") as log:
        child = subprocess.Popen(command, cwd=spec.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen so
    outcomes: dict[str, int] = {}
    item_seconds = 0.0  # the tests themselves (the pass over the data is in the first one)
    if report.exists():
        for result in json.loads(report.read_text()).get("results", []):
            outcomes[result["status"]] = outcomes.get(result["status"], 0) + 1
            item_seconds += result.get("duration") or 0.0
    # ru_maxrss is in KB on Linux and in bytes on macOS
    peak = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return Run(images, seconds, item_seconds, peak, child.returncode, outcomes)


def show(run: Run, spec: Path) -> None:
    outcomes = ", ".join(f"{count} {name}" for name, count in sorted(run.outcomes.items())) or "no results"
    print(
        f"{run.images:>6} images: peak RSS {run.peak_rss_kb / 1024:8.1f} MB, {run.seconds:7.1f} s in all, "
        f"{run.item_seconds:7.1f} s in the tests ({run.images / max(run.item_seconds, 1e-9):.1f} images/s), "
        f"pytest exit {run.returncode}, {outcomes}",
        flush=True,
    )
    if run.returncode not in (0, 1) or not run.outcomes:  # 1: some loose threshold failed, still measured
        tail = spec.with_suffix(".log").read_text().splitlines()[-15:]
        print("  the run did not complete; the end of its output:", *(f"    {line}" for line in tail), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 vs 256 images at 64x64")
    parser.add_argument("--images", type=int, help="one run of this many images (e.g. 20000) instead of the pair")
    parser.add_argument("--large", action="store_true", help="the same as --images 20000")
    parser.add_argument("--small", type=int, help="the smaller data set (default 256; --quick 64)")
    parser.add_argument("--big", type=int, help="the larger data set (default 4096; --quick 256)")
    parser.add_argument("--size", type=int, help="image side in pixels (default 224; --quick 64)")
    parser.add_argument("--source", choices=("factory", "npz", "jpeg", "detection"), default="factory")
    parser.add_argument("--checks", default=",".join(DEFAULT_CHECKS), help=f"comma-separated, of {', '.join(CHECKS)}")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="--saliency-device of the runs (default cpu)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (specs, logs, JSON)")
    args = parser.parse_args()
    checks = [name.strip() for name in args.checks.split(",") if name.strip()]
    unknown = [name for name in checks if name not in CHECKS]
    if unknown:
        parser.error(f"--checks: unknown {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    size = 48 if args.source == "detection" else args.size or (64 if args.quick else 224)
    single = 20000 if args.large else args.images
    counts = (
        [single]
        if single
        else [
            args.small or (64 if args.quick else 256),
            args.big
            or (256 if args.quick else 5000 if args.source == "jpeg" else 2048 if args.source == "detection" else 4096),
        ]
    )

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(
        f"settings: images {' vs '.join(map(str, counts))} of 3x{size}x{size}, source {args.source}, "
        f"shard_size {args.shard_size}, batch_size {args.batch_size}, methods [grad: Saliency(abs)], "
        f"checks {checks}, device {args.device}"
    )
    folder = Path(tempfile.mkdtemp(prefix="saliency-memory-"))
    try:
        runs = []
        for count in counts:
            spec = write_spec(folder, count, size, checks, args)
            run = measure(spec, count, args.device)
            show(run, spec)
            runs.append(run)
        if len(runs) == 2:
            small, big = runs
            ratio = big.peak_rss_kb / small.peak_rss_kb
            growth = (big.peak_rss_kb - small.peak_rss_kb) / (big.images - small.images)
            print(f"peak_rss_ratio ({big.images}/{small.images}): {ratio:.3f} (target <= 1.5)")
            print(f"growth per image: {growth:.1f} KB/image")
        else:
            (run,) = runs
            completed = run.returncode in (0, 1) and bool(run.outcomes)
            print(f"completed: {completed}, {run.seconds:.1f} s, peak RSS {run.peak_rss_kb / 1024:.1f} MB")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
