"""Image I/O, meters and the learning-rate schedule used by main.py."""
import math

import cv2
import numpy as np
from torch.optim.lr_scheduler import LRScheduler

cv2.setNumThreads(0)  # DataLoader workers already run in parallel

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def load_image(filename):
    """Read an image file as an RGB array (H, W, 3) uint8 in [0, 255].

    Raises:
        ImageReadError: naming the path when the file cannot be decoded.
    """
    img = cv2.imread(filename, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"cannot read image {filename} (missing, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_image(filename, img, quality=90):
    """Write an RGB array (H, W, 3) uint8 to ``filename`` (format from its extension)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(filename, bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"cannot write image {filename}")


def resize_image(img, new_size, interpolation=cv2.INTER_LINEAR):
    """Resize an (H, W, C) image to ``new_size`` = (width, height).

    ``interpolation`` is an OpenCV flag (the course's convention) or a name in ``INTERPOLATIONS``.
    """
    if isinstance(interpolation, str):
        interpolation = INTERPOLATIONS[interpolation]
    return cv2.resize(img, tuple(int(s) for s in new_size), interpolation=interpolation)


class AverageMeter:
    """Running average of a scalar: ``update(val, n)`` adds ``n`` samples of mean ``val``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class LinearWarmupCosineAnnealingLR(LRScheduler):
    """Linear warmup from ``warmup_start_lr`` to each group's base lr over
    ``warmup_epochs`` steps, then cosine annealing to ``eta_min`` at ``max_epochs``.

    main.py steps it once per iteration, so both counts are in iterations. The
    learning rate is a closed-form function of ``last_epoch``, so a scheduler
    restored from ``state_dict()`` continues the exact same curve.
    """

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0,
                 eta_min=1e-8, last_epoch=-1):
        if not 0 <= warmup_epochs <= max_epochs:
            raise ValueError(f"need 0 <= warmup_epochs ({warmup_epochs}) <= max_epochs ({max_epochs})")
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, step):
        if step < self.warmup_epochs:
            frac = step / max(1, self.warmup_epochs)
            return self.warmup_start_lr + frac * (base_lr - self.warmup_start_lr)
        span = max(1, self.max_epochs - self.warmup_epochs)
        progress = min(1.0, (step - self.warmup_epochs) / span)
        return self.eta_min + 0.5 * (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * progress))

    def get_lr(self):
        return [self._lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]
