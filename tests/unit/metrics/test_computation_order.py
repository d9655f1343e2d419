"""The order of cascading randomisation: the computation's, from the output down, with the
layers whose output never reaches the output named."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from pytest_saliency.metrics.sanity import computation_order, parameterised_layers


class Heads(nn.Module):
    """Defined head-first, computed trunk-first; ``box`` is computed but never returned."""

    def __init__(self) -> None:
        super().__init__()
        self.face = nn.Linear(8, 3)
        self.box = nn.Linear(8, 4)
        self.trunk = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.PReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 8))

    def forward(self, x: Tensor) -> Tensor:
        features = self.trunk(x)
        self.box(features)
        logits: Tensor = self.face(features)
        return logits


class Wrapper(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.network(x)
        return logits


def test_the_order_is_the_computations_from_the_output_down_and_unused_heads_are_named() -> None:
    network = Heads()
    assert parameterised_layers(network) == ["trunk.3", "trunk.1", "trunk.0", "box", "face"]  # definition order
    top_down, detached = computation_order(Wrapper(network), network, torch.rand(2, 3, 4, 4))
    assert top_down == ["face", "box", "trunk.3", "trunk.1", "trunk.0"]
    assert detached == ["box"]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_network_that_takes_no_hooks_keeps_the_reverse_definition_order() -> None:
    network = torch.jit.script(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)))
    top_down, detached = computation_order(Wrapper(network), network, torch.rand(2, 3, 4, 4))
    assert top_down == parameterised_layers(network) == ["2", "0"] and detached == []
