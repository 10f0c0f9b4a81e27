"""Batched image operations on the device: random pad-and-crop with flip, and normalisation.

The crop is one gather with a per-image index grid over the pixels: no loop over images, the same
code on CPU and CUDA. Random numbers come from a CPU generator, so a seed gives the same batches
whatever the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropFlip:
    """Random crop of the image padded by ``pad`` on each side, then an optional horizontal flip."""

    pad: int
    flip: bool
    padding_mode: Literal["zeros", "reflect"] = "zeros"


CIFAR_AUGMENT = CropFlip(pad=4, flip=True)
FASHION_MNIST_AUGMENT = CropFlip(pad=2, flip=False)


def random_crop_flip(images: torch.Tensor, aug: CropFlip, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch ``N,C,H,W`` (any dtype): each image is an ``H x W`` crop of itself padded by
    ``aug.pad`` (zeros or reflection), mirrored left-right with probability 1/2 when ``aug.flip``.

    Same as torchvision's ``RandomCrop(H, padding=pad)`` then ``RandomHorizontalFlip`` per image,
    done as one ``gather`` over the flattened pixels with a per-image index grid.
    """
    draws = draw_crop_flip(len(images), aug, generator)
    return crop_flip(images, aug, draws.to(images.device, non_blocking=True))


def draw_crop_flip(n: int, aug: CropFlip, generator: torch.Generator) -> torch.Tensor:
    """The random numbers :func:`random_crop_flip` draws for ``n`` images, as a CPU int64 ``3,n`` tensor
    (rows: top and left offset in the padded image, flipped or not). Drawn on a CPU generator, so a seed
    gives the same batches whatever the device."""
    draws = torch.randint(0, 2 * aug.pad + 1, (3, n), generator=generator)
    if aug.flip:
        draws[2] = (torch.rand(n, generator=generator) < 0.5).long()
    return draws


def crop_flip(images: torch.Tensor, aug: CropFlip, draws: torch.Tensor) -> torch.Tensor:
    """:func:`random_crop_flip` with its numbers given: ``draws`` from :func:`draw_crop_flip`, on the
    images' device."""
    n, c, h, w = images.shape
    pad = aug.pad
    if aug.padding_mode == "reflect" and pad >= min(h, w):
        raise ValueError(f"reflect padding {pad} needs images larger than {pad} pixels")
    device = images.device
    top, left, flipped = draws.unbind(0)
    rows = torch.arange(h, device=device) + top[:, None]  # N,H: row of the padded image
    cols = torch.arange(w, device=device).expand(n, w)
    if aug.flip:
        cols = torch.where(flipped[:, None] == 1, w - 1 - cols, cols)  # flip after the crop, as torchvision
    cols = cols + left[:, None]
    if aug.padding_mode == "reflect":
        # Index the unpadded image through the mirror (uint8 reflect padding is not on every device).
        source, width = images, w
        rows, cols = _reflect(rows - pad, h), _reflect(cols - pad, w)
    else:
        source, width = F.pad(images, (pad, pad, pad, pad)), w + 2 * pad
    pixels = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return source.reshape(n, c, -1).gather(2, pixels).view(n, c, h, w)


def normalizer(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, bias)`` of shape ``1,C,1,1`` such that ``uint8 * scale + bias == (x / 255 - mean) / std``."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1.0 / (255.0 * s)).to(device), (-m / s).to(device)


def normalize(
    images: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """uint8 ``N,C,H,W`` to normalised float32, optionally in channels-last memory format."""
    out = torch.addcmul(bias, images.float(), scale)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # Mirror without repeating the edge pixel (torch/numpy "reflect"): -1 -> 1, size -> size - 2.
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)
