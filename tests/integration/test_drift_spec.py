"""``drift`` checks from YAML through pytest: versions, stored baselines and the update options.

The generated project holds ``drift_twins.py``: ``Twin``'s Saliency map is ``gain[c] * x[c]`` on
channel 0 (the object) and channel 1 (the decoy), and ``clean.pt`` / ``decoy.pt`` differ only in
the gains (1, 0.1) and (0.2, 1). In ``data.npz`` every 16x16 image has one 4x4 object segment
and one 4x4 decoy segment, so the decoy segments' share moves from 0.1/1.1 to 1/1.2 (+0.74).
"""

from __future__ import annotations

import io
import json
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pytest_saliency.baselines.store  # noqa: F401  (imported once here, not in every in-process run)
import pytest_saliency.checks.drift  # noqa: F401

TWINS = """\
import torch
from torch import nn


class Twin(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Conv2d(3, 3, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.gain = nn.Parameter(torch.tensor([1.0, 0.1, 0.0]))
        self.scale = nn.Parameter(torch.linspace(1.0, 2.0, num_classes))

    def forward(self, x):
        f = self.features(x)
        energy = 0.5 * (self.gain.view(1, 3, 1, 1) * f.square()).flatten(1).sum(1)
        return energy[:, None] * self.scale


def build(num_classes=3):
    return Twin(num_classes)
"""
N, SIZE = 12, 16


