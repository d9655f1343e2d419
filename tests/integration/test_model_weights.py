"""Weights files as teams ship them, end to end, and the model-source refusals: each format loads
the tiny model's weights (a test in the project reads them back through ``saliency_engine``) with
its note in the summary; each refusal is one line at its key in the spec, with no traceback."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

WriteSpec = Callable[..., Path]
WEIGHTS = {"weight": torch.tensor([1.0, 2.0, 3.0])}  # the tiny model's only parameter, not its init (ones)
CHECK_LOADED = """\
import torch


def test_the_weights_are_loaded(saliency_engine):
    engine = saliency_engine("specs/x.saliency.yaml")
    assert engine.model.network.weight.tolist() == [1.0, 2.0, 3.0]
"""


def prefixed(prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in WEIGHTS.items()}


FORMATS = {  # file name, what is saved, the spec's extra model keys, the note in the summary
    "state_dict": ("w.pt", WEIGHTS, "", None),
    "pth": ("w.pth", WEIGHTS, "", None),
    "bin": ("pytorch_model.bin", WEIGHTS, "", None),
    "safetensors": ("w.safetensors", None, "", None),
    "checkpoint": (
        "ckpt.pth",
        {"epoch": 3, "state_dict": WEIGHTS, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}},
        "",
        "weights: the checkpoint's 'state_dict' key of ../ckpt.pth",
    ),
    "model_state_dict": (
        "tutorial.pt",
        {"epoch": 3, "model_state_dict": WEIGHTS, "loss": 0.5},
        "",
        "weights: the checkpoint's 'model_state_dict' key of ../tutorial.pt",
    ),
    "timm_ema": (
        "model_best.pth.tar",
        {"arch": "tiny", "args": argparse.Namespace(lr=0.1, output=Path("runs")), "state_dict_ema": WEIGHTS},
        "",
        "weights: the checkpoint's 'state_dict_ema' key of ../model_best.pth.tar",
    ),
    "weights_key": (
        "custom.pt",
        {"epoch": 3, "best_weights": WEIGHTS},
        "weights_key: best_weights",
        "weights: the state_dict under 'best_weights' of ../custom.pt",
    ),
    "data_parallel": (
        "dp.pt",
        prefixed("module."),
        "",
        "weights: stripped the prefix 'module.' that every key of ../dp.pt has",
    ),
    "compiled": (
        "compiled.pt",
        prefixed("_orig_mod."),
        "",
        "weights: stripped the prefix '_orig_mod.' that every key of ../compiled.pt has",
    ),
    "lightning": (
        "last.ckpt",
        {"epoch": 9, "state_dict": prefixed("model."), "hyper_parameters": {"lr": 0.01}},
        "",
        "weights: stripped the prefix 'model.' that every key of ../last.ckpt has",
    ),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_weights_format_loads_with_its_note(
    name: str, project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    file, content, extra, note = FORMATS[name]
    if content is None:
        save_file(WEIGHTS, str(project.path / file))
    else:
        torch.save(content, project.path / file)
    write_spec(model=f"factory: tinymodel:build\nweights: ../{file}\n{extra}")
    project.makepyfile(test_loaded=CHECK_LOADED)
    result = project.runpytest_inprocess("-p", "no:randomly", "specs", "test_loaded.py")
    result.assert_outcomes(passed=2)
    if note is not None:
        result.stdout.fnmatch_lines([f"x {note}"])
    else:
        assert "x weights:" not in result.stdout.str()


@pytest.fixture(scope="module", autouse=True)
def _export_modules() -> None:
    """Export, save and load a program once, before pytester snapshots ``sys.modules``: torch.export
    registers caches on first use that fail when a snapshot removed them and they load again."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), buffer)
    buffer.seek(0)
    torch.export.load(buffer)


SMALL_CNN = """\
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
"""


def small_cnn(project: pytest.Pytester) -> torch.nn.Module:
    """The project's ``smallcnn.build()`` network, in eval mode."""
    project.makepyfile(smallcnn=SMALL_CNN)
    project.syspathinsert()
    import smallcnn  # type: ignore[import-not-found]  # the project's module

    network: torch.nn.Module = smallcnn.build().eval()
    return network


