"""Screenshots of the HTML report in headless Chromium (the README's picture, the report's tests).

``python -m pytest_saliency.report.screenshot results.json docs/report.png`` renders the report
of a ``--saliency-json`` file and saves what Chromium shows of it in a 1200×1600 window. The
browser runs with no network, no sync, no first-run or update machinery, and a throw-away
profile, so it works offline in CI containers (``--no-sandbox``: CI runs as root).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .._io import write_atomic

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SIZE = (1200, 1600)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The Chromium to use: ``$PYTEST_SALIENCY_CHROMIUM``, else the first of
    :data:`CHROMIUM_NAMES` on ``PATH``; None when there is none."""
    chosen = os.environ.get("PYTEST_SALIENCY_CHROMIUM")
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def screenshot(
    html: str | os.PathLike[str],
    png: str | os.PathLike[str],
    *,
    size: tuple[int, int] = SIZE,
    chromium: str | None = None,
    timeout: float = 180.0,
) -> Path:
    """Open ``html`` (a file) in headless Chromium and save a ``size`` screenshot to ``png``
    (written atomically). Raises FileNotFoundError when no Chromium is installed and
    RuntimeError when it fails or writes no picture."""
    browser = chromium or find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium, or set PYTEST_SALIENCY_CHROMIUM)")
    target = Path(png)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="saliency-chromium-") as folder:
        shot = Path(folder) / "shot.png"
        command = [
            browser,
            *FLAGS,
            f"--user-data-dir={Path(folder) / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            Path(html).resolve().as_uri(),
        ]
        try:
            finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{browser} took longer than {timeout:.0f} s to take the screenshot") from None
        if finished.returncode != 0 or not shot.is_file():
            tail = "\n".join((finished.stderr or finished.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"{browser} exited with {finished.returncode} and no screenshot:\n{tail}")
        write_atomic(target, shot.read_bytes())
    return target


def _to_palette(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as picture:
        quantized = picture.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    quantized.save(buffer, format="PNG", optimize=True)
    write_atomic(png, buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_saliency.report.screenshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", type=Path, help="a results file written by pytest --saliency-json")
    parser.add_argument("png", type=Path, help="the screenshot to write")
    parser.add_argument("--width", type=int, default=SIZE[0])
    parser.add_argument("--height", type=int, default=SIZE[1])
    parser.add_argument("--html", type=Path, default=None, help="also keep the rendered report here")
    parser.add_argument("--expand", action="store_true", help="open the passing checks too")
    parser.add_argument(
        "--palette", action="store_true", help="store a 256-colour PNG (about half the size; for committing)"
    )
    arguments = parser.parse_args(argv)

    from .html import write_html
    from .results import load_document

    document = load_document(arguments.results)
    with tempfile.TemporaryDirectory(prefix="saliency-report-") as folder:
        html = arguments.html or Path(folder) / "report.html"
        write_html(html, document, expand=arguments.expand)
        try:
            screenshot(html, arguments.png, size=(arguments.width, arguments.height))
        except (FileNotFoundError, RuntimeError) as error:
            print(f"screenshot: {error}", file=sys.stderr)
            return 1
    if arguments.palette:
        _to_palette(arguments.png)
    print(f"screenshot: {arguments.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
