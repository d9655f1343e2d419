"""Collection tree: spec file -> one item per check x attribution method (x class or slice
value); a check that uses no attribution (``region``) gives one item (per class or slice)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from ._constants import spec_stem
from .errors import CheckFailed, DeviceUnavailable, SaliencyWarning, SpecInvalid
from .report.junit import junit_properties
from .session import SESSION_KEY

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle  # pytest's own signature of repr_failure

    from .baselines import BaselineSettings
    from .checks.outcome import Outcome
    from .engine import SpecEngine
    from .report.results import ItemResult, OutcomeResult, Status
    from .spec import CheckSpec, LoadedSpec, SpecProblem
    from .spec.schema import Spec
    from .streaming import PassResult, Plan


DEBUG_HINT = "(--saliency-debug shows the traceback)"


def invocation_relative(config: pytest.Config, path: Path) -> str:
    """``path`` relative to where pytest was invoked, as pytest shows locations."""
    try:
        return os.path.relpath(path, config.invocation_params.dir)
    except ValueError:  # another drive on Windows
        return str(path)


class SpecFile(pytest.File):
    """A ``*.saliency.yaml`` file. Its engine (model, data, attributions) is built lazily by the
    first item that runs and kept in a small LRU, so any order of items computes it once."""

    loaded: LoadedSpec

    def collect(self) -> Iterator[pytest.Item]:
        from .spec import SpecError, load_spec

        session = self.config.stash[SESSION_KEY]
        try:
            self.loaded = load_spec(
                self.path,
                display=invocation_relative(self.config, self.path),
                overrides=session.overrides,
                base=self.config.invocation_params.dir,
            )
        except SpecError as error:
            yield SpecErrorItem.from_parent(self, name="spec", problems=error.problems)
            return
        spec = self.loaded.spec
        marks, problems = self._marks()
        if problems:
            yield SpecErrorItem.from_parent(self, name="spec", problems=problems)
            return
        for index, check in enumerate(spec.checks):
            slices = self.loaded.slice_values(index) if check.config.slicing else None
            for name, method, class_index, slice_value in _variants(
                spec.attributions, self.loaded.classes, check, slices
            ):
                # The id is given as a string so that pytest parses "check[variant]" the way it
                # parses the ids it reads back from its cache: pytest 9.2 keeps the brackets of a
                # plain name as part of the name, and --lf then no longer finds failed checks.
                item = CheckItem.from_parent(
                    self,
                    name=name,
                    nodeid=f"{self.nodeid}::{name}",
                    check_index=index,
                    method=method,
                    class_index=class_index,
                    slice_value=slice_value,
                )
                for mark in marks[check.id]:
                    item.add_marker(mark)
                yield item

    def _marks(self) -> tuple[dict[str, list[pytest.MarkDecorator]], list[SpecProblem]]:
        """Each check's marks, looked up as ``pytest.mark.<name>`` does; an unregistered name
        warns at its line in the spec (not inside pytest), or is a spec error under
        ``--strict-markers`` (rather than a collection error that stops the whole run)."""
        marks: dict[str, list[pytest.MarkDecorator]] = {}
        problems: list[SpecProblem] = []
        for index, check in enumerate(self.loaded.spec.checks):
            marks[check.id] = []
            for position, name in enumerate(check.marks):
                location = ("checks", index, "marks", position)
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", pytest.PytestUnknownMarkWarning)
                        marks[check.id].append(getattr(pytest.mark, name))
                except pytest.fail.Exception as error:
                    problems.append(self.loaded.problem(location, str(error)))
                    continue
                for warning in caught:
                    line, _ = self.loaded.source.value(location)
                    warnings.warn_explicit(warning.message, warning.category, str(self.loaded.path), line)
        return marks, problems

    def engine(self) -> SpecEngine:
        from .engine import SpecEngine, resolve_device

        session = self.config.stash[SESSION_KEY]
        try:
            device = resolve_device(session.device)
        except RuntimeError as error:  # no CUDA here, or not a device name at all
            message = str(error).strip().splitlines()[0]
            if not message.startswith("--saliency-device"):
                message = f"--saliency-device {session.device}: {message}"
            raise DeviceUnavailable(message) from None
        key = (str(self.path), self.path.stat().st_mtime_ns, str(device))
        search_paths = (self.config.rootpath,)
        return session.engines.get(
            key,
            lambda: SpecEngine(
                self.loaded,
                device,
                search_paths,
                progress=session.progress,
                runner=session.runner,
                result_cache=session.result_cache,
            ),
        )

    def plan(self) -> Plan:
        """What this spec's items selected in the run need (``-k`` and ``--lf`` leave the others
        out, so they cost nothing), in spec order."""
        from .streaming import Need, Plan

        needs = [
            Need(item.check_index, item.method)
            for item in self.session.items
            if isinstance(item, CheckItem) and item.parent is self
        ]
        return Plan(tuple(dict.fromkeys(sorted(needs, key=lambda need: need.check_index))))


def _variants(
    attributions: Mapping[str, object], classes: list[str] | None, check: CheckSpec, slices: list[str] | None = None
) -> Iterator[tuple[str, str | None, int | None, str | None]]:
    """``(item name, method, class index, slice value)`` for each item a check expands into:
    ``check[method-class]``, ``check[method-field=value]`` with ``slices``."""
    config = check.config
    methods: list[str | None] = list(config.methods or attributions) if config.uses_attributions else [None]
    class_indices: list[int | None] = list(range(len(classes))) if config.by_class and classes else [None]
    by = config.slicing.by if config.slicing else None
    values: list[str | None] = list(slices) if slices is not None else [None]
    for method in methods:
        for class_index in class_indices:
            for value in values:
                named = classes[class_index] if class_index is not None and classes else None
                parts = [part for part in (method, named, f"{by}={value}" if value is not None else None) if part]
                yield (f"{check.id}[{'-'.join(parts)}]" if parts else check.id), method, class_index, value


class SpecErrorItem(pytest.Item):
    """Stands for a spec file with errors: fails with one ``path:line:col: message`` line each."""

    def __init__(self, *, problems: list[SpecProblem], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problems = problems

    def runtest(self) -> None:
        raise SpecInvalid()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None) -> str:
        return "\n".join(str(problem) for problem in self.problems)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.problems[0].line - 1, "spec error"

    def saliency_result(self) -> ItemResult:
        return {
            "nodeid": self.nodeid,
            "line": self.problems[0].line,
            "spec": spec_stem(self.path),  # as CheckItem names it when the spec has no name
            "spec_path": self.problems[0].path,
            "check": "spec",
            "kind": None,
            "variant": "",
            "method": None,
            "class_index": None,
            "severity": "fail",
            "status": "error",
            "samples": 0,
            "undefined": 0,
            "measurements": [],
            "message": str(self.problems[0]),
        }


SKIPPED_SHOWN = 5
"""How many skipped samples an item's details name."""


