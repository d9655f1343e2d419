"""Loading what a spec names: data sets (npz, folder, Dataset factory) and models (factory + weights).

The npz and Dataset sources read by shards: ``test_npz.py``, ``test_dataset.py``; image files with
annotations (folder, imagefolder, coco): ``test_annotated.py``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pytest_saliency.errors import SpecRuntimeError
from pytest_saliency.loaders.data import open_source
from pytest_saliency.loaders.imports import call_factory, resolve_callable
from pytest_saliency.loaders.models import ModelUnderTest, as_logits, load_model
from pytest_saliency.loaders.source import SampleBatch
from pytest_saliency.spec.schema import DataSpec, FolderSpec, ModelSpec, NormalizeSpec


def read_all(spec: DataSpec, directory: Path, search_paths: list[Path] | None = None) -> SampleBatch:
    """Every sample of the source ``spec`` names, in one read."""
    source = open_source(spec, directory, search_paths or [])
    return source.read(range(len(source)))


# --- npz -------------------------------------------------------------------------------------


def save_npz(directory: Path, images: np.ndarray, **arrays: np.ndarray) -> Path:
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    masks = arrays.pop("masks", np.zeros((count, height, width), bool))
    labels = arrays.pop("labels", np.arange(count) % 2)
    np.savez(directory / "data.npz", images=images, masks=masks, labels=labels, **arrays)
    return directory / "data.npz"


def test_npz_float_images_are_kept_as_they_are(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((3, 3, 4, 5)).astype(np.float32)
    masks = np.zeros((3, 4, 5), np.uint8)
    masks[:, 1:3, 2:4] = 1
    save_npz(tmp_path, images, masks=masks, labels=np.array([2, 0, 1]))
    data = read_all(DataSpec(npz="data.npz"), tmp_path, [])
    assert len(data) == 3
    assert data.images.dtype == torch.float32 and data.images.shape == (3, 3, 4, 5)
    assert torch.equal(data.images, torch.from_numpy(images))
    assert data.masks.dtype == torch.bool and data.masks.shape == (3, 4, 5)
    assert data.masks.sum().item() == 3 * 4
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [2, 0, 1]
    assert data.regions == {}


def test_npz_uint8_images_are_scaled_to_unit_range(tmp_path: Path) -> None:
    images = np.array([0, 51, 255, 102], np.uint8).reshape(1, 1, 2, 2)
    save_npz(tmp_path, images)
    data = read_all(DataSpec(npz="data.npz"), tmp_path, [])
    torch.testing.assert_close(data.images.flatten(), torch.tensor([0.0, 0.2, 1.0, 0.4]))


def test_npz_uint16_images_and_an_explicit_scale(tmp_path: Path) -> None:
    save_npz(tmp_path, np.full((1, 1, 2, 2), 65535, np.uint16))
    assert read_all(DataSpec(npz="data.npz"), tmp_path, []).images.max().item() == 1.0
    save_npz(tmp_path, np.full((1, 1, 2, 2), 200.0, np.float32))
    assert read_all(DataSpec(npz="data.npz", scale=400), tmp_path, []).images.max().item() == 0.5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0.0, 0.5, np.inf, 1.0]), "images hold NaN or inf in 1 of 1 samples (first: sample 0)"),
        (np.array([0.0, 0.5, 1.5, 1.0]), "or set data.scale: 255 to divide them"),
        (np.array([0.0, 0.5, 70000.0, 1.0]), "or set data.scale: 70000 to divide them"),
        (np.array([-0.2, 0.5, 0.3, 1.0]), "give the normalisation as model.normalize"),
    ],
    ids=["inf", "above-one", "above-uint16", "negative"],
)
def test_npz_images_outside_the_unit_range_are_refused(tmp_path: Path, values: np.ndarray, message: str) -> None:
    save_npz(tmp_path, values.astype(np.float32).reshape(1, 1, 2, 2))
    with pytest.raises(SpecRuntimeError, match=re.escape(message)) as raised:
        read_all(DataSpec(npz="data.npz"), tmp_path, [])
    assert raised.value.location == ("data", "npz")


def test_npz_rounding_just_outside_the_unit_range_is_accepted(tmp_path: Path) -> None:
    save_npz(tmp_path, np.array([-1e-4, 0.5, 1.0004, 1.0], np.float32).reshape(1, 1, 2, 2))
    assert len(read_all(DataSpec(npz="data.npz"), tmp_path, [])) == 1


@pytest.mark.parametrize(
    ("labels", "accepted"),
    [
        (np.array([0.0, 2.0]), True),
        (np.array([True, False]), True),
        (np.array([0.5, 1.0]), False),
        (np.array([0, -3]), False),
    ],
    ids=["whole-floats", "booleans", "fraction", "negative"],
)
def test_npz_labels_must_be_class_indices(tmp_path: Path, labels: np.ndarray, accepted: bool) -> None:
    save_npz(tmp_path, np.zeros((2, 1, 2, 2), np.float32), labels=labels)
    if accepted:
        assert read_all(DataSpec(npz="data.npz"), tmp_path, []).labels.tolist() == labels.astype(int).tolist()
    else:
        with pytest.raises(SpecRuntimeError, match="class indices"):
            read_all(DataSpec(npz="data.npz"), tmp_path, [])


def test_npz_grayscale_images_get_one_channel(tmp_path: Path) -> None:
    images = np.ones((2, 6, 6), np.float32)
    save_npz(tmp_path, images)
    data = read_all(DataSpec(npz="data.npz"), tmp_path, [])
    assert data.images.shape == (2, 1, 6, 6)
    assert data.masks.shape == (2, 6, 6)


def test_npz_limit_keeps_the_first_samples(tmp_path: Path) -> None:
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((5, 1, 3, 3), np.float32)
    save_npz(tmp_path, images, decoy=np.ones((5, 3, 3), bool))
    data = read_all(DataSpec(npz="data.npz", limit=2), tmp_path, [])
    assert len(data) == 2
    assert data.images[:, 0, 0, 0].tolist() == [0.0, 1.0]
    assert data.labels.tolist() == [0, 1]
    assert data.regions["decoy"].shape == (2, 3, 3)


def test_npz_extra_masks_become_regions(tmp_path: Path) -> None:
    decoy = np.zeros((2, 4, 4), np.uint8)
    decoy[:, :2, :2] = 1
    save_npz(tmp_path, np.zeros((2, 3, 4, 4), np.float32), decoy=decoy, ruler=np.ones((2, 4, 4), bool))
    data = read_all(DataSpec(npz="data.npz"), tmp_path, [])
    assert set(data.regions) == {"decoy", "ruler"}
    assert data.regions["decoy"].dtype == torch.bool
    assert data.regions["decoy"].sum().item() == 2 * 4
    assert data.regions["ruler"].all()


def test_npz_mismatched_masks_are_refused(tmp_path: Path) -> None:
    save_npz(tmp_path, np.zeros((2, 3, 4, 4), np.float32), masks=np.zeros((2, 4, 5), bool))
    with pytest.raises(SpecRuntimeError, match=r"masks \(2, 4, 5\) do not match images") as raised:
        read_all(DataSpec(npz="data.npz"), tmp_path, [])
    assert raised.value.location == ("data", "npz")


# --- folder ----------------------------------------------------------------------------------


def test_folder_of_pngs(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        pixels = np.zeros((5, 4, 3), np.uint8)
        pixels[:] = colour
        Image.fromarray(pixels).save(tmp_path / "images" / f"img{index}.png")
        mask = np.zeros((5, 4), np.uint8)
        mask[: index + 1, :2] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"img{index}.png")
    (tmp_path / "labels.csv").write_text("file,label\nimg0.png,square\nimg1.png,circle\nimg2.png,1\n")
    spec = DataSpec(
        folder=FolderSpec(images="images", masks="masks", labels="labels.csv"), classes=["circle", "square"]
    )
    data = read_all(spec, tmp_path, [])
    assert data.images.shape == (3, 3, 5, 4)
    assert data.images[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert data.images[1, :, 2, 3].tolist() == [0.0, 0.0, 1.0]
    assert data.labels.tolist() == [1, 0, 1]
    assert data.masks.shape == (3, 5, 4)
    assert data.masks.flatten(1).sum(1).tolist() == [2, 4, 6]


def test_folder_label_that_is_no_class(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "labels.csv").write_text("a.png,triangle\n")
    spec = DataSpec(folder=FolderSpec(images="images", masks="masks", labels="labels.csv"), classes=["circle"])
    with pytest.raises(SpecRuntimeError, match="label 'triangle' is neither an index nor one of data.classes"):
        read_all(spec, tmp_path, [])


def write_folder(directory: Path, count: int) -> DataSpec:
    """``count`` 4x3 PNGs, image ``i`` of grey ``10 i`` with ``i + 1`` mask pixels, labels ``i mod 2``
    and a ``site`` column."""
    from PIL import Image

    (directory / "images").mkdir()
    (directory / "masks").mkdir()
    rows = ["file,label,site"]
    for index in range(count):
        Image.fromarray(np.full((3, 4, 3), 10 * index, np.uint8)).save(directory / "images" / f"s{index}.png")
        mask = np.zeros(12, np.uint8)
        mask[: index + 1] = 255
        Image.fromarray(mask.reshape(3, 4)).save(directory / "masks" / f"s{index}.png")
        rows.append(f"s{index}.png,{index % 2},site{index % 3}")
    (directory / "labels.csv").write_text("\n".join(rows) + "\n")
    return DataSpec(folder=FolderSpec(images="images", masks="masks", labels="labels.csv"))


def test_folder_read_in_shards_equals_one_read(tmp_path: Path) -> None:
    source = open_source(write_folder(tmp_path, 5), tmp_path, [])
    whole = source.read(range(5))
    shards = list(source.stream([range(0, 2), range(2, 5)]))
    assert [shard.indices.tolist() for shard in shards] == [[0, 1], [2, 3, 4]]
    assert torch.equal(torch.cat([shard.images for shard in shards]), whole.images)
    assert torch.equal(torch.cat([shard.masks for shard in shards]), whole.masks)
    assert whole.masks.flatten(1).sum(1).tolist() == [1, 2, 3, 4, 5]
    assert np.concatenate([shard.fields["site"] for shard in shards]).tolist() == whole.fields["site"].tolist()
    assert whole.fields["site"].tolist() == ["site0", "site1", "site2", "site0", "site1"]


def test_folder_opens_with_the_labels_and_reads_files_per_shard(tmp_path: Path) -> None:
    spec = write_folder(tmp_path, 5)
    (tmp_path / "images" / "s3.png").unlink()
    source = open_source(spec.model_copy(update={"limit": 4}), tmp_path, [])
    assert len(source) == 4  # from the labels CSV, limit applied
    assert source.read(range(0, 3)).labels.tolist() == [0, 1, 0]  # the missing file is in another shard
    with pytest.raises(SpecRuntimeError, match=r"images/s3.png \(sample 3\): the file does not exist"):
        source.read(range(3, 4))


# --- Dataset factory -------------------------------------------------------------------------

DATASET_MODULE = """\
import torch

