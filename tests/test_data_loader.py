"""DeviceLoader: batches, normalisation, determinism, the drop-last rule, and batched augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlal.data import (
    CIFAR_AUGMENT,
    FASHION_MNIST_AUGMENT,
    CropFlip,
    DeviceLoader,
    Loader,
    epoch_images,
    random_crop_flip,
    seeded_generator,
)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}
"""Normalisation that leaves pixel values unchanged (up to rounding): augmentation can be read back."""


def images(n: int, c: int = 3, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, c, side, side), dtype=np.uint8))


def loader(n: int = 10, batch_size: int = 4, **kwargs) -> DeviceLoader:
    kwargs.setdefault("mean", CIFAR_MEAN)
    kwargs.setdefault("std", CIFAR_STD)
    return DeviceLoader(images(n), torch.arange(n), batch_size=batch_size, **kwargs)


def batches(it) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(iter(it))


def test_batches_have_the_right_shapes_and_dtypes():
    data = loader(10, 4)
    assert isinstance(data, Loader)
    got = batches(data)
    assert [len(y) for _, y in got] == [4, 4, 2] and len(data) == 3 and data.num_samples == 10
    for x, y in got:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(10))  # no shuffle: fixed order


def test_normalisation_maps_the_mean_to_zero_and_mean_plus_std_to_one():
    mean, std = (0.5, 0.25, 0.75), (0.2, 0.1, 0.25)
    x = torch.empty(2, 3, 4, 4, dtype=torch.uint8)
    for c in range(3):
        x[0, c] = round(255 * mean[c])
        x[1, c] = round(255 * (mean[c] + std[c]))
    (out, _), = batches(DeviceLoader(x, torch.zeros(2, dtype=torch.int64), batch_size=2, mean=mean, std=std))
    assert out[0].abs().max() < 0.02
    assert (out[1] - 1).abs().max() < 0.03


def test_same_seed_and_epoch_give_identical_batches():
    a = loader(50, 8, shuffle=True, drop_last=True, augment=CIFAR_AUGMENT, seed=7)
    b = loader(50, 8, shuffle=True, drop_last=True, augment=CIFAR_AUGMENT, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(batches(a), batches(b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Iterating the same epoch again (a resumed run) gives the same batches too.
    for (xa, ya), (xb, yb) in zip(batches(a), batches(b), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_different_epoch_or_seed_gives_a_different_order():
    data = loader(50, 50, shuffle=True, seed=1)
    data.set_epoch(0)
    first = batches(data)[0][1]
    data.set_epoch(1)
    second = batches(data)[0][1]
    other = batches(loader(50, 50, shuffle=True, seed=2))[0][1]
    assert not torch.equal(first, second) and not torch.equal(first, other)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))  # each image once


def test_drop_last_drops_only_an_incomplete_batch_after_a_full_one():
    assert [len(y) for _, y in batches(loader(10, 4, drop_last=True))] == [4, 4]
    assert len(loader(10, 4, drop_last=True)) == 2
    # No full batch: the incomplete one is kept, or the epoch would train nothing.
    assert [len(y) for _, y in batches(loader(3, 4, drop_last=True, shuffle=True))] == [3]
    assert [len(y) for _, y in batches(loader(8, 4, drop_last=True))] == [4, 4]


@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 10])
def test_the_images_an_epoch_trains_on_are_what_training_compute_counts(n):
    assert sum(len(y) for _, y in batches(loader(n, 4, drop_last=True, shuffle=True))) == epoch_images(n, 4)


def test_an_empty_index_set_gives_an_empty_loader():
    data = loader(10, 4, indices=torch.empty(0, dtype=torch.int64))
    assert len(data) == 0 and data.num_samples == 0 and batches(data) == []


def test_indices_select_a_subset_without_copying_the_images():
    data = loader(10, 3, indices=torch.tensor([7, 2, 5]), shuffle=True)
    assert data.num_samples == 3
    assert sorted(torch.cat([y for _, y in batches(data)]).tolist()) == [2, 5, 7]
    ((x, y),) = batches(loader(10, 3, indices=torch.tensor([7, 2, 5]), **IDENTITY))
    assert y.tolist() == [7, 2, 5]
    assert torch.equal(x.round().to(torch.uint8), images(10)[[7, 2, 5]])


def test_channels_last_output():
    (x, _), *_ = batches(loader(10, 4, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


def _crops(image: torch.Tensor, pad: int, flips: bool, mode: str = "constant") -> list[torch.Tensor]:
    """Every crop of the padded image (and its mirror): the possible outputs of the augmentation."""
    padded = F.pad(image[None].float(), (pad,) * 4, mode=mode)[0]
    h, w = image.shape[1:]
    out = []
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + h, left : left + w]
            out += [crop, crop.flip(-1)] if flips else [crop]
    return out


def _matches(image: torch.Tensor, candidates: list[torch.Tensor]) -> list[int]:
    return [k for k, c in enumerate(candidates) if torch.equal(image.float(), c)]


def test_cifar_augmentation_is_a_crop_of_the_zero_padded_image_maybe_flipped():
    source = images(64, seed=3)
    data = DeviceLoader(
        source, torch.arange(64), batch_size=64, shuffle=False, augment=CIFAR_AUGMENT, seed=0, **IDENTITY
    )
    ((x, _),) = batches(data)
    out = x.round().to(torch.uint8)
    flipped = 0
    for i in range(64):
        found = _matches(out[i], _crops(source[i], 4, flips=True))
        assert found, f"image {i} is not a crop of its padded source"
        flipped += found[0] % 2
    assert 10 < flipped < 54  # both flipped and unflipped images occur
    assert not torch.equal(out, source)


def test_fashion_mnist_augmentation_shifts_by_at_most_two_and_never_flips():
    source = images(64, c=1, side=28, seed=4)
    data = DeviceLoader(
        source, torch.arange(64), batch_size=64, augment=FASHION_MNIST_AUGMENT, mean=(0.0,), std=(1 / 255,)
    )
    ((x, _),) = batches(data)
    out = x.round().to(torch.uint8)
    shifted = 0
    for i in range(64):
        candidates = _crops(source[i], 2, flips=False)
        assert _matches(out[i], candidates), f"image {i} is not a shifted crop"
        shifted += not torch.equal(out[i], source[i])
    assert shifted > 32


def test_reflect_padding_matches_torch_reflect_pad():
    source = images(32, seed=5)
    out = random_crop_flip(source, CropFlip(pad=4, flip=True, padding_mode="reflect"), seeded_generator(0))
    for i in range(32):
        assert _matches(out[i], _crops(source[i], 4, flips=True, mode="reflect"))


def test_augmentation_shifts_show_every_offset_up_to_the_pad():
    # Row r of the source holds value r + 1: the first non-zero row of the output gives the shift.
    source = (torch.arange(32, dtype=torch.uint8) + 1).view(1, 1, 32, 1).expand(400, 1, 32, 32).contiguous()
    out = random_crop_flip(source, CropFlip(pad=2, flip=False), seeded_generator(1))
    shifts = (out[:, 0, 16, 16].long() - 17).tolist()  # the centre pixel is never padding
    assert set(shifts) == {-2, -1, 0, 1, 2}


def test_no_augmentation_on_eval_batches_returns_the_images():
    source = images(6)
    ((x, _),) = batches(DeviceLoader(source, torch.arange(6), batch_size=6, **IDENTITY))
    assert torch.equal(x.round().to(torch.uint8), source)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches():
    kwargs = {"batch_size": 16, "shuffle": True, "drop_last": True, "augment": CIFAR_AUGMENT, "seed": 3}
    cpu = DeviceLoader(images(64), torch.arange(64), mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs)
    gpu = DeviceLoader(images(64).cuda(), torch.arange(64).cuda(), mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs)
    for (xc, yc), (xg, yg) in zip(batches(cpu), batches(gpu), strict=True):
        assert xg.is_cuda and torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())


def test_epoch_draws_match_a_draw_per_batch():
    # The loader draws an epoch's crop/flip numbers at once; they must be the numbers a draw per batch on
    # the same generator gives, so seeded runs keep their batches.
    source, n, bs, seed, epoch = images(70, seed=6), 70, 16, 5, 2
    data = DeviceLoader(source, torch.arange(n), batch_size=bs, shuffle=True, augment=CIFAR_AUGMENT,
                        seed=seed, **IDENTITY)
    data.set_epoch(epoch)
    generator = seeded_generator(seed, epoch)
    perm = torch.randperm(n, generator=generator)
    expected = [random_crop_flip(source[perm[k : k + bs]], CIFAR_AUGMENT, generator) for k in range(0, n, bs)]
    got = batches(data)
    assert len(got) == len(expected) == 5
    for (x, y), want, k in zip(got, expected, range(0, n, bs), strict=True):
        assert torch.equal(y, perm[k : k + bs])
        assert torch.equal(x.round().to(torch.uint8), want)
