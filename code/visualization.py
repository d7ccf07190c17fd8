"""TensorBoard images of an attack for main.py (not a graded part: student_code.py has vis_grid)."""
import torch
from torchvision.utils import make_grid

from student_code import IMAGENET_MEAN, IMAGENET_STD


def denormalize(input, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undo the input normalization: (B, C, H, W) normalized -> pixels in [0, 1] (clamped)."""
    if input.dim() != 4 or input.shape[1] != len(mean):
        raise ValueError(f"input must be (B, {len(mean)}, H, W), got {tuple(input.shape)}")
    mean = torch.as_tensor(mean, dtype=input.dtype, device=input.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std = torch.as_tensor(std, dtype=input.dtype, device=input.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (input.detach() * std + mean).clamp_(0.0, 1.0)


def vis_adversarial(input, adv_input, n_rows=10):
    """The three TensorBoard images of an attack: originals, adversarials and their difference,
    all three in pixel units (de-normalized), so that the two mosaics show the photos' own colours
    on one scale (the course's vis_grid stretches each mosaic to its own min and max).

    The difference is amplified so that the largest change of the batch reaches black or white:
    ``0.5 + 0.5 * (adv - org) / max|adv - org|``; mid-grey means unchanged (all grey when nothing
    changed).

    Args:
        input, adv_input: (B, 3, H, W) clean and adversarial batches, normalized with
            IMAGENET_MEAN / IMAGENET_STD.
        n_rows: images per row of each mosaic.
    Returns:
        (org, adv, diff): three (3, H', W') float tensors in [0, 1].
    """
    if input.shape != adv_input.shape:
        raise ValueError(f"input and adv_input shapes differ: {tuple(input.shape)} vs {tuple(adv_input.shape)}")
    org, adv = denormalize(input).cpu(), denormalize(adv_input).cpu()  # (B, 3, H, W) in [0, 1]
    diff = adv - org
    peak = diff.abs().max()
    diff = 0.5 + 0.5 * diff / peak if peak > 0 else torch.full_like(diff, 0.5)
    return make_grid(org, nrow=n_rows), make_grid(adv, nrow=n_rows), make_grid(diff, nrow=n_rows)
