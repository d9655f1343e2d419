"""Random draws that are the same whatever the batch, the shard or the worker a sample is in.

Every draw is made from a CPU generator seeded by the spec's seed, a salt naming the use and the
sample's index in the data set (docs/methods.md, "Seeds"), so a sample's noise, tie-breaks and
random baselines never depend on which other samples it is computed with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

_SEED_MIXERS = (1_000_003, 1_000_033, 1_009)

Draw = Literal["uniform", "normal", "bits"]


def seeded_generator(seed: int, salt: int, *parts: int) -> torch.Generator:
    """A CPU generator (the same draws on every device) seeded by mixing the spec's ``seed`` with
    a ``salt`` naming the use and up to two more ``parts`` (a sample's index, a perturbation's
    number): ``key = key · m + part`` for each, ``m`` in ``1 000 003, 1 000 033, 1 009``."""
    if len(parts) > len(_SEED_MIXERS) - 1:
        raise ValueError(f"seeded_generator mixes at most {len(_SEED_MIXERS) - 1} parts after the salt, got {parts}")
    key = int(seed)
    for multiplier, part in zip(_SEED_MIXERS, (salt, *parts), strict=False):
        key = key * multiplier + part
    return torch.Generator(device="cpu").manual_seed(key % 2**63)


def per_sample_draws(
    indices: Iterable[int], shape: tuple[int, ...], seed: int, salt: int, kind: Draw, *parts: int
) -> Tensor:
    """``(B, *shape)`` draws, sample ``i``'s from :func:`seeded_generator` ``(seed, salt, i, *parts)``:
    uniform in ``[0, 1)``, standard normal, or ``bits`` (int64 uniform in ``[0, 2**32)``)."""
    draws = []
    for index in indices:  # one generator per sample
        generator = seeded_generator(seed, salt, int(index), *parts)
        if kind == "uniform":
            draws.append(torch.rand(shape, generator=generator))
        elif kind == "normal":
            draws.append(torch.randn(shape, generator=generator))
        else:
            draws.append(torch.randint(0, 2**32, shape, generator=generator, dtype=torch.int64))
    if not draws:
        dtype = torch.int64 if kind == "bits" else torch.float32
        return torch.empty((0, *shape), dtype=dtype)
    return torch.stack(draws)


def sample_indices(indices: Sequence[int] | Tensor | None, count: int) -> list[int]:
    """The data-set indices of ``count`` samples as ints: ``indices``, by default ``0 .. count-1``
    (a batch that is the whole data set); refused unless there are ``count`` of them."""
    samples = list(range(count)) if indices is None else [int(i) for i in indices]
    if len(samples) != count:
        raise ValueError(f"indices must have N = {count} entries, got {len(samples)}")
    return samples
