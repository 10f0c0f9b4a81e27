"""ImageNet-style PIL transforms, written out by hand (no torchvision): PIL image to uint8 ``3,S,S``.

Randomness comes from a :class:`torch.Generator` passed per call, so an image's augmentation is a
function of its seed alone, whichever worker process decodes it. Normalisation is left to the
loader, which does it on the device (uint8 batches are 4x cheaper to move than float32).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from rlal.data.decode import to_rgb


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 ``3,H,W`` tensor."""
    array = np.asarray(to_rgb(img))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def random_resized_crop_box(
    width: int,
    height: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random crop covering ``scale`` of the area with aspect in ``ratio``.

    Ten tries, as torchvision; then its fallback: the largest centred crop with the aspect clamped
    to ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class TrainTransform:
    """Random-resized crop to ``size`` (scale 0.08-1, aspect 3/4-4/3) and a random horizontal flip."""

    def __init__(self, size: int = 224) -> None:
        self.size = size

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        img = to_rgb(img)
        left, top, w, h = random_resized_crop_box(img.width, img.height, generator)
        # resize with a box crops and resizes in one pass (bilinear, antialiased when shrinking).
        box = (left, top, left + w, top + h)
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if bool(torch.rand(1, generator=generator) < 0.5):
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_uint8_tensor(out)


class EvalTransform:
    """Resize the shorter side to ``resize`` (256) then take the centred ``size`` x ``size`` (224) crop."""

    def __init__(self, size: int = 224, resize: int = 256) -> None:
        if resize < size:
            raise ValueError(f"resize ({resize}) must be >= the crop size ({size})")
        self.size = size
        self.resize = resize

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(self.resize * long / short)  # torchvision's rounding
        new_w, new_h = (self.resize, new_long) if w <= h else (new_long, self.resize)
        if img.format == "JPEG":
            img.draft("RGB", (new_w, new_h))  # decode at a reduced DCT scale, never below the target size
        img = to_rgb(img).resize((new_w, new_h), Image.Resampling.BILINEAR)
        left = round((new_w - self.size) / 2)
        top = round((new_h - self.size) / 2)
        return to_uint8_tensor(img.crop((left, top, left + self.size, top + self.size)))


class ResizeTransform:
    """The whole image resized to ``size`` x ``size`` (nothing cropped), as small images are evaluated.
    An image already of that size passes unchanged."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = to_rgb(img)
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return to_uint8_tensor(img)


class PadCropFlipTransform:
    """CIFAR-style training augmentation for small images: resized to ``size`` x ``size``, zero-padded by
    ``pad`` pixels a side (default ``size // 8``: 4 for 32) and randomly cropped back to ``size``, then
    flipped left-right with probability 1/2."""

    def __init__(self, size: int, pad: int | None = None) -> None:
        self.size = size
        self.pad = max(1, size // 8) if pad is None else pad
        self._resize = ResizeTransform(size)

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        image = self._resize(img)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,), generator=generator).tolist()
        padded = torch.nn.functional.pad(image, (self.pad,) * 4)
        out = padded[:, top:top + self.size, left:left + self.size]
        if bool(torch.rand(1, generator=generator) < 0.5):
            out = out.flip(2)
        return out.contiguous()