def _weights(gain: tuple[float, float, float]) -> bytes:
    state = {
        "features.weight": torch.eye(3).view(3, 3, 1, 1),
        "gain": torch.tensor(gain),
        "scale": torch.linspace(1.0, 2.0, 3),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _data() -> bytes:
    rng = np.random.default_rng(0)
    images = np.zeros((N, 3, SIZE, SIZE), np.float32)
    masks = np.zeros((N, SIZE, SIZE), bool)
    decoy = np.zeros((N, SIZE, SIZE), bool)
    for i in range(N):
        row, col = 1 + i % 2, 1 + (i // 2) % 2
        masks[i, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = True
        corner_row, corner_col = (0 if i % 4 < 2 else 3), (0 if i % 2 == 0 else 3)
        decoy[i, 4 * corner_row : 4 * corner_row + 4, 4 * corner_col : 4 * corner_col + 4] = True
        images[i, 0], images[i, 1] = masks[i], decoy[i]
        images[i, 2] = rng.uniform(0.2, 0.8, size=(SIZE, SIZE))
    buffer = io.BytesIO()
    np.savez(buffer, images=images, masks=masks, labels=np.arange(N) % 3, decoy=decoy)
    return buffer.getvalue()


@pytest.fixture
def twins(pytester: pytest.Pytester) -> pytest.Pytester:
    """``pytester.path`` with ``drift_twins.py``, ``clean.pt``, ``decoy.pt``, ``data.npz`` and
    ``specs/`` (``CI`` is unset by the suite's conftest)."""
    pytester.makepyfile(drift_twins=TWINS)
    (pytester.path / "clean.pt").write_bytes(_weights((1.0, 0.1, 0.0)))
    (pytester.path / "decoy.pt").write_bytes(_weights((0.2, 1.0, 0.0)))
    (pytester.path / "data.npz").write_bytes(_data())
    (pytester.path / "specs").mkdir()
    return pytester


def literal(*patterns: str) -> list[str]:
    """fnmatch patterns in which ``[`` is a literal bracket (``*`` and ``?`` still match)."""
    return [pattern.replace("[", "[[]") for pattern in patterns]


def drift_check(check_id: str, against: str, extra: str = "") -> str:
    return f"""\
- id: {check_id}
  drift:
    against: {against}
    segments: {{patch: 4}}
    keep: 2
    clusters: 2
    max_shift: 0.1
""" + textwrap.indent(extra, "    ")


def write(pytester: pytest.Pytester, *checks: str, weights: str = "clean.pt", name: str = "x") -> Path:
    body = textwrap.indent("".join(checks), "  ")
    text = (
        "version: 1\n"
        f"model: {{factory: drift_twins:build, weights: ../{weights}}}\n"
        "data: {npz: ../data.npz, classes: [a, b, c]}\n"
        "attributions:\n  grad: {method: Saliency, params: {abs: true}}\n"
        f"checks:\n{body}"
    )
    path = pytester.path / "specs" / f"{name}.saliency.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_versions_from_yaml_itself_passes_and_the_decoy_twin_fails(twins, helpers):
    write(
        twins,
        drift_check("same", "{weights: ../decoy.pt}"),
        drift_check("vs-clean", "{weights: ../clean.pt}", "min_rank_correlation: 0.5\n"),
        weights="decoy.pt",
    )
    result = twins.runpytest("-rA")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        literal(
            "specs/x.saliency.yaml:*: check 'vs-clean' [grad] failed: max |shift| = 0.7424 (want <= 0.1)",
            "  A = weights ../clean.pt (reference); B = this spec's model (weights ../decoy.pt) (under test)",
            "    cluster ? (n=12): share 0.09 → 0.83 (+0.74) [holds the decoy]; e.g. image *",
            "  decoy: cluster ? holds 100 % of the 12 kept segments on the decoy mask; their share 0.09 → 0.83",
            "  segment rank correlation A vs B: mean *",
        )
    )
    helpers.assert_no_traceback(output.split("saliency summary")[0].split("FAILURES")[1])
    result.stdout.fnmatch_lines(literal("PASSED specs/x.saliency.yaml::same[grad]"))


@pytest.mark.parametrize("kind", ["activations", "colour_texture"])
def test_results_do_not_depend_on_the_shard_size(twins, kind):
    """Against another version and against a snapshot (made in shards of 5), in shards of 1, 3
    and all 12 samples: the same JSON results, to the last digit."""
    extra = f"embedding: {{kind: {kind}}}\nmean_shift: 0.05\nmin_rank_correlation: 0.5\n"
    checks = (
        drift_check("vs-clean", "{weights: ../clean.pt}", extra),
        drift_check("stable", "{snapshot: production}", extra),
    )
    write(twins, *checks)
    twins.runpytest("--saliency-update-baselines", "--saliency-set", "data.shard_size=5").assert_outcomes(passed=2)
    write(twins, *checks, weights="decoy.pt")
    results = {}
    for size in (1, 3, 12):
        out = twins.path / f"shards-{size}.json"
        run = twins.runpytest("--saliency-set", f"data.shard_size={size}", f"--saliency-json={out}")
        run.assert_outcomes(failed=2)
        document = json.loads(out.read_text())
        assert document["overrides"] == [f"data.shard_size={size}"]
        results[size] = {
            result["nodeid"]: {key: result[key] for key in ("measurements", "drift", "regions", "samples", "undefined")}
            for result in document["results"]
        }
    assert results[1] == results[3] == results[12]
    for result in results[1].values():
        assert result["drift"]["max_abs_shift"] == pytest.approx(1 / 1.2 - 0.1 / 1.1, abs=1e-6)
        assert result["regions"]["decoy"]["fraction"] == 1.0 and result["samples"] == N


def test_baseline_workflow(twins):
    spec = write(twins, drift_check("stable", "{snapshot: production}"))
    folder = twins.path / "specs" / "saliency-baselines" / "x"

    missing = twins.runpytest()
    missing.assert_outcomes(failed=1)
    command = "pytest --saliency-update-baselines --saliency-update-mode=missing specs/x.saliency.yaml"
    missing.stdout.fnmatch_lines(
        literal(
            "specs/x.saliency.yaml:*:*: checks[0].drift.against.snapshot: no baseline 'production.stable.grad' "
            f"in specs/saliency-baselines/x; create it with: {command}"
        )
    )
    assert "Traceback" not in missing.stdout.str() and not folder.exists()

    created = twins.runpytest(*shlex.split(command)[1:])
    created.assert_outcomes(passed=1)
    created.stdout.fnmatch_lines(
        [
            "saliency baselines (--saliency-update-mode=missing): 1 created, 0 updated, 0 unchanged in specs/saliency-baselines/x"
        ]
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        ".gitignore",
        "production.stable.grad.json",
        "production.stable.grad.pt",
    ]
    written = (folder / "production.stable.grad.pt").read_bytes()

    twins.runpytest().assert_outcomes(passed=1)  # compares, writes nothing
    assert (folder / "production.stable.grad.pt").read_bytes() == written

    write(twins, drift_check("stable", "{snapshot: production}"), weights="decoy.pt")  # a new version
    drifted = twins.runpytest()
    drifted.assert_outcomes(failed=1)
    drifted.stdout.fnmatch_lines(
        [
            "*failed: max |shift| = 0.7424 (want <= 0.1)",
            "  A = baseline 'production' (production.stable.grad, made *, weights *) (reference); *",
            "saliency drift mismatches, obtained summaries written to:",
            "  .pytest_cache/saliency-obtained/x/production.stable.grad.obtained.json",
        ]
    )
    assert (folder / "production.stable.grad.pt").read_bytes() == written  # a normal run never writes

    updated = twins.runpytest("--saliency-update-baselines", str(spec))
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(
        ["saliency baselines (--saliency-update-mode=changed): 0 created, 1 updated, 0 unchanged*"]
    )
    assert not (
        twins.path / ".pytest_cache" / "saliency-obtained" / "x" / "production.stable.grad.obtained.json"
    ).exists()
    again = twins.runpytest("--saliency-update-baselines")
    again.stdout.fnmatch_lines(
        ["saliency baselines (--saliency-update-mode=changed): 0 created, 0 updated, 1 unchanged*"]
    )
    rewrite = twins.runpytest("--saliency-update-baselines", "--saliency-update-mode=all")
    rewrite.stdout.fnmatch_lines(
        ["saliency baselines (--saliency-update-mode=all): 0 created, 1 updated, 0 unchanged*"]
    )


def test_the_former_key_baseline_still_works_and_warns_at_its_line(twins):
    write(twins, drift_check("stable", "{baseline: production}"))
    folder = twins.path / "specs" / "saliency-baselines" / "x"
    created = twins.runpytest("--saliency-update-baselines")
    created.assert_outcomes(passed=1)
    assert created.stdout.str().count("SpecDeprecationWarning") == 1
    created.stdout.fnmatch_lines(
        literal(
            "*x.saliency.yaml:9: SpecDeprecationWarning: checks[0].drift.against.baseline: 'baseline' is the former "
            "name of 'snapshot': write against: {snapshot: production} (the stored files stay as they are)"
        )
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        ".gitignore",
        "production.stable.grad.json",
        "production.stable.grad.pt",
    ]
    write(twins, drift_check("stable", "{snapshot: production}"))  # the same files under the new key
    renamed = twins.runpytest()
    renamed.assert_outcomes(passed=1)
    assert "SpecDeprecationWarning" not in renamed.stdout.str()


def test_a_partial_update_touches_only_the_selected_baselines(twins):
    write(twins, drift_check("one", "{snapshot: production}"), drift_check("two", "{snapshot: production}"))
    folder = twins.path / "specs" / "saliency-baselines" / "x"
    twins.runpytest("--saliency-update-baselines").assert_outcomes(passed=2)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    write(
        twins,
        drift_check("one", "{snapshot: production}"),
        drift_check("two", "{snapshot: production}"),
        weights="decoy.pt",
    )
    result = twins.runpytest("--saliency-update-baselines", "-k", "one")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["saliency baselines (--saliency-update-mode=changed): 0 created, 1 updated, 0 unchanged*"]
    )
    after = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert set(after) == set(before)  # nothing deleted
    assert after["production.two.grad.pt"] == before["production.two.grad.pt"]
    assert after["production.one.grad.pt"] != before["production.one.grad.pt"]
    twins.runpytest("-k", "two").assert_outcomes(failed=1, deselected=1)


def test_a_baseline_with_other_segments_is_refused_in_one_line(twins, helpers):
    spec = write(twins, drift_check("stable", "{snapshot: production}"))
    twins.runpytest("--saliency-update-baselines").assert_outcomes(passed=1)
    spec.write_text(spec.read_text().replace("patch: 4", "patch: 8"))
    result = twins.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        literal(
            "specs/x.saliency.yaml:*:*: checks[0].drift.against.snapshot: baseline 'production.stable.grad' in "
            "specs/saliency-baselines/x was made from other data or settings and is refused: segments: baseline has "
            "{'patch': 4}, this run has {'patch': 8}. If the change is intended, rewrite it with: "
            "pytest --saliency-update-baselines specs/x.saliency.yaml"
        )
    )
    helpers.assert_no_traceback(result.stdout.str())