class Shapes(torch.utils.data.Dataset):
    def __init__(self, count, size):
        self.count, self.size = count, size

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        image = torch.full((3, self.size, self.size), index / 10)
        mask = torch.zeros(self.size, self.size, dtype=torch.bool)
        mask[: index + 1] = True
        decoy = torch.zeros(self.size, self.size, dtype=torch.bool)
        decoy[-1, -1] = True
        return image, mask, index % 3, {"decoy": decoy}

def val_set(count=4, size=5):
    return Shapes(count, size)

def broken():
    raise RuntimeError("no such split\\nsecond line")
"""


def test_dataset_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny_saliency_dataset.py").write_text(DATASET_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = DataSpec(factory="tiny_saliency_dataset:val_set", kwargs={"count": 6, "size": 5}, limit=4)
    data = read_all(spec, tmp_path, [])
    assert data.images.shape == (4, 3, 5, 5)
    torch.testing.assert_close(data.images[:, 0, 0, 0], torch.tensor([0.0, 0.1, 0.2, 0.3]))
    assert data.labels.tolist() == [0, 1, 2, 0]
    assert data.masks.flatten(1).sum(1).tolist() == [5, 10, 15, 20]
    assert set(data.regions) == {"decoy"} and data.regions["decoy"].flatten(1).sum(1).tolist() == [1] * 4


def test_dataset_factory_that_raises_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny_saliency_dataset_broken.py").write_text(DATASET_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = DataSpec(factory="tiny_saliency_dataset_broken:broken")
    with pytest.raises(SpecRuntimeError) as raised:
        read_all(spec, tmp_path, [])
    assert raised.value.location == ("data", "factory")
    # the user's multi-line message is cut to its first line
    assert raised.value.message == "tiny_saliency_dataset_broken:broken() raised RuntimeError: no such split"


# --- imports ---------------------------------------------------------------------------------


def test_resolve_callable_errors() -> None:
    with pytest.raises(SpecRuntimeError, match="cannot import 'no_such_module_xyz'") as raised:
        resolve_callable("no_such_module_xyz:build", [], ("model", "factory"))
    assert raised.value.location == ("model", "factory")
    with pytest.raises(SpecRuntimeError, match="module 'math' has no attribute 'nope'"):
        resolve_callable("math:nope", [], ("model", "factory"))
    with pytest.raises(SpecRuntimeError, match="'math:pi' is not callable"):
        resolve_callable("math:pi", [], ("model", "factory"))
    assert resolve_callable("os.path:join", [], ("x",)) is __import__("os").path.join


def test_call_factory_reports_the_call() -> None:
    def factory(**kwargs: object) -> None:
        raise ValueError("bad width")

    with pytest.raises(SpecRuntimeError) as raised:
        call_factory(factory, {"width": 3}, "pkg.mod:make", ("model", "factory"))
    assert raised.value.message == "pkg.mod:make(width=3) raised ValueError: bad width"


# --- models ----------------------------------------------------------------------------------

MODEL_MODULE = """\
from torch import nn

