"""Token and channels-last layers seen as ``(N, D, h, w)`` feature grids, and ``layer: auto``.

A transformer block outputs tokens ``(N, T, D)``: ``k`` prefix tokens (class, distillation,
registers) then the ``h * w`` patch tokens in row-major order. Swin's stages and the sublayers of
ConvNeXt's blocks output channels-last maps ``(N, h, w, D)``. Layer methods need ``(N, D, h, w)``
grids: :class:`GridLayout` says how a layer's output becomes one and back, :func:`infer_layout`
finds it from the output's shape, the input size and the model's patch size, and
:func:`grid_view` makes a layer's grid a module that captum can hook.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import Location, SpecRuntimeError, did_you_mean

MAX_PREFIX_TOKENS = 16
"""The most prefix tokens (class, distillation, registers) inferred without ``reshape``."""


class LayoutError(ValueError):
    """A layer's output cannot be read as a feature grid; the message names shape and setting."""


@dataclass(frozen=True)
class GridLayout:
    """How a layer's output becomes a ``(N, D, h, w)`` grid: ``tokens`` ``(N, prefix + h*w, D)``
    or ``channels_last`` ``(N, h, w, D)``; neither means it already is one."""

    tokens: bool = False
    prefix: int = 0
    grid: tuple[int, int] = (0, 0)
    channels_last: bool = False

    @property
    def is_identity(self) -> bool:
        """The output is already an ``(N, D, h, w)`` grid."""
        return not self.tokens and not self.channels_last

    def to_grid(self, output: Tensor) -> Tensor:
        """The layer's output as ``(N, D, h, w)``."""
        if self.tokens:
            h, w = self.grid
            return output[:, self.prefix :].reshape(output.shape[0], h, w, output.shape[2]).permute(0, 3, 1, 2)
        if self.channels_last:
            return output.permute(0, 3, 1, 2)
        return output

    def from_grid(self, grid: Tensor, output: Tensor) -> Tensor:
        """``grid`` ``(N, D, h, w)`` back in the layout of ``output`` (its prefix tokens kept)."""
        if self.tokens:
            patches = grid.permute(0, 2, 3, 1).reshape(grid.shape[0], -1, grid.shape[1])
            return torch.cat((output[:, : self.prefix], patches), dim=1)
        if self.channels_last:
            return grid.permute(0, 2, 3, 1)
        return grid

    def describe(self) -> str:
        """``"tokens: 1 prefix, grid 4x4"``, ``"channels-last"`` or ``"grid"``."""
        if self.tokens:
            return f"tokens: {self.prefix} prefix, grid {self.grid[0]}x{self.grid[1]}"
        return "channels-last" if self.channels_last else "grid"


def first_tensor(output: object) -> Tensor | None:
    """The tensor a module returns, or the first element of a returned tuple or list."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    return output if isinstance(output, Tensor) else None


def patch_size(network: nn.Module) -> int | None:
    """The stride of the network's first ``Conv2d`` whose kernel equals its stride (a patch
    embedding: torchvision's ``conv_proj``, timm's and Hugging Face's ``patch_embed``), if any."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == module.stride and module.stride[0] > 1:
            return int(module.stride[0])
    return None