def test_updates_are_refused_under_ci_unless_allowed(twins, monkeypatch):
    write(twins, drift_check("stable", "{snapshot: production}"))
    monkeypatch.setenv("CI", "true")
    refused = twins.runpytest("--saliency-update-baselines")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--saliency-update-baselines refused: the CI environment variable is set*"])
    assert not (twins.path / "specs" / "saliency-baselines").exists()
    allowed = twins.runpytest("--saliency-update-baselines", "--saliency-allow-ci-update")
    allowed.assert_outcomes(passed=1)
    allowed.stdout.fnmatch_lines(["*1 created, 0 updated, 0 unchanged*"])


def test_the_baseline_directory_is_an_ini_option(twins):
    twins.makeini("[pytest]\nsaliency_baseline_dir = ci/baselines\n")
    write(twins, drift_check("stable", "{snapshot: production}"))
    missing = twins.runpytest()
    missing.stdout.fnmatch_lines(
        [f"*no baseline 'production.stable.grad' in {twins.path / 'ci' / 'baselines' / 'x'}; *"]
    )
    twins.runpytest("--saliency-update-baselines").assert_outcomes(passed=1)
    assert (twins.path / "ci" / "baselines" / "x" / "production.stable.grad.pt").is_file()
    assert not (twins.path / "specs" / "saliency-baselines").exists()
    twins.runpytest().assert_outcomes(passed=1)


