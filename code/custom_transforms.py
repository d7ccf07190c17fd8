"""Data augmentation on HWC uint8 numpy images (RGB), as read by utils.load_image.

The course's classes keep the course's names, signatures and conventions: an
``interpolations`` argument is a list of OpenCV flags (``cv2.INTER_NEAREST``,
``cv2.INTER_LINEAR``, ...) of which each call draws one at random, or None for
always ``cv2.INTER_LINEAR`` (deterministic, for validation). Flag names
("bilinear", ...) are accepted too.

Two additions make a training image cost one resampling pass: ``RandomWarpCrop``
(scale jitter, rotation, random-sized crop and flip as one affine warp) and
``ToUint8Tensor`` (CHW uint8, for normalizing on the device).

Random transforms draw from Python's ``random`` module, which main.py seeds per
sample, so runs repeat and resume exactly. Everything not named Random* is deterministic.
"""
import math
import random

import cv2
import numpy as np
import torch

from utils import INTERPOLATIONS

DEFAULT_INTERPOLATIONS = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC]
WARP_INTERPOLATIONS = [cv2.INTER_NEAREST, cv2.INTER_LINEAR]
_WARP_FLAGS = {cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4}


def _interpolation_flags(interpolations, allowed=None):
    """The list of OpenCV flags that ``interpolations`` names: None -> [cv2.INTER_LINEAR];
    a flag or name, or a list of them. Raises ValueError on unknown or empty entries."""
    if interpolations is None:
        return [cv2.INTER_LINEAR]
    if isinstance(interpolations, (int, str)):
        interpolations = [interpolations]
    flags = [INTERPOLATIONS.get(i, -1) if isinstance(i, str) else i for i in interpolations]
    known = set(INTERPOLATIONS.values()) | {cv2.INTER_LANCZOS4} if allowed is None else allowed
    unknown = [name for name, flag in zip(interpolations, flags) if flag not in known]
    if unknown or not flags:
        raise ValueError(f"unknown interpolation(s) {unknown or '[]'}: give OpenCV flags such as "
                         f"cv2.INTER_LINEAR ({sorted(known)}) or names {list(INTERPOLATIONS)}")
    return flags


def _draw(flags):
    """One flag of ``flags``: the only one, or a random choice (no draw for a single flag)."""
    return flags[0] if len(flags) == 1 else random.choice(flags)


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


