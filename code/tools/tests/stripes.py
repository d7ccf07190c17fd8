"""Synthetic stripe images shared by the PGD and adversarial-training tests."""
import math

import torch


def stripe_images(n, num_classes=4, size=16, seed=0):
    """n pixel images (n, 3, size, size) in [0, 1] and labels (n,): class k shows faint stripes at
    angle k * pi / num_classes under a random tint and noise, so a CNN learns them fast but
    with small margins."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    angle = (labels.float() * math.pi / num_classes).view(-1, 1, 1)  # (n, 1, 1)
    phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    wave = torch.sin(0.6 * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)  # (n, size, size)
    tint = torch.rand(n, 3, 1, 1, generator=g) * 0.3 - 0.15
    noise = 0.05 * torch.randn(n, 3, size, size, generator=g)
    return (0.5 + 0.05 * wave.unsqueeze(1) + tint + noise).clamp(0, 1), labels
