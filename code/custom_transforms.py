"""Data augmentation on HWC uint8 numpy images (RGB), as read by utils.load_image.

Random transforms draw from Python's ``random`` module, which main.py seeds at
the start of every epoch (and DataLoader seeds per worker), so runs repeat.
Everything that is not named Random* is deterministic.
"""
import math
import random

import cv2
import numpy as np
import torch

from utils import INTERPOLATIONS, resize_image

_RANDOM_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}({inner}\n)"


class Scale:
    """Resize so that the shorter side is ``size`` (int), or to (width, height).

    ``interpolations`` is a tuple of names; with more than one, each call picks
    one at random (an augmentation: use it for training only). The default, a
    single bilinear, is deterministic, as validation needs.
    """

    def __init__(self, size, interpolations=("bilinear",)):
        if isinstance(interpolations, str):
            interpolations = (interpolations,)
        unknown = [i for i in interpolations if i not in INTERPOLATIONS]
        if unknown or not interpolations:
            raise ValueError(f"unknown interpolation(s) {unknown}; choose from {list(INTERPOLATIONS)}")
        self.size = size
        self.interpolations = tuple(interpolations)

    def __call__(self, img):
        interp = self.interpolations[0] if len(self.interpolations) == 1 else random.choice(self.interpolations)
        if isinstance(self.size, int):
            h, w = img.shape[:2]
            if min(h, w) == self.size:
                return img
            if w < h:
                new_size = (self.size, int(round(self.size * h / w)))
            else:
                new_size = (int(round(self.size * w / h)), self.size)
        else:
            new_size = tuple(self.size)
        return resize_image(img, new_size, interp)

    def __repr__(self):
        return f"Scale(size={self.size}, interpolations={self.interpolations})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return np.ascontiguousarray(img[:, ::-1])
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class CenterCrop:
    """Crop the central ``size`` x ``size`` region (int) or (width, height)."""

    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, img):
        tw, th = self.size
        h, w = img.shape[:2]
        if tw > w or th > h:
            raise ValueError(f"CenterCrop{self.size} is larger than the image ({w}x{h})")
        x0 = int(round((w - tw) / 2.0))
        y0 = int(round((h - th) / 2.0))
        return img[y0:y0 + th, x0:x0 + tw]

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


class RandomSizedCrop:
    """Crop a random region of ``area_range`` of the image area and aspect ratio in
    ``ratio_range``, then resize it to ``size`` x ``size`` (Inception-style).

    Falls back to a centre crop of the shorter side after ``num_trials`` misses.
    """

    def __init__(self, size, interpolations=_RANDOM_INTERPOLATIONS,
                 area_range=(0.25, 1.0), ratio_range=(3.0 / 4.0, 4.0 / 3.0), num_trials=10):
        self.size = size
        self.interpolations = tuple(interpolations)
        self.area_range = area_range
        self.ratio_range = ratio_range
        self.num_trials = num_trials

    def __call__(self, img):
        h, w = img.shape[:2]
        interp = random.choice(self.interpolations)
        log_ratio = (math.log(self.ratio_range[0]), math.log(self.ratio_range[1]))
        for _ in range(self.num_trials):
            area = h * w * random.uniform(*self.area_range)
            ratio = math.exp(random.uniform(*log_ratio))
            cw = int(round(math.sqrt(area * ratio)))
            ch = int(round(math.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = random.randint(0, w - cw)
                y0 = random.randint(0, h - ch)
                crop = img[y0:y0 + ch, x0:x0 + cw]
                return resize_image(crop, (self.size, self.size), interp)
        side = min(h, w)
        crop = CenterCrop(side)(img)
        return resize_image(crop, (self.size, self.size), interp)

    def __repr__(self):
        return (f"RandomSizedCrop(size={self.size}, area_range={self.area_range}, "
                f"ratio_range={self.ratio_range})")


class RandomColor:
    """Scale each RGB channel by an independent factor in [1 - r, 1 + r]."""

    def __init__(self, color_range):
        self.color_range = color_range

    def __call__(self, img):
        r = self.color_range
        gains = np.array([random.uniform(1 - r, 1 + r) for _ in range(3)], dtype=np.float32)
        out = img.astype(np.float32) * gains  # (H, W, 3) * (3,)
        return np.clip(out, 0, 255).astype(np.uint8)

    def __repr__(self):
        return f"RandomColor(color_range={self.color_range})"


class RandomRotate:
    """Rotate by a random angle in [-degree, degree] about the centre, then crop
    the largest axis-aligned rectangle that holds no border pixels."""

    def __init__(self, degree, interpolations=_RANDOM_INTERPOLATIONS):
        self.degree = degree
        self.interpolations = tuple(interpolations)

    @staticmethod
    def _inner_rect(w, h, angle):
        """Largest axis-aligned (width, height) inside a w x h box rotated by ``angle`` rad."""
        sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
        long_side, short_side = (w, h) if w >= h else (h, w)
        if short_side <= 2.0 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
            x = 0.5 * short_side
            wr, hr = (x / sin_a, x / cos_a) if w >= h else (x / cos_a, x / sin_a)
        else:
            cos_2a = cos_a * cos_a - sin_a * sin_a
            wr = (w * cos_a - h * sin_a) / cos_2a
            hr = (h * cos_a - w * sin_a) / cos_2a
        return int(wr), int(hr)

    def __call__(self, img):
        angle = random.uniform(-self.degree, self.degree)
        if abs(angle) < 1e-3:
            return img
        h, w = img.shape[:2]
        interp = INTERPOLATIONS[random.choice(self.interpolations)]
        rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        out = cv2.warpAffine(img, rot, (w, h), flags=interp)
        cw, ch = self._inner_rect(w, h, math.radians(angle))
        return CenterCrop((max(1, cw), max(1, ch)))(out)

    def __repr__(self):
        return f"RandomRotate(degree={self.degree})"


class ToTensor:
    """(H, W, C) uint8 in [0, 255] -> (C, H, W) float32 in [0, 1]."""

    def __call__(self, img):
        if img.ndim == 2:
            img = img[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (C, H, W)
        return tensor.float().div_(255.0)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(C, H, W) float: subtract the per-channel ``mean`` and divide by ``std``."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)

    def __call__(self, tensor):
        return (tensor - self.mean.to(tensor.device)) / self.std.to(tensor.device)

    def __repr__(self):
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Denormalize(Normalize):
    """Inverse of :class:`Normalize`, on (C, H, W) or (B, C, H, W) tensors."""

    def __call__(self, tensor):
        return tensor * self.std.to(tensor.device) + self.mean.to(tensor.device)
