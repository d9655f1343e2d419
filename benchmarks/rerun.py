"""Reruns with the persistent result cache: the shipped specs cold, warm, with one threshold
edited, and with ``--lf`` after that edit forced a failure, side by side in one process.

The shipped specs (``specs/`` and ``examples/*.saliency.yaml``; ``photos`` only when its data
has been made) are copied with what they read into a temporary folder, which is the rootdir of
every run. Each repeat:

1. **cold**: an empty cache folder, every shard computed (and stored);
2. **warm**: the same run again, every shard read from the cache;
3. **threshold edit**: one threshold of ``shapes.saliency.yaml`` made impossible (``gtc`` mean
   ``>= 0.2`` -> ``>= 0.99``), so its items fail;
4. **--lf**: the threshold restored and only the failed items run again;
5. **cold, json** and **warm, json**: 1 and 2 again from an empty cache, with ``--saliency-json``
   (which adds each item's example thumbnails: their maps come from the cache, the PNGs are
   drawn again).

Before the repeats one run with ``--saliency-cache off`` imports and warms up everything, so the
cold run's time is the computation, not Python's imports. Printed: each run's wall time, the
medians over the repeats of ``warm_over_cold``, ``threshold_edit_over_cold``, ``lf_over_cold``
(targets <= 0.15) and ``warm_over_cold_with_json``, and whether the JSON of the warm and cold
runs are identical (all but ``created`` and each item's ``duration``)::

    python benchmarks/rerun.py                 # 3 repeats
    python benchmarks/rerun.py --repeats 1 --specs specs/shapes.saliency.yaml    # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _timing import cpu_name

ROOT = Path(__file__).resolve().parent.parent
THRESHOLD = ('gtc: {mean: ">= 0.2"}', 'gtc: {mean: ">= 0.99"}')
EDITED = Path("specs/shapes.saliency.yaml")


def shipped_specs() -> list[Path]:
    """The shipped specs, relative to the repository; ``photos`` only when its data exists."""
    found = sorted((ROOT / "specs").glob("*.saliency.yaml")) + sorted((ROOT / "examples").glob("*.saliency.yaml"))
    kept = [path for path in found if path.name != "photos.saliency.yaml" or (ROOT / "examples/photos/data").is_dir()]
    return [path.relative_to(ROOT) for path in kept]


def run(folder: Path, specs: list[Path], name: str, *options: str) -> tuple[float, int, Path]:
    """One pytest session in this process: (wall seconds, exit code, its JSON file). The option
    ``--saliency-json`` alone writes ``<name>.json``."""
    report = folder / f"{name.replace(', ', '-')}.json"
    chosen = [f"--saliency-json={report}" if option == "--saliency-json" else option for option in options]
    arguments = [
        *map(str, specs), "-q", "-p", "no:randomly", "--rootdir", str(folder), "-c", str(folder / "pytest.ini"),
        "-o", f"cache_dir={folder / 'cache'}", *chosen,
    ]  # fmt: skip
    output = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(output):
        code = pytest.main(arguments)
    seconds = time.perf_counter() - start
    lines = output.getvalue().splitlines()
    cache_lines = [line for line in lines if line.startswith("saliency cache:")]
    print(f"  {name:>15}: {seconds:7.2f} s, exit {int(code)}; {'; '.join(cache_lines) or lines[-1]}", flush=True)
    return seconds, int(code), report


def comparable(path: Path) -> dict[str, object]:
    """A ``--saliency-json`` document without what differs between identical runs."""
    document = json.loads(path.read_text(encoding="utf-8"))
    document.pop("created", None)
    for result in document["results"]:
        result.pop("duration", None)
    return dict(document)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm/edit/--lf sequences (default 3)")
    parser.add_argument("--specs", nargs="*", type=Path, help="spec files relative to the repository (default: all)")
    args = parser.parse_args()
    specs = args.specs or shipped_specs()
    if EDITED not in specs:
        raise SystemExit(f"the threshold edit is made in {EDITED}: include it in --specs")
    load = os.getloadavg()[0]
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load {load:.2f}; python {sys.version.split()[0]}")
    print(f"specs: {', '.join(map(str, specs))}", flush=True)
    names = ("warm_over_cold", "threshold_edit_over_cold", "lf_over_cold", "warm_over_cold_with_json")
    ratios: dict[str, list[float]] = {name: [] for name in names}
    identical = []
    with tempfile.TemporaryDirectory(prefix="saliency-rerun-") as name:
        folder = Path(name)
        for part in ("specs", "examples"):
            shutil.copytree(ROOT / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
        (folder / "pytest.ini").write_text("[pytest]\n")
        os.chdir(folder)
        sys.path.insert(0, str(folder))
        print("warm-up (cache off):", flush=True)
        run(folder, specs, "warm-up", "--saliency-cache", "off")
        spec_file = folder / EDITED
        original = spec_file.read_text(encoding="utf-8")
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1} of {args.repeats}:", flush=True)
            shutil.rmtree(folder / "cache", ignore_errors=True)
            cold, _, _ = run(folder, specs, "cold")
            warm, _, _ = run(folder, specs, "warm")
            spec_file.write_text(original.replace(*THRESHOLD), encoding="utf-8")
            edited, _, _ = run(folder, specs, "threshold edit")
            spec_file.write_text(original, encoding="utf-8")
            last_failed, _, _ = run(folder, specs, "--lf", "--lf")
            shutil.rmtree(folder / "cache", ignore_errors=True)
            cold_json, cold_code, cold_file = run(folder, specs, "cold, json", "--saliency-json")
            warm_json, warm_code, warm_file = run(folder, specs, "warm, json", "--saliency-json")
            ratios["warm_over_cold"].append(warm / cold)
            ratios["threshold_edit_over_cold"].append(edited / cold)
            ratios["lf_over_cold"].append(last_failed / cold)
            ratios["warm_over_cold_with_json"].append(warm_json / cold_json)
            identical.append(warm_code == cold_code and comparable(warm_file) == comparable(cold_file))
    print(f"load at the end: {os.getloadavg()[0]:.2f}")
    for key, values in ratios.items():
        shown = ", ".join(f"{value:.3f}" for value in values)
        target = "" if key.endswith("json") else "; target <= 0.15"
        print(f"{key}: {statistics.median(values):.3f} (median of {len(values)}: {shown}{target})")
    print(f"json_identical_warm_vs_cold: {all(identical)} ({sum(identical)} of {len(identical)} repeats)")


if __name__ == "__main__":
    main()
