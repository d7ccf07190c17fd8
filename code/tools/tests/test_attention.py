"""Attention and TransformerBlock: both attention paths against a per-head
reference built from the module's own weights, the graded SimpleViT never calling
the fused kernel, window locality, drop path on both branches, and the benchmark
script end to end on tiny sizes."""
import pytest
import torch
from torch.nn import functional as F

from student_code import Attention, ImprovedViT, SimpleViT, TransformerBlock


def reference_attention(attn, x):
    """Multi-head attention of ``attn`` on ``x`` (B, H, W, C), in float64, one head
    and one query at a time, from the raw qkv / proj weights."""
    B, H, W, C = x.shape
    d = C // attn.num_heads
    tokens = x.double().reshape(B, H * W, C)
    w_qkv, b_qkv = attn.qkv.weight.double(), attn.qkv.bias.double()
    q_all = tokens @ w_qkv[:C].T + b_qkv[:C]  # rows 0..C-1 of the qkv projection are the queries
    k_all = tokens @ w_qkv[C:2 * C].T + b_qkv[C:2 * C]
    v_all = tokens @ w_qkv[2 * C:].T + b_qkv[2 * C:]
    out = torch.zeros(B, H * W, C, dtype=torch.float64)
    for b in range(B):
        for h in range(attn.num_heads):
            cols = slice(h * d, (h + 1) * d)
            q, k, v = q_all[b, :, cols], k_all[b, :, cols], v_all[b, :, cols]
            for i in range(H * W):
                scores = (k @ q[i]) / d ** 0.5
                weights = torch.exp(scores - scores.max())
                out[b, i, cols] = (weights / weights.sum()) @ v
    out = out @ attn.proj.weight.double().T + attn.proj.bias.double()
    return out.reshape(B, H, W, C)


@pytest.mark.parametrize("heads", [1, 3])
def test_both_paths_match_the_per_head_reference(heads):
    torch.manual_seed(0)
    attn = Attention(12, num_heads=heads)
    with torch.no_grad():
        attn.qkv.bias.normal_()  # nonzero biases, so a wrong q/k/v split would show
    x = torch.randn(2, 3, 4, 12)
    expected = reference_attention(attn, x).float()
    assert not attn.fused, "the formula is the default"
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    attn.fused = True
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_both_paths_give_the_same_gradients():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4)
    x = torch.randn(2, 4, 4, 16)
    target = torch.randn(2, 4, 4, 16)
    grads = []
    for fused in (True, False):
        attn.fused = fused
        attn.zero_grad()
        xi = x.clone().requires_grad_(True)
        ((attn(xi) - target) ** 2).sum().backward()
        grads.append([xi.grad] + [p.grad.clone() for p in attn.parameters()])
    for g_fused, g_explicit in zip(*grads):
        torch.testing.assert_close(g_fused, g_explicit, rtol=1e-4, atol=1e-5)


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of the heads"):
        Attention(10, num_heads=4)(torch.randn(2, 4, 4, 10))
    with pytest.raises(ValueError, match=r"\(B, H, W, 8\)"):
        Attention(8, num_heads=2)(torch.randn(2, 4, 4, 6))


def fused_kernel_raises(*args, **kwargs):
    raise AssertionError("F.scaled_dot_product_attention was called")


def test_simplevit_with_default_arguments_runs_the_formula(monkeypatch):
    """The graded model never calls the fused kernel, forward or backward."""
    torch.manual_seed(0)
    model = SimpleViT()
    monkeypatch.setattr(F, "scaled_dot_product_attention", fused_kernel_raises)
    x = torch.randn(2, 3, 128, 128, requires_grad=True)
    model(x).square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not any(m.fused for m in model.modules() if isinstance(m, Attention))


def test_only_the_improved_vit_opts_in_to_the_fused_kernel(monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append([t.dim() for t in args])
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = ImprovedViT(img_size=32, depth=2, embed_dim=16, num_heads=2, stem_channels=(8,), window_size=4,
                        window_block_indexes=(0,))
    assert all(blk.attn.fused for blk in model.blocks)
    model(torch.randn(1, 3, 32, 32))
    assert calls == [[4, 4, 4]] * 2, "one fused call per block, on (B, heads, N, head_dim), as flash attention takes"


def changed_tokens(block, x, r, c):
    """Boolean (H, W) map of the output tokens that move when input token (r, c) changes."""
    block.eval()
    with torch.no_grad():
        y0 = block(x)
        x1 = x.clone()
        x1[0, r, c] += 3.0 * torch.randn(x.shape[-1])  # not a constant shift, which LayerNorm would erase
        y1 = block(x1)
    return (y1 - y0)[0].abs().amax(-1) > 1e-4


@pytest.mark.parametrize("hw,ws,token", [((8, 8), 4, (5, 2)), ((6, 7), 4, (5, 6)), ((6, 7), 4, (1, 1))])
def test_window_block_changes_only_its_window(hw, ws, token):
    torch.manual_seed(0)
    block = TransformerBlock(8, num_heads=2, window_size=ws)
    x = torch.randn(2, *hw, 8)
    changed = changed_tokens(block, x, *token)
    expected = torch.zeros(hw, dtype=torch.bool)
    r0, c0 = token[0] // ws * ws, token[1] // ws * ws
    expected[r0:r0 + ws, c0:c0 + ws] = True
    assert torch.equal(changed, expected)
    assert block(x).shape == x.shape


def test_global_block_changes_every_token():
    torch.manual_seed(0)
    block = TransformerBlock(8, num_heads=2, window_size=0)
    changed = changed_tokens(block, torch.randn(2, 6, 7, 8), 5, 6)
    assert changed.all()


def test_window_block_is_the_global_block_on_each_window():
    torch.manual_seed(0)
    window_block = TransformerBlock(8, num_heads=2, window_size=4).eval()
    global_block = TransformerBlock(8, num_heads=2, window_size=0).eval()
    global_block.load_state_dict(window_block.state_dict())
    x = torch.randn(2, 8, 12, 8)
    expected = torch.empty_like(x)
    with torch.no_grad():
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                expected[:, i:i + 4, j:j + 4] = global_block(x[:, i:i + 4, j:j + 4])
        torch.testing.assert_close(window_block(x), expected, rtol=1e-5, atol=1e-5)


def test_drop_path_covers_both_residual_branches():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 4, 8)
    block = TransformerBlock(8, num_heads=2, drop_path=0.999, window_size=2).train()
    torch.manual_seed(1)  # drop_path keeps a sample when 0.001 + U(0, 1) >= 1: not for these 3 samples
    assert torch.equal(block(x), x), "dropping both branches leaves the identity"
    assert not torch.allclose(block.eval()(x), x), "in eval mode both branches are active"


def test_benchmark_script_writes_its_report(tmp_path):
    from tools import bench_attention

    out = tmp_path / "bench.md"
    bench_attention.main(["--seq-lens", "16", "--batch", "2", "--dim", "8", "--heads", "2", "--repeats", "1",
                          "--warmup", "0", "--no-models", "--out", str(out)])
    report = out.read_text()
    assert "torch " + torch.__version__ in report and "Hardware:" in report and "Date:" in report
    row = [line for line in report.splitlines() if line.startswith("| 16 |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[4] == "fp32", "the row names its precision"
    explicit_ms, fused_ms, ratio, diff = map(float, cells[5:])
    assert ratio == pytest.approx(explicit_ms / fused_ms, rel=0.01, abs=0.01)
    assert diff < 1e-5
