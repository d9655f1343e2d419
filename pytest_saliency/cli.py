"""``pytest-saliency``: validate spec files, print the spec language's JSON Schema, render reports."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-saliency", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check spec files without running any model (for pre-commit)")
    validate.add_argument("paths", nargs="+", type=Path, help="spec files, or folders to search for *.saliency.yaml")
    validate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a value of every spec, as pytest --saliency-set does (paths relative to the working directory)",
    )
    commands.add_parser("schema", help="print the JSON Schema of the spec language")
    report = commands.add_parser("report", help="render the HTML report again from a --saliency-json results file")
    report.add_argument("results", type=Path, help="a results file written by pytest --saliency-json")
    report.add_argument(
        "-o", "--output", type=Path, default=None, help="the HTML file to write (default: RESULTS with .html)"
    )
    report.add_argument("--title", default=None, help="the page title (default: pytest-saliency report)")
    arguments = parser.parse_args(argv)
    if arguments.command == "report":
        return _report(arguments.results, arguments.output, arguments.title)
    if arguments.command == "schema":
        from .spec import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    return _validate(arguments.paths, arguments.set)


def _report(results: Path, output: Path | None, title: str | None) -> int:
    from .report.html import ReportDependencyError, write_html
    from .report.results import ResultsFileError, load_document

    try:
        document = load_document(results)
        written = write_html(output or results.with_suffix(".html"), document, title)
    except (ResultsFileError, ReportDependencyError, OSError) as error:
        print(f"pytest-saliency report: {error}", file=sys.stderr)
        return 1
    print(f"saliency report (HTML): {written}", file=sys.stderr)
    return 0


def _validate(paths: Sequence[Path], settings: Sequence[str] = ()) -> int:
    from .spec import SpecError, discover, load_spec
    from .spec.overrides import Override

    try:
        overrides = [Override.parse(setting, option="--set") for setting in settings]
    except ValueError as error:
        print(f"pytest-saliency validate: {error}", file=sys.stderr)
        return 2
    specs = list(discover(paths))
    if not specs:
        print(f"pytest-saliency: no *.saliency.yaml files in {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    failed = 0
    for path in specs:
        try:
            load_spec(path, overrides=overrides, base=Path.cwd())
        except SpecError as error:
            failed += 1
            print(error)
    print(f"{len(specs) - failed} of {len(specs)} spec files valid", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
