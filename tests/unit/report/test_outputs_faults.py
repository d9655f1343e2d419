"""Run outputs under faults: a Ctrl-C while writing, an interrupted run's partial files, SIGTERM
taken for Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pytest_saliency import _io
from pytest_saliency.report.outputs import interrupted_path, write_run_outputs
from pytest_saliency.signals import handle_sigterm_as_interrupt

RESULT = {
    "nodeid": "specs/x.saliency.yaml::cov[grad]",
    "spec": "x",
    "check": "cov",
    "kind": "shared_interest",
    "method": "grad",
    "status": "passed",
    "measurements": [],
}


def test_interrupted_paths_sit_beside_the_asked_for_ones() -> None:
    assert interrupted_path("out/saliency.json") == "out/saliency.interrupted.json"
    assert interrupted_path("report.html") == "report.interrupted.html"
    assert interrupted_path("results") == "results.interrupted"


def test_an_interrupted_run_writes_beside_and_leaves_the_complete_file(tmp_path: Path) -> None:
    complete = tmp_path / "saliency.json"
    complete.write_text("complete")
    outputs = write_run_outputs([RESULT], json_path=str(complete), interrupted=True)
    assert complete.read_text() == "complete" and not outputs.missing and not outputs.interrupted
    assert '"total": 1' in (tmp_path / "saliency.interrupted.json").read_text()
    assert outputs.lines[0].endswith("(partial: the run was interrupted; the file asked for is left as it was)")


def test_ctrl_c_while_writing_leaves_the_old_file_and_stops_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_json, old_html = tmp_path / "r.json", tmp_path / "r.html"
    old_json.write_text("old json")
    old_html.write_text("old html")

    def interrupted(handle: object, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_io, "write_all", interrupted)
    outputs = write_run_outputs([RESULT], json_path=str(old_json), report_path=str(old_html))
    assert outputs.interrupted and outputs.missing
    assert outputs.lines == ["saliency reports: interrupted while writing; the files not written are left as they were"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.html", "r.json"]  # no temporary file left
    assert old_json.read_text() == "old json" and old_html.read_text() == "old html"


def test_sigterm_raises_keyboard_interrupt_once_and_the_handler_is_given_back() -> None:
    found = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        restore = handle_sigterm_as_interrupt()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs before this ends
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second SIGTERM ends the process
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        restore()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

        def own(signum: int, frame: object) -> None:
            """A handler of the user's own."""

        signal.signal(signal.SIGTERM, own)  # stays
        handle_sigterm_as_interrupt()
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, found)
