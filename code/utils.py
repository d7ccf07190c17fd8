import math
import warnings
from collections import Counter
from bisect import bisect_right

import cv2
import numpy as np

import torch
from torch.optim.lr_scheduler import _LRScheduler

cv2.setNumThreads(0)  # added: DataLoader workers already run in parallel; OpenCV's own threads would oversubscribe the cores


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image."""


def load_image(path):
    """Read an image file as an RGB array (H, W, 3) uint8 in [0, 255].

    Raises:
        ImageReadError: naming the path when the file cannot be decoded.
    """
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"cannot read image {path} (missing, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def save_image(path, img):
    img = img.copy()[:, :, ::-1]
    return cv2.imwrite(path, img)


def resize_image(img, new_size, interpolation):
    # resize an image into new_size (w * h) using specified interpolation
    # opencv has a weird rounding issue & this is a hacky fix
    # ref: https://github.com/opencv/opencv/issues/9096
    mapping_dict = {cv2.INTER_NEAREST: cv2.INTER_NEAREST_EXACT}
    if interpolation in mapping_dict:
        img = cv2.resize(img, new_size, interpolation=mapping_dict[interpolation])
    else:
        img = cv2.resize(img, new_size, interpolation=interpolation)
    return img


class AverageMeter(object):
    """Computes and stores the average and current value"""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0
        self.count = 0.0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class LinearWarmupCosineAnnealingLR(_LRScheduler):
    """Linear warmup from ``warmup_start_lr`` to each group's base lr over
    ``warmup_epochs`` steps, then cosine annealing to ``eta_min`` at ``max_epochs``.

    main.py steps it once per iteration, so both counts are in iterations. Unlike the
    course's chainable form, the learning rate is a closed-form function of ``last_epoch``:
    ``warmup_epochs=0`` starts at the base lr (the course's stays at ``warmup_start_lr``, 0,
    for the whole run), and main.py can re-plan a resumed run's length
    (``set_schedule_position``). ``step(epoch)`` uses the same closed form.
    """

    def __init__(
        self,
        optimizer,
        warmup_epochs,
        max_epochs,
        warmup_start_lr=0.0,
        eta_min=1e-8,
        last_epoch=-1,
    ):
        """
        Args:
            optimizer (Optimizer): Wrapped optimizer.
            warmup_epochs (int): Maximum number of iterations for linear warmup
            max_epochs (int): Maximum number of iterations
            warmup_start_lr (float): Learning rate to start the linear warmup. Default: 0.
            eta_min (float): Minimum learning rate. Default: 0.
            last_epoch (int): The index of last epoch. Default: -1.
        """
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min

        super(LinearWarmupCosineAnnealingLR, self).__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, step):
        if step < self.warmup_epochs:
            frac = step / max(1, self.warmup_epochs)
            return self.warmup_start_lr + frac * (base_lr - self.warmup_start_lr)
        span = max(1, self.max_epochs - self.warmup_epochs)
        progress = min(1.0, (step - self.warmup_epochs) / span)
        return self.eta_min + 0.5 * (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * progress))

    def get_lr(self):
        return [self._lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]