def with_skipped_samples(outcome: Outcome, skipped: list[str]) -> Outcome:
    """``outcome`` with the samples the source skipped (``data.on_bad_sample: skip``) named in
    its details and listed under ``skipped``; as it is when none was skipped."""
    if not skipped:
        return outcome
    shown = "; ".join(skipped[:SKIPPED_SHOWN]) + ("; ..." if len(skipped) > SKIPPED_SHOWN else "")
    count = len(skipped)
    line = f"{count} bad sample{'s' if count != 1 else ''} skipped (on_bad_sample): {shown}"
    return outcome.extended([line], {"skipped": skipped})


def with_missed_samples(outcome: Outcome, spec: Spec, merged: PassResult) -> Outcome:
    """Detection, segmentation: ``outcome`` with the objects or class regions the model missed
    (they have no scores) named in its details and listed under ``missed``, and the spec's
    ``max_missed`` as one more measurement."""
    from dataclasses import replace

    from .checks.outcome import Measurement
    from .spec.schema import Threshold

    total = len(merged) + len(merged.missed)
    rate = len(merged.missed) / total if total else 0.0
    if merged.missed:
        shown = "; ".join(merged.missed[:SKIPPED_SHOWN]) + ("; ..." if len(merged.missed) > SKIPPED_SHOWN else "")
        noun = "objects" if spec.task == "detection" else "class regions"
        line = f"{len(merged.missed)} of {total} {noun} missed by the model: {shown}"
        outcome = outcome.extended([line], {"missed": merged.missed})
    limit = spec.detection.max_missed if spec.task == "detection" else spec.segmentation.max_missed
    if limit is None:
        return outcome
    gate = Measurement.compare("missed (share of samples)", rate, Threshold("<=", limit), samples=total)
    return replace(outcome, measurements=[*outcome.measurements, gate])


