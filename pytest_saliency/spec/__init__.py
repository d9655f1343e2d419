"""The spec language: YAML -> typed, validated :class:`Spec` with source positions."""

from ..errors import SpecError, SpecProblem
from .schema import CheckSpec, Spec, Threshold, json_schema
from .validate import LoadedSpec, discover, is_spec_file, load_spec

__all__ = [
    "CheckSpec",
    "LoadedSpec",
    "Spec",
    "SpecError",
    "SpecProblem",
    "Threshold",
    "discover",
    "is_spec_file",
    "json_schema",
    "load_spec",
]
