"""Attention rollout and attention relevance beside the bare passes of the same ViT.

``python benchmarks/attention.py [--library torchvision|timm|huggingface] [--batch-size 16]``
times, on one batch of random 224×224 images and a randomly initialised ViT-S/16-sized model
(12 blocks, width 384, 6 heads), best of ``--repeats``: the bare forward pass, the bare
forward+backward pass (gradient of the target logits with respect to the input, as a
gradient method pays), ``attention_rollout`` and ``attention_relevance`` through
:class:`~pytest_saliency.attribution.Attributor`. It prints each time and the ratio of each map to
the forward+backward pass (the target: at most 1.5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import best_of, cpu_name  # noqa: E402
from pytest_saliency.attribution import Attributor  # noqa: E402
from pytest_saliency.loaders.models import ModelUnderTest  # noqa: E402
from pytest_saliency.spec.schema import AttributionSpec  # noqa: E402

DEPTH, WIDTH, HEADS, CLASSES = 12, 384, 6, 1000


def vit(library: str) -> ModelUnderTest:
    """A ViT-S/16-sized ViT of ``library``, random weights, in eval mode."""
    torch.manual_seed(0)
    if library == "torchvision":
        from torchvision.models import VisionTransformer

        network: nn.Module = VisionTransformer(224, 16, DEPTH, HEADS, WIDTH, 4 * WIDTH, num_classes=CLASSES)
        nn.init.normal_(network.heads.head.weight, std=0.02)  # torchvision's zero head has no gradient
        return ModelUnderTest(network, None).eval()
    if library == "timm":
        import timm

        network = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=CLASSES)
        return ModelUnderTest(network, None).eval()
    import transformers

    config = transformers.ViTConfig(
        hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * WIDTH
    )
    config.num_labels = CLASSES
    return ModelUnderTest(transformers.ViTForImageClassification(config), None, output="logits").eval()


def forward(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model(images)


def forward_backward(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    inputs = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs).gather(1, targets.view(-1, 1)).sum(), inputs)
    return gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", choices=("torchvision", "timm", "huggingface"), default="torchvision")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = vit(args.library).to(device)
    images = torch.rand(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(device)
    targets = torch.arange(args.batch_size, device=device) % CLASSES
    indices = list(range(args.batch_size))
    times = {
        "forward": best_of(args.repeats, lambda: forward(model, images))[0],
        "forward_backward": best_of(args.repeats, lambda: forward_backward(model, images, targets))[0],
    }
    for method in ("attention_rollout", "attention_relevance"):
        attributor = Attributor(AttributionSpec(method=method), model, args.batch_size, ("attributions", method))
        times[method] = best_of(args.repeats, lambda a=attributor: a(images, targets, indices, 0))[0]  # type: ignore[misc]
    print(f"device: {device} ({cpu_name() if device.type == 'cpu' else torch.cuda.get_device_name(device)})")
    print(f"library: {args.library}, ViT-S/16 sized, batch {args.batch_size}, 224x224, best of {args.repeats}")
    for name, seconds in times.items():
        print(f"{name}: {seconds:.3f} s")
    for method in ("attention_rollout", "attention_relevance"):
        print(f"{method}_ratio: {times[method] / times['forward_backward']:.2f}  (map / bare forward+backward)")


if __name__ == "__main__":
    main()