class CheckItem(pytest.Item):
    """One check for one attribution method (and class)."""

    parent: SpecFile

    def __init__(
        self,
        *,
        check_index: int,
        method: str | None,
        class_index: int | None,
        slice_value: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check_index = check_index
        self.method = method
        self.class_index = class_index
        self.slice_value = slice_value
        self.outcome: Outcome | None = None
        self.weights: dict[str, str] | None = None
        self.model_source: dict[str, object] | None = None

    @property
    def check(self) -> CheckSpec:
        return self.parent.loaded.spec.checks[self.check_index]

    @property
    def variant(self) -> str:
        return self.name[len(self.check.id) + 1 : -1] if self.name != self.check.id else ""

    def runtest(self) -> None:
        """Compute (once per spec), decide, add what the reports show, then pass, warn or fail."""
        from .memo import deciding_with

        session = self.config.stash[SESSION_KEY]
        engine = self.parent.engine()
        merged = self._merged_statistics(engine)
        cache = session.result_cache  # intervals, clusters and thumbnails made before are reused
        with deciding_with(None if cache is None else cache.remember):
            outcome = self._decide(engine, merged, session.baselines)
            if self.method in merged.notes:  # the layer that layer: auto picked, guided methods on GELUs
                outcome = outcome.extended([f"{self.method}: {merged.notes[self.method]}"])
            outcome = with_skipped_samples(outcome, merged.skipped)
            if engine.spec.task != "classification":
                outcome = with_missed_samples(outcome, engine.spec, merged)
            if session.wants_thumbnails:
                outcome = self._with_thumbnails(engine, outcome)
        self.outcome, self.weights, self.model_source = outcome, engine.weights_file, engine.model_source
        self.user_properties += junit_properties(outcome, self._status())
        self._verdict(outcome, session.strict)

    def _merged_statistics(self, engine: SpecEngine) -> PassResult:
        """The merged per-sample statistics of the spec's pass, this item's need included."""
        from .streaming import Need, Plan

        return engine.result(self.parent.plan() + Plan((Need(self.check_index, self.method),)))

    def _decide(self, engine: SpecEngine, merged: PassResult, baselines: BaselineSettings) -> Outcome:
        """The check kind's outcome for this item, decided by point or by interval."""
        from .checks.kind import ItemScope
        from .checks.registry import kind_of

        scope = ItemScope(self.method, self.class_index, self.slice_value)
        outcome = kind_of(self.check).outcome(engine, self.check, scope, merged, baselines)
        return outcome.decided(engine.spec.decide_for(self.check))

    def _with_thumbnails(self, engine: SpecEngine, outcome: Outcome) -> Outcome:
        """``outcome`` with example thumbnails for the HTML report, made here (on the xdist worker,
        where the tensors are) so that they travel back with the result; the samples are read
        again by the engine (:func:`~pytest_saliency.report.thumbnails.with_thumbnails`). A
        failure only loses them."""
        from .report.thumbnails import with_thumbnails

        method = self.method
        try:
            return with_thumbnails(
                outcome, lambda indices, with_maps: engine.report_samples(indices, method if with_maps else None)
            )
        except Exception as error:  # noqa: BLE001  (the check's outcome stands without pictures)
            return outcome.extended(extra={"thumbnail_error": f"{type(error).__name__}: {error}"})

    def _verdict(self, outcome: Outcome, strict: bool) -> None:
        """Pass; warn for an inconclusive or ``severity: warn`` check (unless ``strict``); else fail."""
        if outcome.passed:
            return
        if not strict and (outcome.inconclusive or self.check.severity == "warn"):
            # Located at the check in the spec (not in this module): pytest's warnings summary
            # then reads "spec.saliency.yaml:LINE: SaliencyWarning: check ..." and shows the line.
            message = self._failure_text().removeprefix(f"{self._location()}: ")
            line, _ = self.parent.loaded.source.value(("checks", self.check_index))
            warnings.warn_explicit(SaliencyWarning(message), SaliencyWarning, str(self.parent.loaded.path), line)
            return
        raise CheckFailed()

    def _status(self) -> Status:
        """passed | failed | inconclusive (decided by interval: no threshold failed, one could not
        be decided) | warned (a ``severity: warn`` check that failed); --saliency-strict makes
        the last two failed."""
        if self.outcome is not None and self.outcome.passed:
            return "passed"
        if self.outcome is not None and not self.config.stash[SESSION_KEY].strict:
            if self.outcome.inconclusive:
                return "inconclusive"
            if self.check.severity == "warn":
                return "warned"
        return "failed"

    def _slice(self) -> dict[str, str] | None:
        """``{"by": field, "value": ...}`` for an item of a check with ``slices``."""
        slices = self.check.config.slicing
        return None if slices is None or self.slice_value is None else {"by": slices.by, "value": self.slice_value}

    def _location(self) -> str:
        line, _ = self.parent.loaded.source.value(("checks", self.check_index))
        return f"{self.parent.loaded.path}:{line}"

    def _failure_text(self) -> str:
        from .report.terminal import failure_text

        assert self.outcome is not None
        what = f" [{self.variant}]" if self.variant else ""
        verdict = "inconclusive" if self.outcome.inconclusive else "failed"
        severity = " (severity: warn)" if self.check.severity == "warn" else ""
        return failure_text(
            self._location(), f"check {self.check.id!r}{what} {verdict}{severity}", self.outcome.to_dict()
        )

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        """One line for whatever went wrong, at its place in the spec: the check's failure text,
        a problem with what the spec names (model, data, attributions), or any other exception
        raised while the check ran, at the check. ``--saliency-debug`` (or ``-vv``) adds the
        original traceback."""
        from .errors import SpecRuntimeError, describe_exception

        error = excinfo.value
        if isinstance(error, CheckFailed | SaliencyWarning):  # SaliencyWarning: under -W error
            return self._failure_text()
        if isinstance(error, SpecRuntimeError):
            line = str(self.parent.loaded.problem(error.location, error.message))
        elif isinstance(error, DeviceUnavailable):
            line = str(error)
        else:
            what = f" [{self.variant}]" if self.variant else ""
            message = f"check {self.check.id!r}{what} raised {describe_exception(error)}"
            line = str(self.parent.loaded.problem(("checks", self.check_index), message))
        if self.config.stash[SESSION_KEY].debug:
            return f"{line}\n\n{super().repr_failure(excinfo, style='long')}"
        foreseen = isinstance(error, SpecRuntimeError | DeviceUnavailable)  # their line says what to do
        return line if foreseen else f"{line} {DEBUG_HINT}"

    def reportinfo(self) -> tuple[Path, int, str]:
        line, _ = self.parent.loaded.source.value(("checks", self.check_index))
        return self.path, line - 1, self.name

    def saliency_result(self) -> ItemResult:
        """The JSON-serialisable result the summary and reports show."""
        outcome: OutcomeResult = (
            self.outcome.to_dict() if self.outcome else {"samples": 0, "undefined": 0, "measurements": []}
        )
        result = {
            "nodeid": self.nodeid,
            "line": self.reportinfo()[1] + 1,
            "spec": self.parent.loaded.name,
            "spec_path": str(self.parent.loaded.path),
            "check": self.check.id,
            "kind": self.check.kind,
            "variant": self.variant,
            "method": self.method,
            "class_index": self.class_index,
            "slice": self._slice(),
            "severity": self.check.severity,
            "status": self._status(),
            "weights": self.weights,
            "model_source": self.model_source,
            "overrides": self.parent.loaded.overrides,
            **outcome,
        }
        return cast("ItemResult", result)  # the item's keys and its outcome's, which mypy cannot join
