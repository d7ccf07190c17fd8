"""Every graded part of the MiniPlaces homework.

Part I.1  CustomConv2DFunction / CustomConv2d: convolution by unfold + matrix products.
Part I.2  SimpleNet (the starter's CNN) and an improved CNN (``default_cnn_model``).
Part II   Attention, TransformerBlock, SimpleViT and an improved ViT (``default_vit_model``).
Data      get_train_transforms / get_val_transforms.
Part III  PGDAttack (``default_attack``) and vis_grid (``default_visfunction``).
"""
import math

import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F
from torch.nn.modules.utils import _pair
from torchvision.utils import make_grid

import custom_transforms as transforms
from custom_blocks import DropPath, MLP, PatchEmbed, trunc_normal_, window_partition, window_unpartition

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


################################################################################
# Part I.1: convolution by unfold (im2col), matrix products and fold (col2im)
################################################################################


def _check_conv_args(input_feats, weight, bias, stride, padding):
    """Raise a ValueError naming the first argument :class:`CustomConv2DFunction` cannot take.

    Accepted: input (N, Ci, H, W) and weight (Co, Ci, K, K) of one floating dtype and device,
    bias None or (Co,), int stride >= 1, int padding >= 0, K <= H + 2 * padding and W + 2 * padding.
    """
    if input_feats.dim() != 4:
        raise ValueError(f"input must be 4D (N, Ci, H, W), got shape {tuple(input_feats.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4D (Co, Ci, K, K), got shape {tuple(weight.shape)}")
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    if kernel_h != kernel_w:
        raise ValueError(f"only square kernels are supported, got a {kernel_h}x{kernel_w} kernel")
    if input_feats.shape[1] != in_channels:
        raise ValueError(f"input has {input_feats.shape[1]} channels but the weight "
                         f"{tuple(weight.shape)} expects {in_channels}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias.shape)}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    tensors = [t for t in (input_feats, weight, bias) if t is not None]
    if not input_feats.is_floating_point() or any(t.dtype != input_feats.dtype for t in tensors):
        raise ValueError("input, weight and bias must share one floating dtype, got "
                         f"{[t.dtype for t in tensors]}")
    if any(t.device != input_feats.device for t in tensors):
        raise ValueError(f"input, weight and bias must be on one device, got {[t.device for t in tensors]}")
    height, width = input_feats.shape[2] + 2 * padding, input_feats.shape[3] + 2 * padding
    if kernel_h > min(height, width):
        raise ValueError(f"kernel size {kernel_h} is larger than the padded input {height}x{width} "
                         f"(input {tuple(input_feats.shape[2:])}, padding {padding})")


def _autocast_args(input_feats, weight, bias):
    """Cast input, weight and bias to the autocast dtype when autocast is on for their device
    (float64 tensors are left alone, as autocast does), so the GEMMs run in that dtype."""
    device_type = input_feats.device.type
    if not torch.is_autocast_enabled(device_type):
        return input_feats, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    cast = [t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in (input_feats, weight, bias)]
    return tuple(cast)


# How a pass splits its column matrix into chunks of whole samples, each kept between the
# (min, max) bytes of its device. On CPU, a chunk of a few MiB stays in cache between the
# unfolding copy and the GEMM that reads it, and is not paged in afresh. With several
# threads, every multi-threaded op of a chunk ends in a barrier that, on a busy CPU, can wait
# a scheduler time slice; so a pass then uses at most _COLS_CHUNKS chunks. On a GPU a pass
# stays one large GEMM up to the bound on memory.
_COLS_CHUNKS = 4
_COLS_CHUNK_BYTES = {"cpu": (4 * 1024 ** 2, 64 * 1024 ** 2)}
_COLS_CHUNK_BYTES_DEFAULT = (1024 ** 3, 1024 ** 3)


class _Im2Col:
    """im2col and col2im for one convolution on channels-last data, in chunks of whole samples.

    The column matrix of a chunk of B samples is (B*Ho*Wo, K*K*Ci): row (b, i, j) holds the
    window under output pixel (i, j), columns ordered (kh, kw, ci). A pass splits the batch
    into chunks whose columns stay within ``_COLS_CHUNK_BYTES`` (at most ``_COLS_CHUNKS`` of
    them with several threads) and have at least Co rows (so that accumulating the
    (Co, K*K*Ci) weight gradient over chunks costs less than their GEMMs). One buffer,
    allocated on first use and reused by every chunk, holds a chunk's columns. A 1x1 kernel
    with stride 1 and no padding on dense channels-last data needs no buffer: its columns
    are a view of the input, in one chunk.
    """

    def __init__(self, input_size, out_channels, kernel_size, stride, padding, like):
        self.n, self.h, self.w, self.c = input_size
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ho = (self.h + 2 * padding - kernel_size) // stride + 1
        self.wo = (self.w + 2 * padding - kernel_size) // stride + 1
        self.pointwise = kernel_size == 1 and stride == 1 and padding == 0
        self.width = kernel_size * kernel_size * self.c
        pixels = self.ho * self.wo
        sample_bytes = pixels * self.width * like.element_size()
        min_bytes, max_bytes = _COLS_CHUNK_BYTES.get(like.device.type, _COLS_CHUNK_BYTES_DEFAULT)
        fewest = max(min_bytes // sample_bytes, -(-out_channels // pixels))
        most = max(1, max_bytes // sample_bytes)
        count = _COLS_CHUNKS if torch.get_num_threads() > 1 else self.n  # most chunks per pass
        self.chunk = max(1, min(self.n, most, max(fewest, -(-self.n // count))))
        self.like = like
        self.buffer = None

    def chunks(self, x=None):
        """Yield (samples, rows): a slice of the batch and of its rows in (N*Ho*Wo, .) matrices.
        One chunk when the columns of channels-last x (N, H, W, Ci) are a view of it."""
        chunk = self.n if x is not None and self._is_view(x) else self.chunk
        pixels = self.ho * self.wo
        for start in range(0, self.n, chunk):
            stop = min(start + chunk, self.n)
            yield slice(start, stop), slice(start * pixels, stop * pixels)

    def _is_view(self, x):
        """Whether the columns of x (B, H, W, Ci) are x itself, viewed as (B*H*W, Ci)."""
        return self.pointwise and x.is_contiguous()

    def scratch(self, rows):
        """The (rows, K*K*Ci) column buffer of at most one chunk, allocated on first use."""
        if self.buffer is None:
            self.buffer = self.like.new_empty(self.chunk * self.ho * self.wo, self.width)
        return self.buffer[:rows]

    def pad(self, x):
        """Channels-last x (N, H, W, Ci) with zero borders: (N, H+2p, W+2p, Ci), x itself if p is 0."""
        p = self.padding
        if p == 0:
            return x
        padded = x.new_zeros(self.n, self.h + 2 * p, self.w + 2 * p, self.c)
        padded[:, p:p + self.h, p:p + self.w] = x
        return padded

    def im2col(self, x):
        """Columns (B*Ho*Wo, K*K*Ci) of a chunk x (B, H+2p, W+2p, Ci) of :meth:`pad`'s output."""
        if self._is_view(x):
            return x.view(-1, self.c)  # (B*H*W, Ci)
        b, k = x.shape[0], self.kernel_size
        windows = x.unfold(1, k, self.stride).unfold(2, k, self.stride)  # (B, Ho, Wo, Ci, K, K) strided view
        cols = self.scratch(b * self.ho * self.wo)  # (B*Ho*Wo, K*K*Ci)
        cols.view(b, self.ho, self.wo, k, k, self.c).copy_(windows.permute(0, 1, 2, 4, 5, 3))  # (B, Ho, Wo, K, K, Ci)
        return cols

    def col2im(self, cols, grid):
        """Add the column gradients cols (B*Ho*Wo, K*K*Ci) of overlapping windows into a chunk
        grid (B, H+2p, W+2p, Ci) of the padded input's gradient: the adjoint of :meth:`im2col`."""
        k, s = self.kernel_size, self.stride
        cols = cols.view(grid.shape[0], self.ho, self.wo, k, k, self.c)  # (B, Ho, Wo, K, K, Ci)
        for kh in range(k):
            for kw in range(k):
                grid[:, kh:kh + s * (self.ho - 1) + 1:s, kw:kw + s * (self.wo - 1) + 1:s].add_(cols[:, :, :, kh, kw])


class CustomConv2DFunction(Function):
    """2D convolution (cross-correlation, as ``F.conv2d``) by im2col and matrix products.

    Forward: input (N, Ci, H, W), weight (Co, Ci, K, K), bias (Co,) or None, int stride >= 1,
    int padding >= 0 -> output (N, Co, Ho, Wo) with Ho = (H + 2 * padding - K) // stride + 1
    (Wo likewise), in channels_last memory format, so a following custom conv reads it
    without a copy. Any floating dtype, any device, contiguous or channels_last input.

    The input is unfolded (im2col) into (B*Ho*Wo, K*K*Ci) column matrices, chunk by chunk of
    B samples, each multiplied by the (K*K*Ci, Co) weight matrix in one GEMM. Only input and
    weight are saved: backward unfolds the input again for the weight gradient (one GEMM per
    chunk) and folds (col2im) the column gradients (one GEMM per chunk) into the input
    gradient. Under autocast the GEMMs run in the autocast dtype.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, input_feats, weight, bias, stride=1, padding=0):
        input_feats, weight, bias = _autocast_args(input_feats, weight, bias)
        _check_conv_args(input_feats, weight, bias, stride, padding)
        n, in_channels, h, w = input_feats.shape
        out_channels, _, kernel_size, _ = weight.shape
        unfold = _Im2Col((n, h, w, in_channels), out_channels, kernel_size, stride, padding, input_feats)
        x = unfold.pad(input_feats.permute(0, 2, 3, 1))  # (N, H+2p, W+2p, Ci)
        weight_t = weight.permute(2, 3, 1, 0).reshape(-1, out_channels)  # (K*K*Ci, Co), rows in column order

        output = torch.empty((n, out_channels, unfold.ho, unfold.wo), dtype=input_feats.dtype,
                             device=input_feats.device, memory_format=torch.channels_last)
        output_2d = output.permute(0, 2, 3, 1).view(-1, out_channels)  # (N*Ho*Wo, Co), shares memory
        for samples, rows in unfold.chunks(x):
            cols = unfold.im2col(x[samples])  # (B*Ho*Wo, K*K*Ci)
            if bias is None:
                torch.mm(cols, weight_t, out=output_2d[rows])  # (B*Ho*Wo, K*K*Ci) @ (K*K*Ci, Co)
            else:
                torch.addmm(bias, cols, weight_t, out=output_2d[rows])

        needs_input_grad, needs_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(input_feats if needs_weight_grad else None, weight if needs_input_grad else None)
        ctx.geometry = ((n, h, w, in_channels), out_channels, kernel_size, stride, padding)
        return output

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_output):
        input_feats, weight = ctx.saved_tensors
        (n, h, w, in_channels), out_channels, kernel_size, stride, padding = ctx.geometry
        unfold = _Im2Col(*ctx.geometry, grad_output)
        grad_2d = grad_output.permute(0, 2, 3, 1).reshape(-1, out_channels)  # (N*Ho*Wo, Co)
        grad_input = grad_weight = grad_bias = None
        accumulate_dtype = torch.promote_types(grad_output.dtype, torch.float32)  # float32 sums for fp16 / bf16

        if ctx.needs_input_grad[2]:
            grad_bias = grad_2d.sum(0)  # (Co,)
        if ctx.needs_input_grad[1]:
            x = unfold.pad(input_feats.permute(0, 2, 3, 1))  # (N, H+2p, W+2p, Ci)
            grad_weight = grad_2d.new_zeros(out_channels, unfold.width, dtype=accumulate_dtype)  # (Co, K*K*Ci)
            for samples, rows in unfold.chunks(x):
                cols = unfold.im2col(x[samples])  # (B*Ho*Wo, K*K*Ci)
                if grad_weight.dtype == cols.dtype:
                    grad_weight.addmm_(grad_2d[rows].t(), cols)  # += (Co, B*Ho*Wo) @ (B*Ho*Wo, K*K*Ci)
                else:
                    grad_weight += torch.mm(grad_2d[rows].t(), cols)  # float32 += (Co, K*K*Ci) in fp16 / bf16
            grad_weight = grad_weight.view(out_channels, kernel_size, kernel_size, -1)  # (Co, K, K, Ci)
            grad_weight = grad_weight.permute(0, 3, 1, 2)  # (Co, Ci, K, K)
        if ctx.needs_input_grad[0]:
            weight_2d = weight.permute(0, 2, 3, 1).reshape(out_channels, -1)  # (Co, K*K*Ci)
            if unfold.pointwise:
                grad_x = torch.mm(grad_2d, weight_2d).view(n, h, w, in_channels)  # (N*H*W, Co) @ (Co, Ci)
            else:
                hp, wp = h + 2 * padding, w + 2 * padding
                grid = grad_2d.new_zeros(n, hp, wp, in_channels, dtype=accumulate_dtype)  # grad of the padded input
                for samples, rows in unfold.chunks():
                    grad_cols = unfold.scratch(rows.stop - rows.start)  # (B*Ho*Wo, K*K*Ci)
                    torch.mm(grad_2d[rows], weight_2d, out=grad_cols)  # (B*Ho*Wo, Co) @ (Co, K*K*Ci)
                    unfold.col2im(grad_cols, grid[samples])  # -> (B, H+2p, W+2p, Ci)
                grad_x = grid[:, padding:padding + h, padding:padding + w]  # (N, H, W, Ci)
            grad_x = grad_x.permute(0, 3, 1, 2).to(grad_output.dtype)  # (N, Ci, H, W)
            grad_input = grad_x.contiguous(memory_format=torch.channels_last)  # dense (a copy when padded)
        return grad_input, grad_weight, grad_bias, None, None


custom_conv2d = CustomConv2DFunction.apply


def _as_int(name, value):
    """``value`` as one int: an int, or a pair of equal ints (nn.Conv2d style); ValueError otherwise."""
    pair = _pair(value)
    if len(pair) != 2 or pair[0] != pair[1] or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of equal ints, got {value!r}")
    return pair[0]


class CustomConv2d(nn.Module):
    """Drop-in for nn.Conv2d (square kernels, equal strides and paddings, dilation 1, groups 1)
    that runs :class:`CustomConv2DFunction`.

    Input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo), channels_last.
    ``kernel_size``, ``stride`` and ``padding`` are ints or pairs of equal ints.
    Raises ValueError for what the function cannot compute (non-square kernel, dilation, groups).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        kernel_size = _as_int("kernel_size", kernel_size)
        stride = _as_int("stride", stride)
        padding = _as_int("padding", padding)
        if _as_int("dilation", dilation) != 1:
            raise ValueError(f"only dilation 1 is supported, got {dilation!r}")
        if groups != 1:
            raise ValueError(f"only groups 1 is supported, got {groups!r}")
        if min(in_channels, out_channels, kernel_size, stride) < 1 or padding < 0:
            raise ValueError(f"need channels, kernel_size, stride >= 1 and padding >= 0, got in_channels="
                             f"{in_channels}, out_channels={out_channels}, kernel_size={kernel_size}, "
                             f"stride={stride}, padding={padding}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """Kaiming-uniform init, as nn.Conv2d."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size * self.kernel_size
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        """(N, in_channels, H, W) -> (N, out_channels, Ho, Wo)."""
        return custom_conv2d(input, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


################################################################################
# Part I.2: the starter's SimpleNet
################################################################################


class SimpleNet(nn.Module):
    """The starter's CNN: 7x7/2 stem, two bottlenecks with max-pooling, GAP, linear.

    Input (B, 3, H, W) normalized images; output (B, num_classes) logits.
    ``conv_op`` builds every convolution (nn.Conv2d or CustomConv2d).
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.features = nn.Sequential(
            conv_op(3, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            conv_op(64, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            conv_op(256, 128, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(128, 128, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(128, 512, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, CustomConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (B, 512, H/16, W/16)
        x = self.avgpool(x).flatten(1)  # (B, 512)
        return self.fc(x)


################################################################################
# Part I.2: the improved CNN
################################################################################


default_cnn_model = SimpleNet


################################################################################
# Part II: self-attention and Vision Transformers
################################################################################


class Attention(nn.Module):
    """Multi-head self-attention on (B, H, W, C) tokens (placeholder until Part II lands)."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        raise NotImplementedError("Attention is not implemented yet")


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block (placeholder until Part II lands)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU, window_size=0):
        super().__init__()
        raise NotImplementedError("TransformerBlock is not implemented yet")


class SimpleViT(nn.Module):
    """The starter's Vision Transformer (placeholder until Part II lands)."""

    def __init__(self, img_size=128, num_classes=100, patch_size=16, in_chans=3, embed_dim=192,
                 depth=4, num_heads=4, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU, use_abs_pos=True, window_size=4,
                 window_block_indexes=(0, 2)):
        super().__init__()
        raise NotImplementedError("SimpleViT is not implemented yet")


default_vit_model = SimpleViT


################################################################################
# Data: train and validation transforms
################################################################################


def get_train_transforms(normalize=True):
    """Training augmentation: HWC uint8 RGB image -> (3, 128, 128) float tensor,
    normalized with the ImageNet statistics (values roughly in [-2.2, 2.7])."""
    train_transforms = [
        transforms.Scale(160, interpolations=("nearest", "bilinear", "bicubic", "area")),
        transforms.RandomHorizontalFlip(),
        transforms.RandomColor(0.15),
        transforms.RandomRotate(15),
        transforms.RandomSizedCrop(128),
        transforms.ToTensor(),
    ]
    if normalize:
        train_transforms.append(transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return transforms.Compose(train_transforms)


def get_val_transforms(normalize=True):
    """Deterministic validation transform: resize the short side to 160 (bilinear),
    centre-crop 128 -> (3, 128, 128) float tensor, normalized like training."""
    val_transforms = [
        transforms.Scale(160),
        transforms.CenterCrop(128),
        transforms.ToTensor(),
    ]
    if normalize:
        val_transforms.append(transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return transforms.Compose(val_transforms)


################################################################################
# Part III: adversarial samples
################################################################################


class PGDAttack:
    """L-inf PGD towards the least-confident label (placeholder until Part III lands)."""

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1):
        self.loss_fn = loss_fn
        self.num_steps = num_steps
        self.step_size = step_size
        self.epsilon = epsilon

    def perturb(self, model, input):
        raise NotImplementedError("PGDAttack.perturb is not implemented yet")


default_attack = PGDAttack


def vis_grid(input, n_rows=10):
    """Tile a batch (B, C, H, W) into one (C, H', W') image scaled to [0, 1]."""
    return make_grid(input, nrow=n_rows, normalize=True)


default_visfunction = vis_grid
