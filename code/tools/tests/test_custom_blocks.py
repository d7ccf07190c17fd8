"""custom_blocks (window partitioning, stochastic depth, the weight-decay parameter groups) and
student_code's ViT pieces (the conv stem, sin-cos positions), each against a hand-written reference."""
import math

import pytest
import torch
from torch import nn

from custom_blocks import drop_path, param_groups_weight_decay, window_partition, window_unpartition
from student_code import ConvStem, sincos_pos_embed_2d


def reference_windows(x, ws):
    """Windows of ``x`` (B, H, W, C) cut by slicing a zero-padded copy, row-major per image."""
    B, H, W, C = x.shape
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    padded = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    padded[:, :H, :W] = x
    return torch.stack([padded[b, i:i + ws, j:j + ws]
                        for b in range(B) for i in range(0, Hp, ws) for j in range(0, Wp, ws)])


@pytest.mark.parametrize("hw,ws", [((8, 8), 4), ((6, 7), 4), ((5, 5), 8), ((4, 6), 2)])
def test_window_partition_matches_slicing_and_round_trips(hw, ws):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw).permute(0, 2, 3, 1)  # (B, H, W, C), not contiguous
    windows, pad_hw = window_partition(x, ws)
    expected = reference_windows(x, ws)
    assert pad_hw == (math.ceil(hw[0] / ws) * ws, math.ceil(hw[1] / ws) * ws)
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)
    torch.testing.assert_close(window_unpartition(windows, ws, pad_hw, hw), x, rtol=0, atol=0)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 5) + 1.0  # strictly positive, so a kept entry is never 0
    out = drop_path(x, 0.25, training=True)
    dropped = (out == 0).flatten(1)
    assert (dropped.all(1) | ~dropped.any(1)).all(), "a sample is either dropped whole or kept whole"
    kept = ~dropped.all(1)
    torch.testing.assert_close(out[kept], x[kept] / 0.75)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert abs(out.mean().item() / x.mean().item() - 1.0) < 0.03
    torch.testing.assert_close(drop_path(x, 0.25, training=False), x, rtol=0, atol=0)


def test_sincos_pos_embed_matches_formula():
    h, w, dim = 3, 5, 8
    pe = sincos_pos_embed_2d(h, w, dim)
    assert pe.shape == (h, w, dim)
    q = dim // 4
    for y in range(h):
        for x in range(w):
            for i in range(q):
                omega = 1.0 / 10000.0 ** (i / q)
                expected = [math.sin(y * omega), math.cos(y * omega), math.sin(x * omega), math.cos(x * omega)]
                got = [pe[y, x, k * q + i].item() for k in range(4)]
                assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="6"):
        sincos_pos_embed_2d(2, 2, 6)


def test_conv_stem_downsamples_by_two_per_stage():
    stem = ConvStem(3, 16, channels=(4, 8, 12))
    out = stem(torch.randn(2, 3, 32, 24))
    assert out.shape == (2, 4, 3, 16)
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 4, (2, 2)), (4, 8, (2, 2)), (8, 12, (2, 2)), (12, 16, (1, 1))]
    with pytest.raises(ValueError, match="divisible by 8"):
        stem(torch.randn(1, 3, 20, 24))


def test_conv_stem_kaiming_fan_out_init():
    torch.manual_seed(0)
    stem = ConvStem(3, 96, channels=(64,))
    conv, proj = stem.convs[0], stem.proj
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    assert proj.weight.std().item() == pytest.approx(math.sqrt(2 / 96), rel=0.05)
    assert torch.count_nonzero(proj.bias) == 0


def test_param_groups_split_one_dim_and_named_parameters():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)
            self.norm = nn.LayerNorm(4)
            self.pos_embed = nn.Parameter(torch.zeros(1, 2, 2, 4))
            self.frozen = nn.Parameter(torch.zeros(5, 5), requires_grad=False)

        def no_weight_decay(self):
            return {"pos_embed"}

    toy = Toy()
    decay, no_decay = param_groups_weight_decay(toy, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(toy.lin.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(toy.lin.bias), id(toy.norm.weight), id(toy.norm.bias),
                                                   id(toy.pos_embed)}
    with pytest.raises(ValueError, match="-1"):
        param_groups_weight_decay(toy, -1)
