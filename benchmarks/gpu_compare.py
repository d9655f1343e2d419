"""The shipped specs on a GPU against the same specs on the CPU: the same items, the same
statuses, every measured value within a stated tolerance.

Runs every shipped spec (``specs/``, ``examples/*.saliency.yaml``; ``photos`` only when its data
has been made) with pytest in this process on ``--device`` (``-p no:cacheprovider``, so nothing
comes from the result cache) and writes ``--json``; the CPU side is ``--cpu-json`` when that file
exists, else it is run here first and written there. TF32: ``--tf32 off`` (default) sets
``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32`` to False, so the
GPU computes in full float32 and the values must agree within ``--tolerance`` (absolute, default
1e-3: the CPU and GPU kernels add in other orders); ``--tf32 on`` keeps PyTorch's defaults (TF32
convolutions on Ampere and later) and reports the differences. Exit code 1 when an item or status
differs, or a value is off by more than the tolerance::

    python benchmarks/gpu_compare.py --device cuda --json gpu.json --cpu-json cpu.json
    python benchmarks/gpu_compare.py --device cpu --json again.json --cpu-json cpu.json   # smoke, no GPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def shipped_specs() -> list[str]:
    found = sorted((ROOT / "specs").glob("*.saliency.yaml")) + sorted((ROOT / "examples").glob("*.saliency.yaml"))
    kept = [path for path in found if path.name != "photos.saliency.yaml" or (ROOT / "examples/photos/data").is_dir()]
    return [str(path.relative_to(ROOT)) for path in kept]


def run(specs: list[str], device: str, report: Path) -> int:
    """The specs on ``device`` with pytest in this process, results to ``report``: the exit code."""
    arguments = [*specs, "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--saliency-device", device]
    with contextlib.redirect_stdout(io.StringIO()):
        code = pytest.main([*arguments, f"--saliency-json={report}"])
    return int(code)


def compare(cpu: Path, other: Path, tolerance: float) -> bool:
    """Print the differences per spec; True when items, statuses and values agree."""
    expected = {result["nodeid"]: result for result in json.loads(cpu.read_text())["results"]}
    measured = {result["nodeid"]: result for result in json.loads(other.read_text())["results"]}
    agree = expected.keys() == measured.keys()
    if not agree:
        print(f"items differ: only on the CPU {sorted(expected.keys() - measured.keys())}, "
              f"only here {sorted(measured.keys() - expected.keys())}")  # fmt: skip
    by_spec: dict[str, tuple[float, int, int]] = {}
    for nodeid, result in expected.items():
        theirs = measured.get(nodeid)
        if theirs is None:
            continue
        spec = nodeid.split("::")[0]
        largest, statuses, values = by_spec.get(spec, (0.0, 0, 0))
        if theirs["status"] != result["status"]:
            statuses += 1
            print(f"  status differs: {nodeid}: {result['status']} on the CPU, {theirs['status']} here")
        for mine, its in zip(result["measurements"], theirs["measurements"], strict=False):
            a, b = mine.get("value"), its.get("value")
            if isinstance(a, float) and isinstance(b, float) and math.isfinite(a) and math.isfinite(b):
                largest = max(largest, abs(a - b))
                values += 1
        by_spec[spec] = (largest, statuses, values)
    for spec, (largest, statuses, values) in sorted(by_spec.items()):
        within = largest <= tolerance
        print(f"  {spec}: {values} values, max |Δ| {largest:.2e} ({'within' if within else 'OVER'} {tolerance:g}), "
              f"{statuses} statuses differ")  # fmt: skip
        agree = agree and within and not statuses
    return agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, required=True, help="where this device's results go")
    parser.add_argument("--cpu-json", type=Path, required=True, help="the CPU run's results (made when absent)")
    parser.add_argument("--tf32", choices=("off", "on"), default="off")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--specs", nargs="*", help="spec files relative to the repository (default: all shipped)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: use --device cpu for a smoke run")
    json_path, cpu_path = args.json.resolve(), args.cpu_json.resolve()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    specs = args.specs or shipped_specs()
    if not cpu_path.exists():
        print(f"CPU run of {len(specs)} specs -> {cpu_path}", flush=True)
        run(specs, "cpu", cpu_path)
    allow = args.tf32 == "on"
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"{args.device} ({where}), TF32 {args.tf32}: {len(specs)} specs -> {json_path}", flush=True)
    run(specs, args.device, json_path)
    agree = compare(cpu_path, json_path, args.tolerance)
    print(f"gpu_matches_cpu[tf32 {args.tf32}]: {agree}")
    raise SystemExit(0 if agree else 1)


if __name__ == "__main__":
    main()
