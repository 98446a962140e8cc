"""Turning stored uint8 batches into model inputs on the device: scaling and augmentation."""

import torch
from omegaconf import DictConfig


class Preprocess:
    """Scale (and, for training batches, augment) a batch already on the model's device."""

    def __init__(self, ds: DictConfig) -> None:
        self.normalize = ds.normalize
        self.augment = ds.augment
        self.padding = int(ds.crop_padding)
        self.mean = torch.tensor(ds.mean) if ds.mean else None
        self.std = torch.tensor(ds.std) if ds.std else None

    def __call__(
        self, x: torch.Tensor, train: bool = False, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 images are scaled to [0, 1] first; float inputs (feature vectors) are not."""
        if self.normalize == "none":
            return x.float()
        unit = 1.0 if x.is_floating_point() else 255.0
        x = x.float() if x.is_floating_point() else x.float().div(255.0)
        if train and self.augment == "crop_flip":
            x = random_crop_flip(x, self.padding, gen)
        if self.normalize == "symmetric":
            return (x - 0.5) * 2.0
        if self.normalize == "per_image":
            return per_image_standardization(x, unit)
        if self.normalize == "standard":
            # Per channel of an image [N, C, H, W], per feature of a vector [N, D].
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return (x - self.mean.to(x.device).view(shape)) / self.std.to(x.device).view(shape)
        return x


def per_image_standardization(x: torch.Tensor, unit: float = 1.0) -> torch.Tensor:
    """Each example minus its own mean over all its values, divided by their (population) std,
    at least 1 / sqrt(values): tf.image.per_image_standardization on the stored values (uint8
    images, `unit` 255: the floor is taken in that scale, as TensorFlow sees them)."""
    flat = x.flatten(1)
    floor = 1.0 / (unit * flat.shape[1] ** 0.5)
    mean = flat.mean(1)
    std = flat.std(1, correction=0).clamp_min(floor)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - mean.view(shape)) / std.view(shape)


def random_crop_flip(x: torch.Tensor, padding: int, gen: torch.Generator | None) -> torch.Tensor:
    """Zero-pad, take a random crop of the original size, flip horizontally with probability 1/2."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dev = x.device
    off_y = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=dev)
    off_x = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=dev)
    flip = torch.rand(n, generator=gen, device=dev) < 0.5
    rows = off_y[:, None] + torch.arange(h, device=dev)
    cols = off_x[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