def test_a_torch_export_program_with_a_dynamic_batch_runs_as_its_module(
    project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    network = small_cnn(project)
    batch = torch.export.Dim("batch")
    program = torch.export.export(network, (torch.rand(2, 3, 16, 16),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, project.path / "net.pt2")
    torch.save(network.state_dict(), project.path / "net.pt")
    checks = "- id: cov\n  shared_interest:\n    iou: {mean: '>= 0'}\n"
    attributions = "grad: {method: Saliency}\nig: {method: IntegratedGradients, params: {n_steps: 4}}"
    write_spec("a", model="export: ../net.pt2", checks=checks, attributions=attributions)
    write_spec("b", model="factory: smallcnn:build\nweights: ../net.pt", checks=checks, attributions=attributions)
    result = project.runpytest_inprocess("-p", "no:randomly", "--saliency-set", "data.batch_size=4")
    result.assert_outcomes(passed=4)
    rows = [(row["spec"], row["method"], row["value"]) for row in helpers.summary_rows(result.stdout.str())]
    assert [row[1:] for row in rows if row[0] == "a"] == [row[1:] for row in rows if row[0] == "b"]


REFUSALS = {  # the model block, the text the line points at, the message after "path:line:col: "
    "hub_id": (
        "huggingface: google/vit-base-patch16-224",
        "google/vit",
        "model.huggingface: 'google/vit-base-patch16-224' is not a folder (paths are relative to the spec file), "
        "and a hub id is not downloaded: save the model with save_pretrained(folder) and its image processor "
        "beside it, and name that folder",
    ),
    "folder_without_config": (
        "huggingface: ../empty",
        "../empty",
        "model.huggingface: ../empty has no config.json: write the folder with the model's save_pretrained",
    ),
    "weights_with_huggingface": (
        "huggingface: ../empty\nweights: ../w.pt",
        "huggingface",
        "model: weights and kwargs go with factory, torchvision or timm, not with huggingface (its folder holds the weights)",
    ),
    "preset_without_torchvision": (
        "factory: tinymodel:build\npreset: IMAGENET1K_V1",
        "factory",
        "model: preset names a torchvision weights preset: it goes with torchvision",
    ),
    "two_sources": (
        "factory: tinymodel:build\ntorchvision: resnet18",
        "factory",
        "model: give exactly one of factory, torchvision, timm, huggingface, torchscript, export "
        "(got factory, torchvision)",
    ),
    "unknown_torchvision_model": (
        "torchvision: resnet5",
        "resnet5",
        "model.torchvision: torchvision has no classification model 'resnet5' (did you mean 'resnet50'?)",
    ),
    "unknown_preset": (
        "torchvision: resnet18\npreset: IMAGENET1K_V2",
        "IMAGENET1K_V2",
        "model.preset: ResNet18_Weights has no preset 'IMAGENET1K_V2' (did you mean 'IMAGENET1K_V1'?) "
        "(its presets: IMAGENET1K_V1)",
    ),
    "whole_pickled_model": (
        "factory: tinymodel:build\nweights: ../whole.pt",
        "../whole.pt",
        "model.weights: ../whole.pt is a whole pickled model (tinymodel.Focus), which loads only by running code: "
        "save its weights with torch.save(model.state_dict(), PATH) and give that file",
    ),
    "export_with_a_fixed_batch": (
        "export: ../static.pt2",
        "../static.pt2",
        "model.export: ../static.pt2 was exported for a fixed batch of 2, and attributions run other batch sizes: "
        "export it with a dynamic batch, dynamic_shapes={'x': {0: torch.export.Dim('batch')}}",
    ),
    "timm_checkpoint_path": (
        "timm: test_vit\nkwargs: {checkpoint_path: ../w.pt}",
        "../w.pt",
        "model.kwargs.checkpoint_path: checkpoint_path would have timm load weights (unpickled, or downloaded): "
        "give the file as model.weights instead",
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_a_model_source_refusal_is_one_line_at_its_key(
    name: str, project: pytest.Pytester, write_spec: WriteSpec, helpers: SimpleNamespace
) -> None:
    model, at, message = REFUSALS[name]
    if name == "timm_checkpoint_path":
        pytest.importorskip("timm")
    (project.path / "empty").mkdir()
    torch.save(WEIGHTS, project.path / "w.pt")
    if name == "export_with_a_fixed_batch":
        torch.export.save(
            torch.export.export(small_cnn(project), (torch.rand(2, 3, 16, 16),)), project.path / "static.pt2"
        )
    if name == "whole_pickled_model":
        project.syspathinsert()
        import tinymodel  # type: ignore[import-not-found]  # the project's module

        torch.save(tinymodel.build(), project.path / "whole.pt")
    text = write_spec(model=model).read_text()
    result = project.runpytest_inprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    line = f"specs/x.saliency.yaml:{helpers.position(text, at)}: {message}"
    result.stdout.fnmatch_lines([helpers.literal(line)])
    helpers.assert_no_traceback(result.stdout.str())
