"""Interrupted runs (Ctrl-C, SIGTERM from a cancelled CI job) and reports that cannot be written.

An interrupted run leaves the complete ``--saliency-json`` / ``--saliency-report`` files of an
earlier run untouched and writes what ran beside them (``saliency.interrupted.json``); its exit
status is 2 and its output shows the outcomes of what ran, without a traceback. Under
``--saliency-ray`` a SIGTERM ends the actors and the local cluster the run started: no process
is left. A report that cannot be written makes a passing run exit 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

WriteSpec = Callable[..., Path]

SLOW = '''\
"""The tiny model, announcing (in a file) the process that builds it, then taking a minute per batch."""
import os
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from tinymodel import build


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = build()

    def forward(self, x):
        time.sleep(60)
        return self.inner(x)


def slow(marker):
    Path(marker).write_text(str(os.getpid()))
    return Slow()
'''
OUTPUTS = ("--saliency-json=saliency.json", "--saliency-report=saliency.html")


def interrupted_project(write_spec: WriteSpec, project: pytest.Pytester) -> tuple[Path, dict[str, bytes]]:
    """Two specs and the complete reports of a first run of both; then ``b``'s model made slow.
    Returns the marker file the slow model writes and the complete reports' bytes."""
    write_spec("a")
    write_spec("b")
    project.runpytest_inprocess(*OUTPUTS).assert_outcomes(passed=2)
    complete = {name: (project.path / name).read_bytes() for name in ("saliency.json", "saliency.html")}
    assert json.loads(complete["saliency.json"])["summary"]["total"] == 2
    project.makepyfile(slowmodel=SLOW)
    marker = project.path / "building.txt"
    write_spec("b", model=f"factory: slowmodel:slow\nkwargs: {{marker: '{marker}'}}")
    return marker, complete


def interrupt(process: subprocess.Popen[str], marker: Path, signum: int) -> str:
    """Send ``signum`` once the slow model is built (and so computing), and return the output."""
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, read(process)
        assert time.monotonic() < deadline, "the slow model was never built"
        time.sleep(0.2)
    time.sleep(1.0)  # into the forward pass
    process.send_signal(signum)
    process.wait(timeout=120)
    return read(process)


def read(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.read()


def assert_reports_left_whole(project: pytest.Pytester, complete: dict[str, bytes], output: str) -> None:
    assert {name: (project.path / name).read_bytes() for name in complete} == complete, output
    partial = json.loads((project.path / "saliency.interrupted.json").read_text())
    assert partial["summary"]["total"] == 1 and partial["results"][0]["nodeid"].startswith("specs/a.saliency.yaml")
    assert (project.path / "saliency.interrupted.html").is_file()
    assert "saliency results (JSON): saliency.interrupted.json (partial: the run was interrupted" in output
    assert "Traceback" not in output and "1 passed" in output, output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_the_complete_reports_and_writes_what_ran_beside_them(
    write_spec: WriteSpec, project: pytest.Pytester, signum: int
) -> None:
    marker, complete = interrupted_project(write_spec, project)
    process = project.popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *OUTPUTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = interrupt(process, marker, signum)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert_reports_left_whole(project, complete, output)


def processes_mentioning(text: str) -> list[str]:
    """The command lines of the running processes that hold ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not a process
            continue
        if entry.name.isdigit() and text in command:
            found.append(command)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc")
def test_sigterm_under_ray_ends_the_actors_and_the_cluster_it_started(
    write_spec: WriteSpec, project: pytest.Pytester, helpers: SimpleNamespace
) -> None:
    pytest.importorskip("ray")
    marker, complete = interrupted_project(write_spec, project)
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as ray_folder:  # short: Ray's sockets live there
        process = project.popen(
            [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "--saliency-ray", *OUTPUTS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "RAY_TMPDIR": ray_folder},
        )
        output = interrupt(process, marker, signal.SIGTERM)
        assert int(marker.read_text()) != process.pid  # the slow model ran in an actor
        assert process.returncode == pytest.ExitCode.INTERRUPTED, output
        assert_reports_left_whole(project, complete, output)
        deadline = time.monotonic() + 30
        while processes_mentioning(ray_folder) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_mentioning(ray_folder) == []


def test_a_report_that_cannot_be_written_fails_a_passing_run_after_its_outcomes(
    write_spec: WriteSpec, project: pytest.Pytester
) -> None:
    write_spec("a")
    (project.path / "blocked").write_text("a file where a folder belongs")
    result = project.runpytest_inprocess("--saliency-json=blocked/saliency.json")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*saliency summary*", "saliency results (JSON): could not write blocked/saliency.json: *"]
    )
