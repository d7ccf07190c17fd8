"""TensorBoard images of an attack for main.py (not a graded part: student_code.py has vis_grid)."""
import torch
from torchvision.utils import make_grid

from student_code import denormalize, vis_grid


def vis_adversarial(input, adv_input, n_rows=10):
    """The three TensorBoard images of an attack: originals, adversarials and their difference.

    The difference is taken in pixel units and amplified so that the largest change of the batch
    reaches black or white: ``0.5 + 0.5 * (adv - org) / max|adv - org|``; mid-grey means
    unchanged (all grey when nothing changed).

    Args:
        input, adv_input: (B, 3, H, W) clean and adversarial batches, normalized with
            IMAGENET_MEAN / IMAGENET_STD.
        n_rows: images per row of each mosaic.
    Returns:
        (org, adv, diff): three (3, H', W') float tensors in [0, 1].
    """
    if input.shape != adv_input.shape:
        raise ValueError(f"input and adv_input shapes differ: {tuple(input.shape)} vs {tuple(adv_input.shape)}")
    diff = denormalize(adv_input) - denormalize(input)  # (B, 3, H, W) in pixel units
    peak = diff.abs().max()
    diff = 0.5 + 0.5 * diff / peak if peak > 0 else torch.full_like(diff, 0.5)
    return vis_grid(input, n_rows), vis_grid(adv_input, n_rows), make_grid(diff, nrow=n_rows)
