"""Every output of a run: ``--saliency-json`` (:mod:`.results`), ``--saliency-report``
(:mod:`.html`) and ``--saliency-markdown`` / ``$GITHUB_STEP_SUMMARY`` (:mod:`.markdown`), all
from the one results document.

An interrupted run (Ctrl-C, or SIGTERM: :mod:`pytest_saliency.signals`) never replaces a
complete file with a partial one: the files it asked for are left as they were, and what ran is
written beside them as ``<name>.interrupted<suffix>`` (``saliency.interrupted.json``); the job
summary it appends to says that it is partial. A Ctrl-C while a file is being written leaves that
file as it was (writes are atomic) and ends the writing, without a traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .format import shown_path
from .html import ReportDependencyError, write_html
from .markdown import append_step_summary, markdown_summary, write_markdown
from .results import ItemResult, ResultsDocument, build_document, write_document

INTERRUPTED = ".interrupted"
"""What an interrupted run's files carry before their suffix."""


@dataclass
class RunOutputs:
    """What :func:`write_run_outputs` did: ``lines`` for the terminal, whether a file that was
    asked for is ``missing`` (could not be written), and whether the writing was ``interrupted``."""

    lines: list[str] = field(default_factory=list)
    missing: bool = False
    interrupted: bool = False

    def write(self, what: str, path: str, write: Callable[[], object], suffix: str = "", renders: bool = False) -> None:
        """Run ``write`` (which writes ``path``) and note the line for ``what``: the path, or why
        it could not be written (``missing``). With ``renders``, any error of the rendering is
        noted too: a rendering bug must not turn the run into an internal error."""
        shown = shown_path(path)
        try:
            write()
        except (OSError, ReportDependencyError) as error:
            self.lines.append(f"{what}: could not write {shown}: {error}")
            self.missing = True
        except Exception as error:
            if not renders:
                raise
            self.lines.append(f"{what}: could not render {shown}: {type(error).__name__}: {error}")
            self.missing = True
        else:
            self.lines.append(f"{what}: {shown}{suffix}")


def interrupted_path(path: str) -> str:
    """Where an interrupted run writes the file asked for at ``path``: ``a/saliency.json`` ->
    ``a/saliency.interrupted.json``."""
    target = Path(path)
    return str(target.with_name(f"{target.stem}{INTERRUPTED}{target.suffix}"))


def write_run_outputs(
    results: Iterable[ItemResult],
    *,
    report_path: str | None = None,
    json_path: str | None = None,
    markdown_path: str | None = None,
    step_summary: str | None = None,
    overrides: Iterable[str] = (),
    interrupted: bool = False,
) -> RunOutputs:
    """Write ``--saliency-json``, ``--saliency-report`` and ``--saliency-markdown`` for a run's
    results (beside them, :func:`interrupted_path`, for an ``interrupted`` run), and append the
    Markdown to the ``step_summary`` file. Never raises for an unwritable path, a missing Jinja2
    or a Ctrl-C: the test outcomes matter more than the report; the returned :class:`RunOutputs`
    says what happened, for the terminal and the exit status."""
    if interrupted:
        json_path = interrupted_path(json_path) if json_path else None
        report_path = interrupted_path(report_path) if report_path else None
        markdown_path = interrupted_path(markdown_path) if markdown_path else None
    document = build_document(results, artifacts=[shown_path(report_path)] if report_path else [], overrides=overrides)
    outputs = RunOutputs()
    run = " (partial: the run was interrupted; the file asked for is left as it was)" if interrupted else ""
    try:
        if json_path:
            outputs.write("saliency results (JSON)", json_path, lambda: write_document(json_path, document), run)
        if report_path:
            outputs.write(
                "saliency report (HTML)", report_path, lambda: write_html(report_path, document), run, renders=True
            )
        if markdown_path or step_summary:
            _markdown_outputs(document, markdown_path, step_summary, interrupted, outputs)
    except KeyboardInterrupt:
        outputs.lines.append("saliency reports: interrupted while writing; the files not written are left as they were")
        outputs.missing = outputs.interrupted = True
    return outputs


def _markdown_outputs(
    document: ResultsDocument, path: str | None, step_summary: str | None, interrupted: bool, outputs: RunOutputs
) -> None:
    counts = {status: count for status, count in document["summary"].items() if isinstance(count, int)}
    text = markdown_summary(document["results"], counts)
    if interrupted:
        text = "**The run was interrupted: these results are partial.**\n\n" + text
    for target, write, done in (
        (path, write_markdown, "saliency summary (Markdown)"),
        (step_summary, append_step_summary, "saliency summary (Markdown) appended to"),
    ):
        if target:
            outputs.write(done, target, partial(write, target, text))
