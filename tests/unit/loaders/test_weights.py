"""Weights files as they ship: formats, checkpoint dicts, wrapper prefixes, refusals."""

from __future__ import annotations

import argparse
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.weights import fit_state_dict, read_state_dict
from pytest_saliency.spec.validate import format_location

BLOCK = ("model",)


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def trained() -> dict[str, torch.Tensor]:
    """A state_dict of :func:`network` (materialised) with other values than its init."""
    model = network()
    model(torch.zeros(1, 3, 5, 5))
    torch.manual_seed(1)
    return {key: torch.randn_like(value.float()).to(value.dtype) for key, value in model.state_dict().items()}


def fitted(state: dict[str, torch.Tensor], shown: str = "w.pt") -> tuple[nn.Module, list[str]]:
    model = network()
    model(torch.zeros(1, 3, 5, 5))
    return model, fit_state_dict(model, state, shown, BLOCK + ("weights",))


def refusal(call: Callable[[], object]) -> str:
    """``key: message`` of the :class:`SpecRuntimeError` that ``call`` raises."""
    with pytest.raises(SpecRuntimeError) as caught:
        call()
    return f"{format_location(caught.value.location)}: {caught.value.message}"


def assert_equal_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_a_state_dict_file_loads_under_any_suffix(tmp_path: Path, suffix: str) -> None:
    state = trained()
    torch.save(state, tmp_path / f"w{suffix}")
    read, notes = read_state_dict(tmp_path / f"w{suffix}", f"w{suffix}", None, BLOCK)
    model, fit_notes = fitted(read)
    assert_equal_state(model, state)
    assert notes == fit_notes == []


def test_safetensors_is_read_by_the_safetensors_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = trained()
    save_file(state, str(tmp_path / "w.safetensors"))

    def no_torch_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not read a .safetensors file")

    monkeypatch.setattr(torch, "load", no_torch_load)
    read, _ = read_state_dict(tmp_path / "w.safetensors", "w.safetensors", None, BLOCK)
    assert_equal_state(fitted(read)[0], state)


