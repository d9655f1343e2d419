"""Reading an ``.npz`` data set by shards (``data.npz``) against loading it whole with ``np.load``.

Writes a float32 image data set of about ``--gigabytes`` (224x224 RGB, masks, labels) once with
``np.savez`` (stored) and a smaller one with ``np.savez_compressed``, then measures, each in a
fresh process (the peak RSS, ``VmHWM``, reset after the imports, minus the RSS then):

- ``shard0``: open the source and read shard 0 only;
- ``last``: open and read the last shard only (random access);
- ``pass``: one pass over every shard (what a run does), seconds per shard;
- ``np.load``: the peer, ``np.load(path)["images"]`` and the masks whole.

Warm: the file is in the page cache (just written or read). Cold: its pages are dropped first
with ``posix_fadvise(DONTNEED)`` (this file's pages only).

    python benchmarks/npz_shards.py                       # 1 GB stored, 256 MB compressed
    python benchmarks/npz_shards.py --gigabytes 0.25 --shard-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 224
ROW_BYTES = 3 * SIZE * SIZE * 4 + SIZE * SIZE  # a float32 image and its bool mask


def write(path: Path, count: int, compressed: bool) -> None:
    """``count`` images of a bright square on a smooth background (compressible, like real masks)."""
    ramp = np.linspace(0, 0.5, SIZE, dtype=np.float32)
    images = np.empty((count, 3, SIZE, SIZE), np.float32)
    images[:] = ramp[None, None, :] * ramp[None, :, None]
    masks = np.zeros((count, SIZE, SIZE), bool)
    for index in range(count):
        top, left = (7 * index) % (SIZE - 64), (13 * index) % (SIZE - 64)
        masks[index, top : top + 64, left : left + 64] = True
        images[index, index % 3, top : top + 64, left : left + 64] = 1.0
    save = np.savez_compressed if compressed else np.savez
    save(path, images=images, masks=masks, labels=np.arange(count) % 3)
    with open(path, "rb") as written:
        os.fsync(written.fileno())  # on disk before any timing: no write-back during the reads


def child(mode: str, path: Path, shard_size: int, cold: bool) -> dict[str, float]:
    """One measurement in this process (called through ``--child``)."""
    import torch  # noqa: F401  (imported before the baseline RSS, as a run has it)

    from pytest_saliency.loaders.data import open_source
    from pytest_saliency.spec.schema import DataSpec

    if cold:
        descriptor = os.open(path, os.O_RDONLY)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(descriptor)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM, the peak RSS, to the RSS now
    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    shards = 1
    if mode == "np.load":
        with np.load(path) as archive:
            images, masks = archive["images"], archive["masks"]
        assert images.shape[0] == masks.shape[0]
    else:
        source = open_source(DataSpec(npz=path.name), path.parent, [])
        ranges = [range(begin, min(begin + shard_size, len(source))) for begin in range(0, len(source), shard_size)]
        if mode == "shard0":
            source.read(ranges[0])
        elif mode == "last":
            source.read(ranges[-1])
        else:
            shards = len(ranges)
            for _ in source.stream(ranges):
                pass
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "per_shard": seconds / shards, "peak_mb": _status_mb("VmHWM") - baseline}


def _status_mb(key: str) -> float:
    """A memory figure of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def measure(mode: str, path: Path, shard_size: int, cold: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, str(path), str(shard_size), str(int(cold))]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    values: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the stored file (default 1)")
    parser.add_argument("--compressed-gigabytes", type=float, default=0.25, help="size of the data compressed (0.25)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        mode, path, shard_size, cold = arguments.child
        print(json.dumps(child(mode, Path(path), int(shard_size), cold == "1")))
        return
    with tempfile.TemporaryDirectory(dir=arguments.dir) as folder:
        for name, gigabytes, compressed in (
            ("stored", arguments.gigabytes, False),
            ("compressed", arguments.compressed_gigabytes, True),
        ):
            count = int(gigabytes * 2**30 / ROW_BYTES)
            path = Path(folder) / f"{name}.npz"
            write(path, count, compressed)
            print(f"{name}: {count} samples, file {path.stat().st_size / 2**20:.0f} MB, shard {arguments.shard_size}")
            for mode in ("shard0", "last", "pass", "np.load"):
                for cold in (False, True):
                    values = measure(mode, path, arguments.shard_size, cold)
                    print(
                        f"  {mode:8s} {'cold' if cold else 'warm'}: {values['seconds']:.3f} s"
                        f" ({values['per_shard'] * 1000:.0f} ms per shard), peak +{values['peak_mb']:.0f} MB RSS"
                    )
            path.unlink()


if __name__ == "__main__":
    main()
