"""CustomConv2DFunction / CustomConv2d against torch's native convolution (F.conv2d)."""
import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import student_code
from mixed_precision import cuda_amp_dtype
from student_code import CustomConv2d, CustomConv2DFunction, custom_conv2d

TIGHT = dict(rtol=1e-10, atol=1e-10)


def random_setting(seed):
    """A random valid convolution: shapes, stride, padding (sometimes larger than the input), bias, layout."""
    rng = random.Random(seed)
    kernel_size = rng.randint(1, 5)
    padding = rng.choice([0, 0, 1, 2, rng.randint(0, 6)])
    low = max(1, kernel_size - 2 * padding)
    return dict(n=rng.randint(1, 3), in_channels=rng.randint(1, 5), out_channels=rng.randint(1, 6),
                height=rng.randint(low, low + 8), width=rng.randint(low, low + 8), kernel_size=kernel_size,
                stride=rng.randint(1, 3), padding=padding, bias=rng.random() < 0.7,
                channels_last=rng.random() < 0.5)


def make_tensors(s, dtype=torch.float64, seed=0, device="cpu"):
    """Input (N, Ci, H, W), weight (Co, Ci, K, K) and bias (Co,) or None, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(s["n"], s["in_channels"], s["height"], s["width"], generator=gen, dtype=dtype)
    if s["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    k = s["kernel_size"]
    weight = torch.randn(s["out_channels"], s["in_channels"], k, k, generator=gen, dtype=dtype)
    bias = torch.randn(s["out_channels"], generator=gen, dtype=dtype) if s["bias"] else None
    return [t if t is None else t.to(device).requires_grad_() for t in (x, weight, bias)]


def outputs_and_grads(conv, x, weight, bias, stride, padding, seed=1):
    """conv's output and the gradients of (x, weight, bias) for a fixed random output gradient."""
    output = conv(x, weight, bias, stride, padding)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed), dtype=output.dtype)
    inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    return output, torch.autograd.grad(output, inputs, grad_output.to(output.device))


def native_conv(x, weight, bias, stride, padding):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def assert_matches_native(x, weight, bias, stride, padding, **tol):
    output, grads = outputs_and_grads(custom_conv2d, x, weight, bias, stride, padding)
    ref_output, ref_grads = outputs_and_grads(native_conv, x, weight, bias, stride, padding)
    torch.testing.assert_close(output, ref_output, **tol)
    assert len(grads) == len(ref_grads)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, **tol)


@pytest.fixture(params=["whole batch", "one sample per chunk"])
def chunking(request, monkeypatch):
    """Run the test with the whole batch in one column chunk, then with one sample per chunk."""
    if request.param == "one sample per chunk":
        monkeypatch.setitem(student_code._COLS_CHUNK_BYTES, "cpu", (1, 1))
    return request.param


@pytest.mark.parametrize("seed", range(60))
def test_random_settings_match_native_float64(seed, chunking):
    s = random_setting(seed)
    assert_matches_native(*make_tensors(s, seed=seed), s["stride"], s["padding"], **TIGHT)


@pytest.mark.parametrize("seed", range(10))
def test_random_settings_match_native_float32(seed):
    s = random_setting(1000 + seed)
    assert_matches_native(*make_tensors(s, dtype=torch.float32, seed=seed), s["stride"], s["padding"],
                          rtol=1e-4, atol=1e-4)


def test_partial_last_chunk_matches_native(monkeypatch):
    s = dict(n=5, in_channels=3, out_channels=4, height=7, width=6, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=False)
    sample_bytes = 7 * 6 * 3 * 3 * 3 * 8  # Ho * Wo * K * K * Ci * float64: chunks of 2, 2 and 1 samples
    monkeypatch.setitem(student_code._COLS_CHUNK_BYTES, "cpu", (2 * sample_bytes, 2 * sample_bytes))
    assert_matches_native(*make_tensors(s), s["stride"], s["padding"], **TIGHT)


