"""Attention and TransformerBlock: both attention paths against a per-head
reference built from the module's own weights, window locality, drop path on
both branches, and the benchmark script end to end on tiny sizes."""
import pytest
import torch

from student_code import Attention, TransformerBlock


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
    assert attn.fused, "the fused path is the default"
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    attn.fused = False
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
    with pytest.raises(ValueError, match="num_heads"):
        Attention(10, num_heads=4)
    with pytest.raises(ValueError, match=r"\(B, H, W, 8\)"):
        Attention(8, num_heads=2)(torch.randn(2, 4, 4, 6))


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
    block = TransformerBlock(8, num_heads=2, drop_path=1.0, window_size=2)
    assert torch.equal(block.train()(x), x), "dropping both branches leaves the identity"
    assert not torch.allclose(block.eval()(x), x), "in eval mode both branches are active"


def test_block_rejects_negative_window():
    with pytest.raises(ValueError, match="-1"):
        TransformerBlock(8, num_heads=2, window_size=-1)


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