def infer_layout(
    shape: tuple[int, ...],
    input_size: tuple[int, int],
    patch: int | None,
    layer: nn.Module,
    *,
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    channels_last: bool | None = None,
) -> GridLayout:
    """The :class:`GridLayout` of a layer output of ``shape`` for inputs of ``input_size``
    ``(H, W)``; the keyword settings (the spec's ``reshape``) override what is inferred.

    Tokens ``(N, T, D)``: the grid is ``(H // patch, W // patch)`` when that leaves
    ``0 <= T - h*w <= 16`` prefix tokens, else the fewest prefix tokens whose remaining count
    is an ``h × w`` grid of the input's aspect ratio. A 4-D output is channels-last when only
    its dims 1-2 have the input's aspect ratio, or, when both readings do, when its last dim is
    the width of a ``LayerNorm`` or ``Linear`` output in ``layer``. Raises :class:`LayoutError`."""
    shown = "(N, " + ", ".join(str(size) for size in shape[1:]) + ")"
    if len(shape) == 4:
        if channels_last is None:
            channels_last = _reads_channels_last(shape, input_size, layer)
        return GridLayout(channels_last=channels_last)
    if len(shape) != 3:
        raise LayoutError(f"outputs {shown}, neither tokens (N, T, D) nor a feature map (N, D, h, w)")
    tokens = shape[1]
    if grid is not None:
        prefix = tokens - grid[0] * grid[1] if prefix_tokens is None else prefix_tokens
        if prefix < 0 or prefix + grid[0] * grid[1] != tokens:
            raise LayoutError(f"outputs {shown}: {tokens} tokens are not reshape.grid {list(grid)} plus prefix tokens")
        return GridLayout(tokens=True, prefix=prefix, grid=grid)
    candidates = [prefix_tokens] if prefix_tokens is not None else range(min(MAX_PREFIX_TOKENS, tokens - 1) + 1)
    if patch is not None and prefix_tokens is None:
        by_patch = (input_size[0] // patch, input_size[1] // patch)
        if 0 <= tokens - by_patch[0] * by_patch[1] <= MAX_PREFIX_TOKENS:
            return GridLayout(tokens=True, prefix=tokens - by_patch[0] * by_patch[1], grid=by_patch)
    for prefix in candidates:
        found = _grid_of(tokens - prefix, input_size)
        if found is not None:
            return GridLayout(tokens=True, prefix=prefix, grid=found)
    raise LayoutError(
        f"outputs {shown}: cannot infer which of its {tokens} tokens form a grid; "
        "set reshape: {prefix_tokens: <k>, grid: [<h>, <w>]}"
    )


def _grid_of(count: int, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """``(h, w)`` with ``h * w = count`` and ``h / w = H / W``, if any."""
    height, width = input_size
    if count <= 0:
        return None
    h = round(math.sqrt(count * height / width))
    if h > 0 and count % h == 0 and h * width == (count // h) * height:
        return h, count // h
    return None


def _same_ratio(h: int, w: int, input_size: tuple[int, int]) -> bool:
    return h <= input_size[0] and w <= input_size[1] and h * input_size[1] == w * input_size[0]


def _reads_channels_last(shape: tuple[int, ...], input_size: tuple[int, int], layer: nn.Module) -> bool:
    first, last = _same_ratio(shape[2], shape[3], input_size), _same_ratio(shape[1], shape[2], input_size)
    if first != last:
        return last
    widths = {m.normalized_shape[-1] for m in layer.modules() if isinstance(m, nn.LayerNorm)}
    widths |= {m.out_features for m in layer.modules() if isinstance(m, nn.Linear)}
    return shape[3] in widths and shape[1] not in widths


class GridView(nn.Module):
    """The identity on a layer's ``(N, D, h, w)`` grid: the module captum hooks for a token or
    channels-last layer (see :func:`grid_view`)."""

    def forward(self, grid: Tensor) -> Tensor:
        return grid


@contextmanager
def grid_view(layer: nn.Module, view: GridView, layout: GridLayout) -> Iterator[None]:
    """While open, ``layer``'s output passes through ``view`` as a ``(N, D, h, w)`` grid (and
    back into its own layout), so hooks on ``view`` see and may replace the grid; the hook is
    removed on exit."""

    def regrid(_module: nn.Module, _inputs: object, output: object) -> object:
        tokens = first_tensor(output)
        if tokens is None:
            return None
        replaced = layout.from_grid(view(layout.to_grid(tokens)), tokens)
        if isinstance(output, tuple | list):
            return type(output)([replaced, *output[1:]])
        return replaced

    handle = layer.register_forward_hook(regrid)
    try:
        yield
    finally:
        handle.remove()


PROBE_BATCH = 2
""":func:`output_shapes` runs this many copies of one image: an output with as many rows is
computed per sample; one that is not (Swin V2's position-bias MLP, run on a table of
coordinates) is never a CAM layer."""


def output_shapes(network: nn.Module, images: Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, output shape)`` of every named module of ``network`` in the order their forward
    calls return (children before their parents), from one forward pass on ``PROBE_BATCH``
    copies of ``images[0]`` (``(N, C, H, W)``)."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in network.named_modules():
        if not name:
            continue

        def record(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                shapes.append((name, tuple(tensor.shape)))

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            network(torch.cat([images[:1]] * PROBE_BATCH))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def pick_cam_layer(network: nn.Module, shapes: list[tuple[str, tuple[int, ...]]], input_size: tuple[int, int]) -> str:
    """The layer ``layer: auto`` picks for CAM methods, from :func:`output_shapes`: in a token
    model (a list of blocks with ``(N, T, D)`` outputs) the last block's first ``LayerNorm``;
    else the last module with parameters, in completion order, whose output is a feature map
    (channels first or last) per sample larger than 1×1, or failing that any such feature map."""
    by_name = dict(shapes)
    blocks = _last_token_blocks(network, by_name)
    if blocks is not None:
        last = f"{blocks}.{list(network.get_submodule(blocks).named_children())[-1][0]}"
        norms = {f"{last}.{name}" for name, m in network.get_submodule(last).named_modules() if _is_norm(m)}
        first = next((name for name, _ in shapes if name in norms), None)
        if first is not None:
            return first
    maps = [
        (name, shape)
        for name, shape in shapes
        if len(shape) == 4 and shape[0] == PROBE_BATCH and any(True for _ in network.get_submodule(name).parameters())
    ]
    larger = [name for name, shape in maps if _spatial(shape, input_size) > 1]
    if larger or maps:
        return (larger or [name for name, _ in maps])[-1]
    raise LayoutError("has no layer with a feature map or tokens to pick: name one with layer: <dotted module name>")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or type(module).__name__.endswith("LayerNorm")


def _spatial(shape: tuple[int, ...], input_size: tuple[int, int]) -> int:
    """``h * w`` of a 4-D output read channels first or, if only that fits, channels last."""
    if _same_ratio(shape[2], shape[3], input_size):
        return shape[2] * shape[3]
    return shape[1] * shape[2]


def _last_token_blocks(network: nn.Module, by_name: dict[str, tuple[int, ...]]) -> str | None:
    """The name of the last ``ModuleList``/``Sequential`` of at least two modules of one type,
    each with a norm layer and ``(N, T, D)`` outputs (the blocks of a ViT), if any."""
    found = None
    for name, module in network.named_modules():
        if not isinstance(module, nn.ModuleList | nn.Sequential) or len(module) < 2:
            continue
        children = list(module.named_children())
        if len({type(child) for _, child in children}) != 1:
            continue
        outputs = [by_name.get(f"{name}.{child}" if name else child) for child, _ in children]
        if all(shape is not None and len(shape) == 3 for shape in outputs) and any(
            _is_norm(m) for m in module.modules()
        ):
            found = name
    return found


def resolve_layer(network: nn.Module, name: str, location: Location) -> nn.Module:
    """``network.get_submodule(name)``, or a :class:`SpecRuntimeError` at ``location`` with a
    suggestion."""
    try:
        return network.get_submodule(name)
    except AttributeError:
        names = [named for named, _ in network.named_modules() if named]
        raise SpecRuntimeError(location, f"the model has no layer {name!r}{did_you_mean(name, names)}") from None