def test_chunking_follows_thread_count_and_results_match_native():
    s = dict(n=8, in_channels=64, out_channels=16, height=32, width=32, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=True)
    x, weight, bias = make_tensors(s)  # float64 columns: 32*32*576*8 bytes = 4.7 MB per sample
    threads = torch.get_num_threads()
    try:
        chunks = {}
        for count in (1, 2):
            torch.set_num_threads(count)
            chunks[count] = student_code._Im2Col((8, 32, 32, 64), 16, 3, 1, 1, x).chunk
            assert_matches_native(x, weight, bias, 1, 1, **TIGHT)
    finally:
        torch.set_num_threads(threads)
    assert chunks == {1: 1, 2: 2}  # one cache-sized sample per chunk; several threads: 4 chunks per pass


@pytest.mark.parametrize("n, ci, co, h, w, k, stride, padding, bias", [
    (2, 3, 4, 7, 7, 3, 1, 1, True),
    (1, 2, 3, 6, 9, 3, 2, 0, False),
    (2, 2, 2, 5, 4, 1, 1, 0, True),
    (1, 3, 2, 4, 5, 2, 3, 4, True),
    (2, 1, 3, 8, 8, 5, 2, 2, True),
])
def test_gradcheck(n, ci, co, h, w, k, stride, padding, bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, ci, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(co, ci, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(co, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(custom_conv2d, (x, weight, b, stride, padding), eps=1e-6, atol=1e-7)


def test_grads_only_for_inputs_that_need_them(monkeypatch):
    s = dict(n=2, in_channels=3, out_channels=4, height=6, width=6, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=False)
    x, weight, bias = make_tensors(s)
    calls = []

    def counted(method):
        def wrapper(self, *args):
            calls.append(method.__name__)
            return method(self, *args)
        return wrapper

    for name in ("im2col", "col2im"):
        monkeypatch.setattr(student_code._Im2Col, name, counted(getattr(student_code._Im2Col, name)))

    for needs_grad in ([weight, bias], [x]):
        for t in (x, weight, bias):
            t.requires_grad_(any(t is u for u in needs_grad))
        output = custom_conv2d(x, weight, bias, 1, 1)
        calls.clear()
        grads = torch.autograd.grad(output.sum(), needs_grad)
        ref_grads = torch.autograd.grad(native_conv(x, weight, bias, 1, 1).sum(), needs_grad)
        for grad, ref_grad in zip(grads, ref_grads):
            torch.testing.assert_close(grad, ref_grad, **TIGHT)
        # weight gradient: the input is unfolded again, nothing folded; input gradient: the reverse
        assert calls == (["im2col"] if needs_grad[0] is weight else ["col2im"])


def test_output_is_safe_for_inplace_relu():
    s = dict(n=2, in_channels=3, out_channels=5, height=8, width=7, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=False)
    x, weight, bias = make_tensors(s)
    weight2 = torch.randn(4, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    grads = []
    for conv in (custom_conv2d, native_conv):
        hidden = F.relu(conv(x, weight, bias, 1, 1), inplace=True)  # (2, 5, 8, 7)
        output = F.relu(conv(hidden, weight2, None, 1, 0), inplace=True)  # (2, 4, 8, 7)
        grads.append(torch.autograd.grad(output.square().sum(), [x, weight, bias, weight2]))
    for grad, ref_grad in zip(*grads):
        torch.testing.assert_close(grad, ref_grad, **TIGHT)


def test_saves_only_input_and_weight_like_native():
    """Memory kept for backward: the unfolded columns are recomputed, never saved."""
    s = dict(n=2, in_channels=8, out_channels=16, height=12, width=12, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=True)
    x, weight, bias = make_tensors(s)

    def saved_bytes(conv):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            conv(x, weight, bias, 1, 1)
        return sum(storages.values())

    assert saved_bytes(custom_conv2d) == saved_bytes(native_conv) == (x.numel() + weight.numel()) * 8


def test_channels_last_output_and_layouts_agree():
    s = dict(n=2, in_channels=4, out_channels=6, height=9, width=10, kernel_size=3, stride=2, padding=1,
             bias=True, channels_last=False)
    x, weight, bias = make_tensors(s)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    output, grads = outputs_and_grads(custom_conv2d, x, weight, bias, 2, 1)
    output_cl, grads_cl = outputs_and_grads(custom_conv2d, x_cl, weight, bias, 2, 1)
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)  # dense, not a view of the padded grid
    torch.testing.assert_close(output, output_cl, rtol=0, atol=0)
    for grad, grad_cl in zip(grads, grads_cl):
        torch.testing.assert_close(grad, grad_cl, rtol=0, atol=0)


def test_backward_from_sum_and_batch_of_one():
    x = torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    custom_conv2d(x, weight, None, 1, 0).sum().backward()
    grads = [x.grad, weight.grad]
    x.grad = weight.grad = None
    native_conv(x, weight, None, 1, 0).sum().backward()
    for grad, ref_grad in zip(grads, [x.grad, weight.grad]):
        torch.testing.assert_close(grad, ref_grad, **TIGHT)


def test_cpu_autocast_runs_gemms_in_bfloat16():
    s = dict(n=2, in_channels=3, out_channels=8, height=10, width=10, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=False)
    x, weight, bias = make_tensors(s, dtype=torch.float32)
    results = []
    for conv in (custom_conv2d, native_conv):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = conv(x, weight, bias, 1, 1)
        grads = torch.autograd.grad(output.float().square().sum(), [x, weight, bias])
        results.append((output, grads))
    (output, grads), (ref_output, ref_grads) = results
    assert output.dtype == ref_output.dtype == torch.bfloat16
    torch.testing.assert_close(output, ref_output, rtol=2e-2, atol=5e-2)
    for grad, ref_grad, t in zip(grads, ref_grads, (x, weight, bias)):
        assert grad.dtype == t.dtype == torch.float32
        torch.testing.assert_close(grad, ref_grad, rtol=5e-2, atol=0.5)


def test_bf16_weight_gradient_is_summed_in_float32(monkeypatch):
    """Under bf16 autocast each chunk's GEMM gives bf16, but the sum over the chunks must be
    float32: summed in bf16 over 256 one-sample chunks, the weight gradient is off by about 2%
    (each addition rounds the running sum to 8 bits), against 0.2% from the chunks' own rounding."""
    monkeypatch.setitem(student_code._COLS_CHUNK_BYTES, "cpu", (1, 1))  # one sample per chunk
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, 4, 4, generator=gen)
    weight = torch.randn(8, 4, 3, 3, generator=gen, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = custom_conv2d(x, weight, None, 1, 1)
    assert student_code._Im2Col((256, 4, 4, 4), 8, 3, 1, 1, output).chunk == 1
    grad_output = torch.randn(output.shape, generator=gen).to(output.dtype)
    grad_weight, = torch.autograd.grad(output, weight, grad_output)
    exact = torch.nn.grad.conv2d_weight(x.bfloat16().double(), weight.shape, grad_output.double(), padding=1)
    assert grad_weight.dtype == torch.float32
    assert ((grad_weight.double() - exact).norm() / exact.norm()).item() < 0.005


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_shape=(4, 3, 3, 2)), "square"),
    (dict(weight_shape=(4, 2, 3, 3)), "channels"),
    (dict(weight_shape=(4, 3, 7, 7), padding=1), "larger than the padded input"),
    (dict(stride=0), "stride"),
    (dict(padding=-1), "padding"),
    (dict(bias_shape=(5,)), "bias"),
    (dict(weight_dtype=torch.float32), "dtype"),
    (dict(input_shape=(3, 4, 4)), "4D"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    x = torch.randn(*kwargs.get("input_shape", (2, 3, 4, 4)), dtype=torch.float64)
    weight = torch.randn(*kwargs.get("weight_shape", (4, 3, 3, 3)), dtype=kwargs.get("weight_dtype", torch.float64))
    bias = torch.randn(*kwargs.get("bias_shape", (4,)), dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        custom_conv2d(x, weight, bias, kwargs.get("stride", 1), kwargs.get("padding", 0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=(3, 5)), "squared filters"),
    (dict(kernel_size=3, stride=(1, 2)), "equal stride"),
    (dict(kernel_size=3, padding="same"), "equal padding"),
])
def test_module_is_the_courses_and_asserts_its_int_arguments(kwargs, message):
    with pytest.raises(AssertionError, match=message):
        CustomConv2d(3, 6, **kwargs)


def test_module_keeps_dilation_and_groups_unused_as_the_course_does():
    """The course's wrapper stores dilation and groups "for compatibility" and never passes them:
    the convolution is the plain one whatever they hold."""
    torch.manual_seed(0)
    plain = CustomConv2d(4, 6, 3, padding=1)
    odd = CustomConv2d(4, 6, 3, padding=1, dilation=2, groups=2)
    odd.load_state_dict(plain.state_dict())
    assert (odd.dilation, odd.groups) == (2, 2) and odd.weight.shape == (6, 4, 3, 3)
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(odd(x), plain(x), rtol=0, atol=0)


def test_module_attributes_and_repr_are_the_course_wrapper():
    conv = CustomConv2d(3, 64, kernel_size=7, stride=2, padding=3)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups) == (3, 64, 7, 2, 3, 1, 1)
    assert conv.weight.shape == (64, 3, 7, 7) and conv.bias.shape == (64,)
    assert repr(conv) == "CustomConv2d(3, 64, kernel_size=7, stride=2, padding=3)"
    no_bias = CustomConv2d(64, 64, 1, bias=False)
    assert no_bias.bias is None
    assert repr(no_bias) == "CustomConv2d(64, 64, kernel_size=1, stride=1, padding=0, bias=False)"
    assert list(no_bias.state_dict()) == ["weight"]