def test_a_corrupt_safetensors_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors at all")
    assert re.match(
        r"model\.weights: cannot read w\.safetensors as safetensors: ",
        refusal(lambda: read_state_dict(tmp_path / "w.safetensors", "w.safetensors", None, BLOCK)),
    )


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "state_dict_ema"])
def test_a_checkpoint_dict_gives_the_weights_under_its_known_key_with_a_note(tmp_path: Path, key: str) -> None:
    state = trained()
    torch.save({"epoch": 3, key: state, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    read, notes = read_state_dict(tmp_path / "ckpt.pth", "ckpt.pth", None, BLOCK)
    assert_equal_state(fitted(read)[0], state)
    assert notes == [f"weights: the checkpoint's {key!r} key of ckpt.pth"]


def test_timm_checkpoint_with_args_namespace_and_ema_prefers_the_trained_weights(tmp_path: Path) -> None:
    state, ema = trained(), {key: value + 1 for key, value in trained().items()}
    checkpoint = {
        "epoch": 9,
        "arch": "x",
        "args": argparse.Namespace(lr=0.1, output=Path("/runs")),
        "state_dict": state,
    }
    torch.save({**checkpoint, "state_dict_ema": ema}, tmp_path / "timm.pth.tar")
    read, notes = read_state_dict(tmp_path / "timm.pth.tar", "timm.pth.tar", None, BLOCK)
    assert_equal_state(fitted(read)[0], state)
    assert notes == [
        "weights: the checkpoint's 'state_dict' key of timm.pth.tar (it also has 'state_dict_ema': choose with weights_key)"
    ]
    read, notes = read_state_dict(tmp_path / "timm.pth.tar", "timm.pth.tar", "state_dict_ema", BLOCK)
    assert_equal_state(fitted(read)[0], ema)
    assert notes == ["weights: the state_dict under 'state_dict_ema' of timm.pth.tar"]


@pytest.fixture
def lightning_module(monkeypatch: pytest.MonkeyPatch) -> type[dict[str, object]]:
    """A stand-in for ``lightning.fabric.utilities.data.AttributeDict`` (Lightning is not a
    dependency): the class a Lightning checkpoint's ``hyper_parameters`` pickle as."""
    attribute_dict = type("AttributeDict", (dict,), {"__module__": "lightning.fabric.utilities.data"})
    for name in ("lightning", "lightning.fabric", "lightning.fabric.utilities", "lightning.fabric.utilities.data"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["lightning.fabric.utilities.data"].AttributeDict = attribute_dict  # type: ignore[attr-defined]
    return attribute_dict


def test_lightning_checkpoint_reads_hyper_parameters_as_data_and_strips_model_prefix(
    tmp_path: Path, lightning_module: type[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = trained()
    hyper = lightning_module(lr=0.01, layers=4)
    checkpoint = {"state_dict": {f"model.{key}": value for key, value in state.items()}, "hyper_parameters": hyper}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    for name in [name for name in sys.modules if name.startswith("lightning")]:
        monkeypatch.delitem(sys.modules, name)  # reading it must not need Lightning
    read, notes = read_state_dict(tmp_path / "last.ckpt", "last.ckpt", None, BLOCK)
    model, fit_notes = fitted(read, "last.ckpt")
    assert_equal_state(model, state)
    assert fit_notes == ["weights: stripped the prefix 'model.' that every key of last.ckpt has"]


@pytest.mark.parametrize(
    ("prefixes", "shown"),
    [
        (["module."], "'module.'"),
        (["_orig_mod."], "'_orig_mod.'"),
        (["module.", "_orig_mod."], "'module.' then '_orig_mod.'"),
    ],
)
def test_wrapper_prefixes_are_stripped_when_every_key_has_them(prefixes: list[str], shown: str) -> None:
    state = trained()
    prefix = "".join(prefixes)
    model, notes = fitted({prefix + key: value for key, value in state.items()})
    assert_equal_state(model, state)
    assert notes == [f"weights: stripped the prefix {shown} that every key of w.pt has"]


def test_a_prefix_is_kept_when_the_stripped_keys_do_not_fit() -> None:
    state = trained()
    del state["0.weight"]
    message = refusal(lambda: fitted({f"module.{key}": value for key, value in state.items()}))
    assert message.startswith("model.weights: w.pt does not fit the model: missing 0.weight, 0.bias, 1.weight")
    assert "unexpected module.0.bias" in message


class Whole(nn.Module):
    """A user's model class, saved whole with ``torch.save(model)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_a_whole_pickled_model_is_refused_with_what_to_save(tmp_path: Path) -> None:
    torch.save(Whole(), tmp_path / "whole.pt")
    assert refusal(lambda: read_state_dict(tmp_path / "whole.pt", "whole.pt", None, BLOCK)) == (
        f"model.weights: whole.pt is a whole pickled model ({__name__}.Whole, torch.nn.modules.linear.Linear), which loads only "
        "by running code: save its weights with torch.save(model.state_dict(), PATH) and give that file"
    )


class Unknown:
    """An object a checkpoint holds that is no plain data: never unpickled."""


def test_other_python_objects_are_refused_without_running_code(tmp_path: Path) -> None:
    torch.save({"state_dict": trained(), "config": Unknown()}, tmp_path / "ckpt.pt")
    assert refusal(lambda: read_state_dict(tmp_path / "ckpt.pt", "ckpt.pt", None, BLOCK)) == (
        f"model.weights: ckpt.pt holds Python objects besides tensors ({__name__}.Unknown) that are not read "
        "without running code: save the state_dict alone, torch.save(model.state_dict(), PATH)"
    )


def test_a_dict_without_a_known_key_asks_for_weights_key(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "weights_here": trained()}, tmp_path / "c.pt")
    assert refusal(lambda: read_state_dict(tmp_path / "c.pt", "c.pt", None, BLOCK)) == (
        "model.weights: c.pt is a dict with keys 'epoch', 'weights_here' and none is a known state_dict key: "
        "name the one that holds the weights with model.weights_key"
    )
    read, _ = read_state_dict(tmp_path / "c.pt", "c.pt", "weights_here", BLOCK)
    assert set(read) == set(trained())


def test_weights_key_refusals_are_at_weights_key(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "state_dict": trained()}, tmp_path / "c.pt")
    torch.save(trained(), tmp_path / "plain.pt")
    assert re.match(
        r"model\.weights_key: c\.pt has no key 'ema' \(its keys: 'epoch', 'state_dict'\): fix weights_key",
        refusal(lambda: read_state_dict(tmp_path / "c.pt", "c.pt", "ema", BLOCK)),
    )
    assert re.match(
        r"model\.weights_key: c\.pt\['epoch'\] is not a state_dict of tensors",
        refusal(lambda: read_state_dict(tmp_path / "c.pt", "c.pt", "epoch", BLOCK)),
    )
    assert re.match(
        r"model\.weights_key: plain\.pt is a state_dict, not a checkpoint dict: remove weights_key",
        refusal(lambda: read_state_dict(tmp_path / "plain.pt", "plain.pt", "state_dict", BLOCK)),
    )


def test_a_tensor_alone_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    assert re.match(
        r"model\.weights: t\.pt holds a Tensor, not a state_dict",
        refusal(lambda: read_state_dict(tmp_path / "t.pt", "t.pt", None, BLOCK)),
    )