@pytest.mark.slow  # three fresh processes import torch: about 20 s on two cores
def test_update_counts_reach_the_controller_under_xdist(twins):
    pytest.importorskip("xdist")
    write(twins, drift_check("stable", "{snapshot: production}"), name="a")
    write(twins, drift_check("stable", "{snapshot: production}"), name="b")
    result = twins.runpytest_subprocess("-n", "2", "--dist", "loadscope", "--saliency-update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["saliency baselines (--saliency-update-mode=changed): 2 created, 0 updated, 0 unchanged in *"]
    )


FAULTY_DISK = """\
import errno
import os
from pathlib import Path

import pytest

import pytest_saliency._io

WHERE, ERROR = {where!r}, errno.{error}
PATCHES = pytest.MonkeyPatch()


def pytest_configure(config):
    \"\"\"For the run, every write, rename and removal of a path holding WHERE raises ERROR (the
    tests run as root, which file modes do not stop: the fault is injected).\"\"\"

    def guard(real):
        def guarded(*args, **kwargs):
            if any(WHERE in str(arg) for arg in args[:2]):  # paths, not the bytes written
                raise OSError(ERROR, os.strerror(ERROR))
            return real(*args, **kwargs)

        return guarded

    PATCHES.setattr(pytest_saliency._io, "write_temporary", guard(pytest_saliency._io.write_temporary))
    PATCHES.setattr(os, "replace", guard(os.replace))
    PATCHES.setattr(os, "unlink", guard(os.unlink))
    PATCHES.setattr(Path, "unlink", guard(Path.unlink))
    PATCHES.setattr(Path, "mkdir", guard(Path.mkdir))


def pytest_unconfigure(config):
    PATCHES.undo()
"""


def test_a_read_only_snapshot_folder_lets_a_passing_drift_check_pass(twins):
    write(twins, drift_check("stable", "{snapshot: production}"))
    twins.runpytest("--saliency-update-baselines").assert_outcomes(passed=1)
    folder = twins.path / "specs" / "saliency-baselines" / "x"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    twins.makeconftest(FAULTY_DISK.format(where="saliency-baselines", error="EROFS"))
    result = twins.runpytest("-rA")
    result.assert_outcomes(passed=1)
    assert "Errno" not in result.stdout.str()
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_full_disk_keeps_the_drift_failure_and_its_measurements(twins):
    write(twins, drift_check("stable", "{snapshot: production}"))
    twins.runpytest("--saliency-update-baselines").assert_outcomes(passed=1)
    write(twins, drift_check("stable", "{snapshot: production}"), weights="decoy.pt")
    twins.makeconftest(FAULTY_DISK.format(where="obtained", error="ENOSPC"))
    result = twins.runpytest("--saliency-json=results.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        literal(
            "specs/x.saliency.yaml:*: check 'stable' [grad] failed: max |shift| = 0.7424 (want <= 0.1)",
            "*note: the obtained drift summary could not be written to *production.stable.grad.obtained.json: "
            "[Errno 28] No space left on device",
        )
    )
    assert "raised OSError" not in result.stdout.str() and "obtained summaries written" not in result.stdout.str()
    (item,) = json.loads((twins.path / "results.json").read_text())["results"]
    assert item["status"] == "failed" and item["measurements"][0]["value"] == pytest.approx(0.7424, abs=1e-4)