class RandomHorizontalFlip:
    """Mirror the (H, W, C) image left-right with probability ``p`` (0.5, as the course)."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return np.ascontiguousarray(img[:, ::-1])
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Scale:
    """Resize so that the shorter side is ``size`` (int), or to ``size`` = (width, height).

    ``interpolations``: a list of OpenCV flags drawn from at random per call (the default
    is the course's list, an augmentation), or None for always bilinear (validation).
    """

    def __init__(self, size, interpolations=DEFAULT_INTERPOLATIONS):
        self.size = size
        self.interpolations = _interpolation_flags(interpolations)

    def __call__(self, img):
        interp = _draw(self.interpolations)
        if isinstance(self.size, int):
            h, w = img.shape[:2]
            if min(h, w) == self.size:
                return img
            if w < h:
                new_size = (self.size, int(round(self.size * h / w)))
            else:
                new_size = (int(round(self.size * w / h)), self.size)
        else:
            new_size = tuple(int(s) for s in self.size)
        return cv2.resize(img, new_size, interpolation=interp)

    def __repr__(self):
        return f"Scale(size={self.size}, interpolations={self.interpolations})"


class CenterCrop:
    """Crop the central ``size`` x ``size`` region (int) or ``size`` = (width, height)."""

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
    """Crop a random region of ``area_range`` of the image area and aspect ratio (w / h) in
    ``ratio_range``, then resize it to ``size`` x ``size`` (Inception-style). After
    ``num_trials`` misses: Scale(size) and a centre crop, as the course does."""

    def __init__(self, size, interpolations=DEFAULT_INTERPOLATIONS, area_range=(0.25, 1.0),
                 ratio_range=(0.8, 1.2), num_trials=10):
        self.size = size
        self.interpolations = _interpolation_flags(interpolations)
        self.area_range = area_range
        self.ratio_range = ratio_range
        self.num_trials = num_trials

    def __call__(self, img):
        h, w = img.shape[:2]
        interp = _draw(self.interpolations)
        for _ in range(self.num_trials):
            area = h * w * random.uniform(*self.area_range)
            ratio = random.uniform(*self.ratio_range)
            cw = int(round(math.sqrt(area * ratio)))
            ch = int(round(math.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = random.randint(0, w - cw)
                y0 = random.randint(0, h - ch)
                return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (self.size, self.size), interpolation=interp)
        return CenterCrop(self.size)(Scale(self.size, [interp])(img))

    def __repr__(self):
        return (f"RandomSizedCrop(size={self.size}, area_range={self.area_range}, "
                f"ratio_range={self.ratio_range})")


class RandomColor:
    """Multiply each channel of an (H, W, 3) RGB image by its own gain ``1 + U(-color_range,
    color_range)``; values rounded to the nearest level and clipped to [0, 255], uint8 out. One
    ``cv2.transform`` by the diagonal gain matrix, which gives exactly the course's lookup table
    (``round(level * gain)``, saturated) in a tenth of its time."""

    def __init__(self, color_range):
        self.color_range = color_range

    def gains(self):
        """Draw the three channel gains, each in [1 - color_range, 1 + color_range]."""
        r = self.color_range
        return np.array([random.uniform(1 - r, 1 + r) for _ in range(3)])

    def __call__(self, img):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"RandomColor needs an (H, W, 3) RGB image, got shape {img.shape}")
        gains = np.zeros((3, 3), dtype=np.float32)
        gains.flat[::4] = self.gains()  # (3, 3) diagonal: out[c] = gain[c] * in[c]
        return cv2.transform(np.ascontiguousarray(img), gains)  # (H, W, 3) uint8, rounded, saturated

    def __repr__(self):
        return f"RandomColor(color_range={self.color_range})"


def inner_rect(w, h, angle):
    """Largest axis-aligned (width, height) inside a w x h box rotated by ``angle`` radians."""
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


class RandomRotate:
    """Rotate by an angle ``U(-degree_range, degree_range)`` degrees about the centre (angles of at
    most 1 degree are skipped, as the course does), then crop the largest axis-aligned rectangle
    that holds no border pixels."""

    def __init__(self, degree_range, interpolations=DEFAULT_INTERPOLATIONS):
        self.degree_range = degree_range
        self.interpolations = _interpolation_flags(interpolations, _WARP_FLAGS)

    def __call__(self, img):
        angle = random.uniform(-self.degree_range, self.degree_range)
        interp = _draw(self.interpolations)
        if abs(angle) <= 1.0:
            return img
        h, w = img.shape[:2]
        rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        out = cv2.warpAffine(img, rot, (w, h), flags=interp)
        cw, ch = inner_rect(w, h, math.radians(angle))
        return CenterCrop((max(1, cw), max(1, ch)))(out)

    def __repr__(self):
        return f"RandomRotate(degree_range={self.degree_range})"


class RandomWarpCrop:
    """Random-sized crop, rotation, scale jitter and horizontal flip in one affine warp:
    (H, W, C) uint8 image -> (size, size, C) uint8, one resampling pass.

    The crop is a rectangle of ``area_range`` of the image area and aspect ratio (w / h) in
    ``ratio_range`` (drawn log-uniformly), rotated by ``U(-degree_range, degree_range)`` degrees
    and placed uniformly where the rotated rectangle lies wholly inside the image, so the output
    has no border pixels; with probability ``flip_p`` it is mirrored. Mapping the crop onto
    ``size`` x ``size`` is the scale jitter. After ``num_trials`` draws that do not fit (large
    crops at large angles), the last one is shrunk about its centre until it fits.
    ``interpolations`` as the course's (OpenCV flags drawn per call, None for bilinear); the
    default leaves out bicubic, which costs a warp about 9x bilinear. RGB images are warped as
    RGBA, for which OpenCV's remap is vectorized (3x faster than 3 channels).
    """

    def __init__(self, size, area_range=(0.25, 1.0), ratio_range=(3.0 / 4.0, 4.0 / 3.0), degree_range=15.0,
                 flip_p=0.5, interpolations=WARP_INTERPOLATIONS, num_trials=10):
        if not 0.0 < area_range[0] <= area_range[1] <= 1.0:
            raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range}")
        if not 0.0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must satisfy 0 < low <= high, got {ratio_range}")
        self.size = size
        self.area_range = area_range
        self.ratio_range = ratio_range
        self.log_ratio_range = (math.log(ratio_range[0]), math.log(ratio_range[1]))
        self.degree_range = degree_range
        self.flip_p = flip_p
        self.interpolations = _interpolation_flags(interpolations, _WARP_FLAGS)
        self.num_trials = num_trials

    def sample(self, h, w):
        """Draw one warp for an h x w image: dict(angle (degrees), crop_w, crop_h, center (x, y)
        in pixel-edge coordinates, flip (bool), interpolation (OpenCV flag))."""
        log_ratio = self.log_ratio_range
        angle = random.uniform(-self.degree_range, self.degree_range)
        cos_a, sin_a = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        for _ in range(self.num_trials):
            area = h * w * random.uniform(*self.area_range)
            ratio = math.exp(random.uniform(*log_ratio))
            cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
            half_x, half_y = 0.5 * (cw * cos_a + ch * sin_a), 0.5 * (cw * sin_a + ch * cos_a)  # bounding box
            if half_x <= 0.5 * w and half_y <= 0.5 * h:
                break
        else:
            shrink = min(0.5 * w / half_x, 0.5 * h / half_y)
            cw, ch, half_x, half_y = cw * shrink, ch * shrink, half_x * shrink, half_y * shrink
        center = (random.uniform(half_x, w - half_x), random.uniform(half_y, h - half_y))
        flip = random.random() < self.flip_p
        return {"angle": angle, "crop_w": cw, "crop_h": ch, "center": center, "flip": flip,
                "interpolation": _draw(self.interpolations)}

    def matrix(self, params):
        """The 2x3 map from output pixel (u, v) to source pixel (x, y) of ``params``."""
        theta = math.radians(params["angle"])
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        sx = params["crop_w"] / self.size * (-1.0 if params["flip"] else 1.0)
        sy = params["crop_h"] / self.size
        a, b, c, d = cos_t * sx, -sin_t * sy, sin_t * sx, cos_t * sy  # rotation @ diag(sx, sy)
        offset = 0.5 - 0.5 * self.size  # output pixel centre u + 0.5, relative to the output centre
        cx, cy = params["center"]
        return np.array([[a, b, cx - 0.5 + (a + b) * offset],
                         [c, d, cy - 0.5 + (c + d) * offset]], dtype=np.float64)

    def __call__(self, img):
        params = self.sample(*img.shape[:2])
        rgb = img.ndim == 3 and img.shape[2] == 3
        src = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA) if rgb else img  # OpenCV's vector remap takes 1 or 4 channels
        out = cv2.warpAffine(src, self.matrix(params), (self.size, self.size),
                             flags=params["interpolation"] | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
        return cv2.cvtColor(out, cv2.COLOR_RGBA2RGB) if rgb else out

    def __repr__(self):
        return (f"RandomWarpCrop(size={self.size}, area_range={self.area_range}, ratio_range="
                f"{self.ratio_range}, degree_range={self.degree_range}, flip_p={self.flip_p})")


class ToTensor:
    """(H, W, C) uint8 in [0, 255] -> (C, H, W) float32 in [0, 1]."""

    def __call__(self, img):
        if img.ndim == 2:
            img = img[:, :, None]
        chw = np.stack(cv2.split(img)) if img.shape[2] > 1 else img.transpose(2, 0, 1)  # (C, H, W) uint8
        return torch.from_numpy(chw).to(torch.float32).div_(255.0)  # cv2.split: 2x numpy's transposing copy

    def __repr__(self):
        return "ToTensor()"


class ToUint8Tensor:
    """(H, W, C) uint8 -> (C, H, W) uint8 tensor, values unchanged: a quarter of the bytes of
    :class:`ToTensor`'s output, for batches that are converted and normalized on the device.

    No copy: the result is a view of the image's HWC memory (channels-last strides), which
    ``custom_dataloader.collate_uint8`` stacks into a channels_last (B, C, H, W) batch with one
    plain copy (``torch.stack`` of the views themselves works too, transposing as it copies)."""

    def __call__(self, img):
        if img.ndim == 2:
            img = img[:, :, None]
        img = np.ascontiguousarray(img) if img.flags.writeable else img.copy()  # torch needs writable memory
        return torch.from_numpy(img).permute(2, 0, 1)  # (C, H, W) view of (H, W, C)

    def __repr__(self):
        return "ToUint8Tensor()"


class Normalize:
    """In place on a (C, H, W) or (B, C, H, W) float tensor: ``x * scale``, minus the per-channel
    ``mean``, divided by ``std`` (the course's convention). Returns the tensor."""

    def __init__(self, mean, std, scale=1.0):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.scale = scale

    def __call__(self, tensor):
        if self.scale != 1.0:
            tensor.mul_(self.scale)
        return tensor.sub_(self.mean.to(tensor.device)).div_(self.std.to(tensor.device))

    def __repr__(self):
        return (f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, "
                f"scale={self.scale})")


class Denormalize(Normalize):
    """Inverse of :class:`Normalize`, in place: ``(x * std + mean) / scale``."""

    def __call__(self, tensor):
        tensor.mul_(self.std.to(tensor.device)).add_(self.mean.to(tensor.device))
        if self.scale != 1.0:
            tensor.div_(self.scale)
        return tensor
