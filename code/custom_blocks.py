"""Building blocks shared by the Vision Transformers in student_code.py.

Every block works on channels-last token grids (B, H, W, C), the layout that
window attention needs, in the style of timm's ``layers/``.
"""
import torch
from torch import nn
from torch.nn import functional as F


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill ``tensor`` in place from N(mean, std^2) truncated to [a, b]; returns it."""
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def drop_path(x, drop_prob=0.0, training=False):
    """Stochastic depth: zero whole samples of ``x`` (B, ...) with probability
    ``drop_prob`` in [0, 1] and scale the kept ones by 1 / (1 - drop_prob), so the
    expectation over the draws is ``x``. Identity when not ``training``."""
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, ..., 1): one draw per sample
    mask = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (identity in eval mode); ``drop_prob`` None means 0."""

    def __init__(self, drop_prob=None):
        super().__init__()
        drop_prob = 0.0 if drop_prob is None else drop_prob
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must lie in [0, 1], got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob:.3f}"


class MLP(nn.Module):
    """Two-layer perceptron on the last dimension: (..., in) -> (..., out)."""

    def __init__(self, in_features, hidden_features=None, out_features=None,
                 act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class PatchEmbed(nn.Module):
    """Image to patch tokens: (B, in_chans, H, W) -> (B, H', W', embed_dim)."""

    def __init__(self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0),
                 in_chans=3, embed_dim=768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size,
                              stride=stride, padding=padding)

    def forward(self, x):
        x = self.proj(x)  # (B, C, H', W')
        return x.permute(0, 2, 3, 1)  # (B, H', W', C)


def window_partition(x, window_size):
    """Split a token grid into non-overlapping windows, zero-padding the grid
    at the bottom and right up to a multiple of ``window_size``.

    Args:
        x: (B, H, W, C) tokens.
        window_size: side of a square window, a positive int.
    Returns:
        windows: (B * num_windows, window_size, window_size, C), windows in
            row-major order within each image, images in batch order.
        (Hp, Wp): the padded grid size, for :func:`window_unpartition`.
    Raises:
        ValueError: ``x`` is not 4-D or ``window_size`` is not positive.
    """
    if x.ndim != 4:
        raise ValueError(f"window_partition expects (B, H, W, C) tokens, got shape {tuple(x.shape)}")
    if window_size <= 0:
        raise ValueError(f"window_size must be positive, got {window_size}")
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # pads W then H, never C
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)  # (B, nH, ws, nW, ws, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)  # (B*nH*nW, ws, ws, C)
    return windows, (Hp, Wp)


def window_unpartition(windows, window_size, pad_hw, hw):
    """Inverse of :func:`window_partition`: merge windows and crop the padding.

    Args:
        windows: (B * num_windows, window_size, window_size, C).
        window_size: side of a square window.
        pad_hw: (Hp, Wp), the padded grid size (multiples of ``window_size``).
        hw: (H, W), the grid size before padding.
    Returns:
        x: (B, H, W, C).
    Raises:
        ValueError: the number of windows does not match ``pad_hw``.
    """
    Hp, Wp = pad_hw
    H, W = hw
    num_windows = (Hp // window_size) * (Wp // window_size)
    if windows.shape[0] % num_windows:
        raise ValueError(f"{windows.shape[0]} windows do not split into images of {num_windows} windows "
                         f"(padded grid {Hp}x{Wp}, window_size {window_size})")
    B = windows.shape[0] // num_windows
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)  # (B, nH, nW, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)  # (B, Hp, Wp, C)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def param_groups_weight_decay(model, weight_decay):
    """Two optimizer groups, as in timm: weight decay on matrices and conv kernels,
    none on 1-D parameters (biases, norm gains) nor on the parameters that
    ``model.no_weight_decay()`` names (e.g. {"pos_embed"}), when it has that method.

    Returns [{"params": decay, "weight_decay": weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], trainable parameters only.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