def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))

def not_a_model():
    return 42

def broken(num_classes=3):
    raise ValueError("unsupported num_classes=%d" % num_classes)
"""


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tiny_saliency_model.py").write_text(MODEL_MODULE)
    monkeypatch.delitem(sys.modules, "tiny_saliency_model", raising=False)  # import this test's copy
    return tmp_path


def build_reference(num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))


def test_factory_with_weights(model_dir: Path) -> None:
    torch.manual_seed(0)
    reference = build_reference()
    torch.save(reference.state_dict(), model_dir / "w.pt")
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="w.pt")
    model = load_model(spec, model_dir, [model_dir], torch.device("cpu"))
    assert isinstance(model, ModelUnderTest) and not model.training
    inputs = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(model(inputs), reference(inputs))


def test_normalize_is_applied_inside(model_dir: Path) -> None:
    torch.manual_seed(0)
    reference = build_reference()
    torch.save(reference.state_dict(), model_dir / "w.pt")
    normalize = NormalizeSpec(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="w.pt", normalize=normalize)
    model = load_model(spec, model_dir, [model_dir], torch.device("cpu"))
    inputs = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(model(inputs), reference((inputs - 0.5) / 0.25))


def test_weights_that_do_not_fit_name_the_keys(model_dir: Path) -> None:
    state = build_reference().state_dict()
    state["head.weight"] = state.pop("3.weight")
    torch.save(state, model_dir / "w.pt")
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="w.pt")
    with pytest.raises(SpecRuntimeError) as raised:
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))
    assert raised.value.location == ("model", "weights")
    message = raised.value.message
    assert message.startswith("w.pt does not fit the model: ")
    assert "missing 3.weight" in message and "unexpected head.weight" in message


def test_weights_with_wrong_shapes(model_dir: Path) -> None:
    torch.save(build_reference(num_classes=5).state_dict(), model_dir / "w.pt")
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="w.pt")
    with pytest.raises(SpecRuntimeError, match=r"shape mismatch 3.weight \(5, 64\) vs model \(3, 64\)"):
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))


def test_a_pickled_module_is_refused_with_weights_only(model_dir: Path) -> None:
    torch.save(build_reference(), model_dir / "whole.pt")  # a whole nn.Module, not a state_dict
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="whole.pt")
    with pytest.raises(SpecRuntimeError) as raised:
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))
    assert raised.value.location == ("model", "weights")
    assert raised.value.message.startswith("whole.pt is a whole pickled model (")
    assert raised.value.message.endswith(
        "save its weights with torch.save(model.state_dict(), PATH) and give that file"
    )
    assert "\n" not in raised.value.message


def test_a_non_dict_file_is_refused(model_dir: Path) -> None:
    torch.save([torch.zeros(1)], model_dir / "list.pt")
    spec = ModelSpec(factory="tiny_saliency_model:build", weights="list.pt")
    with pytest.raises(SpecRuntimeError, match="list.pt holds a list, not a state_dict"):
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))


def test_factory_raising_is_one_line(model_dir: Path) -> None:
    spec = ModelSpec(factory="tiny_saliency_model:broken", kwargs={"num_classes": 7})
    with pytest.raises(SpecRuntimeError) as raised:
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))
    assert raised.value.location == ("model", "factory")
    assert raised.value.message == (
        "tiny_saliency_model:broken(num_classes=7) raised ValueError: unsupported num_classes=7"
    )


def test_factory_must_return_a_module(model_dir: Path) -> None:
    spec = ModelSpec(factory="tiny_saliency_model:not_a_model")
    with pytest.raises(SpecRuntimeError, match="returned int, not an nn.Module"):
        load_model(spec, model_dir, [model_dir], torch.device("cpu"))


def test_search_paths_are_not_left_on_sys_path(model_dir: Path) -> None:
    before = list(sys.path)
    load_model(ModelSpec(factory="tiny_saliency_model:build"), model_dir, [model_dir], torch.device("cpu"))
    assert sys.path == before


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated upstream
def test_torchscript(tmp_path: Path) -> None:
    network = torch.jit.script(build_reference())
    network.save(str(tmp_path / "model.ts"))
    model = load_model(ModelSpec(torchscript="model.ts"), tmp_path, [], torch.device("cpu"))
    inputs = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(model(inputs), network(inputs))


# --- model outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "choice", "expected"),
    [
        (torch.ones(4, 3), None, torch.ones(4, 3)),
        ((torch.ones(4, 3), torch.zeros(4)), 0, torch.ones(4, 3)),
        ([torch.zeros(4), torch.ones(4, 3)], 1, torch.ones(4, 3)),
        ({"logits": torch.ones(4, 3), "aux": 1}, "logits", torch.ones(4, 3)),
        (torch.tensor([2.0, -4.0, 0.0, 1.0]), None, torch.tensor([[-1.0, 1.0], [2.0, -2.0], [0.0, 0.0], [-0.5, 0.5]])),
        (
            torch.tensor([[2.0], [-4.0], [0.0], [1.0]]),
            None,
            torch.tensor([[-1.0, 1.0], [2.0, -2.0], [0.0, 0.0], [-0.5, 0.5]]),
        ),
    ],
    ids=["tensor", "tuple", "list", "dict", "one-logit", "one-column"],
)
def test_outputs_become_logits(output: object, choice: int | str | None, expected: torch.Tensor) -> None:
    assert torch.equal(as_logits(output, choice, 4), expected)


def test_one_logit_keeps_the_models_probability() -> None:
    z = torch.linspace(-5, 5, 11)
    probabilities = as_logits(z, None, 11).softmax(dim=1)
    torch.testing.assert_close(probabilities[:, 1], torch.sigmoid(z))


@pytest.mark.parametrize(
    ("output", "choice", "location", "message"),
    [
        ((torch.ones(4, 3), torch.ones(4)), None, ("model",), "pick the logits with model.output: 0"),
        ({"aux": 1, "out": torch.ones(4, 3)}, None, ("model",), "pick the logits with model.output: out"),
        ((torch.ones(4, 3),), 2, ("model", "output"), "output must be an index below 1"),
        ({"aux": torch.ones(4)}, "logits", ("model", "output"), "has no key 'logits' (its keys: 'aux')"),
        (torch.ones(4, 3), 0, ("model", "output"), "output picks from a tuple or dict only: remove it"),
        ("text", None, ("model",), "the model returns a str, not a tensor of logits"),
        (torch.ones(4, 3, 2), None, ("model",), "the model's output is (N, 3, 2) for 4 images"),
        (torch.ones(5, 3), None, ("model",), "the model's output is (5, 3) for 4 images"),
    ],
    ids=[
        "tuple-unpicked",
        "dict-unpicked",
        "index-too-large",
        "missing-key",
        "not-a-container",
        "not-a-tensor",
        "maps",
        "wrong-count",
    ],
)
def test_outputs_that_are_not_logits(
    output: object, choice: int | str | None, location: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SpecRuntimeError, match=re.escape(message)) as raised:
        as_logits(output, choice, 4)
    assert raised.value.location == location
