"""The example spec's streaming checks in-process and on a local Ray cluster, side by side.

Runs ``pytest specs/`` (the checks selected by ``-k``, Shared Interest and patterns by default)
once in-process and once with ``--saliency-ray --saliency-workers N``, each in a fresh pytest
process, and prints the wall times, their ratio, the time Ray takes to start a local cluster and
its actors, and whether the two ``--saliency-json`` files hold the same measurements.

    python benchmarks/ray_vs_local.py                     # 2 workers, shards of 32 samples
    python benchmarks/ray_vs_local.py --workers 4 --shard-size 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(arguments: list[str], output: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one pytest run over specs/ and its results by node id (without durations)."""
    command = [sys.executable, "-m", "pytest", "specs/", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    subprocess.run([*command, *arguments, "--saliency-json", str(output)], cwd=ROOT, check=False, capture_output=True)
    seconds = time.perf_counter() - start
    document = json.loads(output.read_text(encoding="utf-8"))
    results = {item["nodeid"]: {k: v for k, v in item.items() if k != "duration"} for item in document["results"]}
    return seconds, results


def cluster_start(workers: int) -> tuple[float, float]:
    """Seconds for ``ray.init()`` of a local cluster, then for ``workers`` actors that import torch."""
    import ray

    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    started = time.perf_counter()

    @ray.remote
    class Probe:
        def ready(self) -> str:
            import torch

            return torch.__version__

    ray.get([Probe.remote().ready.remote() for _ in range(workers)])  # type: ignore[attr-defined]
    ready = time.perf_counter()
    ray.shutdown()
    return started - start, ready - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("-k", default="object-coverage or no-distraction", help="the checks to run (pytest -k)")
    options = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; specs/ -k {options.k!r}, shards of {options.shard_size}")
    init, actors = cluster_start(options.workers)
    print(f"local cluster: ray.init {init:.1f} s, {options.workers} actors importing torch {actors:.1f} s")
    common = ["-k", options.k, "--saliency-set", f"data.shard_size={options.shard_size}"]
    with tempfile.TemporaryDirectory() as folder:
        local_s, local = run_pytest(common, Path(folder) / "local.json")
        ray_s, on_ray = run_pytest(
            [*common, "--saliency-ray", "--saliency-workers", str(options.workers)], Path(folder) / "ray.json"
        )
    same = local == on_ray and bool(local)
    print(f"in-process {local_s:.1f} s, Ray with {options.workers} workers {ray_s:.1f} s (ratio {ray_s / local_s:.2f})")
    print(f"{len(local)} items, the same results on both sides: {same}")


if __name__ == "__main__":
    main()