def test_module_matches_nn_conv2d_init_and_output():
    torch.manual_seed(3)
    native = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    torch.manual_seed(3)
    custom = CustomConv2d(4, 6, 3, stride=2, padding=1)
    torch.testing.assert_close(custom.weight, native.weight, rtol=0, atol=0)
    torch.testing.assert_close(custom.bias, native.bias, rtol=0, atol=0)
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(custom(x), native(x), rtol=1e-5, atol=1e-5)
    assert CustomConv2d(4, 6, 3, bias=False).bias is None


def test_function_is_the_apply_of_custom_conv2d_function():
    assert custom_conv2d == CustomConv2DFunction.apply


@pytest.mark.cuda
@pytest.mark.parametrize("seed", range(8))
def test_cuda_matches_native(seed):
    s = random_setting(2000 + seed)
    assert_matches_native(*make_tensors(s, seed=seed, device="cuda"), s["stride"], s["padding"], **TIGHT)


@pytest.mark.cuda
def test_cuda_autocast_matches_native():
    """In the autocast dtype main.py picks for this GPU (bf16 from compute capability 8.0, else fp16)."""
    dtype = cuda_amp_dtype(torch.device("cuda", torch.cuda.current_device()))
    s = dict(n=4, in_channels=16, out_channels=32, height=20, width=20, kernel_size=3, stride=1, padding=1,
             bias=True, channels_last=False)
    x, weight, bias = make_tensors(s, dtype=torch.float32, device="cuda")
    results = []
    for conv in (custom_conv2d, native_conv):
        with torch.autocast("cuda", dtype=dtype):
            output = conv(x, weight, bias, 1, 1)
            loss = output.float().square().mean()
        results.append((output, torch.autograd.grad(loss, [x, weight, bias])))
    (output, grads), (ref_output, ref_grads) = results
    assert output.dtype == ref_output.dtype == dtype
    torch.testing.assert_close(output, ref_output, rtol=2e-2, atol=2e-2)
    for grad, ref_grad in zip(grads, ref_grads):
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad, ref_grad, rtol=5e-2, atol=5e-3)
