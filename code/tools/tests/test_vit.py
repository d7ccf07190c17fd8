"""SimpleViT and ImprovedViT: structure and parameter count against hand-derived
formulas, init, the two attention paths end to end, gradients reaching every
parameter, learning a fixed batch, the compute budget, argument checks."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import student_code
from student_code import Attention, ImprovedViT, SimpleViT, sincos_pos_embed_2d


def flop_counter():
    """torch.utils.flop_counter.FlopCounterMode (torch >= 2.1); the budget tests skip without it."""
    return pytest.importorskip("torch.utils.flop_counter").FlopCounterMode(display=False)


TINY_SIMPLE = dict(img_size=32, num_classes=5, patch_size=8, embed_dim=16, depth=3, num_heads=2,
                   window_size=2, window_block_indexes=(0, 2))
TINY_IMPROVED = dict(img_size=32, num_classes=5, stem_channels=(8, 16), embed_dim=16, depth=3, num_heads=2,
                     window_size=4, window_block_indexes=(0, 1))


def set_fused(model, fused):
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused = fused


def test_simple_vit_defaults_match_the_starter():
    model = SimpleViT(num_classes=100)
    D, grid, mlp = 192, 128 // 16, 4 * 192
    block_params = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (D * mlp + mlp) + (mlp * D + D)
    expected = (3 * 16 * 16 * D + D) + grid * grid * D + 4 * block_params + 2 * D + (D * 100 + 100)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [blk.window_size for blk in model.blocks] == [4, 0, 4, 0]
    assert [blk.attn.num_heads for blk in model.blocks] == [4] * 4
    rates = [getattr(blk.drop_path, "drop_prob", 0.0) for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    assert isinstance(model.blocks[0].drop_path, nn.Identity)
    shared = len(list(model.named_parameters(remove_duplicate=False))) - len(list(model.parameters()))
    assert shared == 0, "every block owns its weights"
    assert model(torch.randn(2, 3, 128, 128)).shape == (2, 100)


def test_timm_style_init():
    torch.manual_seed(0)
    model = SimpleViT(num_classes=100)
    linear_weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Linear)])
    assert linear_weights.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Linear))
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.count_nonzero(m.bias) == 0
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("cls,kwargs", [(SimpleViT, TINY_SIMPLE), (ImprovedViT, TINY_IMPROVED)])
def test_fused_and_explicit_models_agree(cls, kwargs):
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        set_fused(model, False)
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs", [(SimpleViT, TINY_SIMPLE), (ImprovedViT, TINY_IMPROVED)])
def test_every_parameter_gets_a_gradient(cls, kwargs):
    torch.manual_seed(0)
    model = cls(**kwargs)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("cls,kwargs", [(SimpleViT, TINY_SIMPLE), (ImprovedViT, TINY_IMPROVED)])
def test_learns_a_fixed_batch(cls, kwargs):
    torch.manual_seed(0)
    model = cls(**dict(kwargs, drop_path_rate=0.0))
    x, y = torch.randn(10, 3, 32, 32), torch.arange(10) % 5
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0] / 2, f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert (model(x).argmax(1) == y).all()


def record(module, key, seen, pre=False):
    """Keep ``module``'s first input (pre=True) or output in ``seen[key]`` at every forward."""
    if pre:
        return module.register_forward_pre_hook(lambda m, args: seen.__setitem__(key, args[0]))
    return module.register_forward_hook(lambda m, args, out: seen.__setitem__(key, out))


@pytest.mark.parametrize("cls,kwargs", [(SimpleViT, TINY_SIMPLE), (ImprovedViT, TINY_IMPROVED)])
def test_head_reads_the_mean_of_all_tokens(cls, kwargs):
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    seen = {}
    record(model.blocks[-1], "tokens", seen)  # (B, h, w, C)
    record(model.norm, "pooled", seen, pre=True)  # (B, C)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert min(seen["tokens"].shape[1:3]) >= 4  # a grid of tokens, not one
    torch.testing.assert_close(seen["pooled"], seen["tokens"].mean(dim=(1, 2)))


def test_improved_vit_adds_the_sincos_positions():
    torch.manual_seed(0)
    model = ImprovedViT(**TINY_IMPROVED).eval()
    seen = {}
    record(model.stem, "patches", seen)  # (B, h, w, C)
    record(model.blocks[0], "tokens", seen, pre=True)  # (B, h, w, C)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    positions = sincos_pos_embed_2d(8, 8, 16)  # (h, w, C): the 32x32 input, stem stride 4
    assert positions.abs().amax() > 0.5
    torch.testing.assert_close(seen["tokens"] - seen["patches"], positions.expand(2, -1, -1, -1))


def test_stochastic_depth_only_in_train_mode():
    torch.manual_seed(0)
    model = SimpleViT(**dict(TINY_SIMPLE, drop_path_rate=0.9))
    x = torch.randn(8, 3, 32, 32)
    assert not torch.equal(model.train()(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_improved_vit_structure_and_budget():
    torch.manual_seed(0)
    model = ImprovedViT(num_classes=100)
    windows = [blk.window_size for blk in model.blocks]
    assert 0 in windows and any(w > 0 for w in windows), "window and global blocks interleave"
    assert model.pos_embed.shape[1] * model.pos_embed.shape[2] > 64, "more tokens than SimpleViT"
    set_fused(model, False)
    model.eval()
    with torch.no_grad(), flop_counter() as counter:
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 100)
    assert counter.get_total_flops() <= 4e9, "over the ~4 GFLOPs per image budget"


def test_improved_vit_checkpoint_round_trip():
    torch.manual_seed(0)
    model = ImprovedViT(**TINY_IMPROVED).eval()
    state = model.state_dict()
    assert "pos_embed" not in state, "fixed positions are rebuilt, not stored"
    torch.manual_seed(1)
    other = ImprovedViT(**TINY_IMPROVED).eval()
    other.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), other(x))


def test_default_vit_model_and_constructors():
    assert student_code.default_vit_model is ImprovedViT
    for cls in (SimpleViT, ImprovedViT):
        assert cls(num_classes=7).head.out_features == 7


def test_bad_arguments_fail_fast():
    with pytest.raises(ValueError, match="patch_size"):
        SimpleViT(img_size=100, patch_size=16)
    with pytest.raises(ValueError, match=r"\[4\]"):
        SimpleViT(depth=4, window_block_indexes=(0, 4))
    with pytest.raises(ValueError, match="drop_path_rate"):
        SimpleViT(drop_path_rate=1.5)
    with pytest.raises(ValueError, match="64, 64"):
        SimpleViT(**TINY_SIMPLE)(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="stem stride"):
        ImprovedViT(img_size=100)
