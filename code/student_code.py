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
from torch.nn.modules.module import Module
from torchvision.utils import make_grid

import custom_transforms as transforms
from custom_blocks import DropPath, MLP, PatchEmbed, trunc_normal_, window_partition, window_unpartition

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(ok, message):
    """Raise ValueError(message) unless ``ok``: one line per argument check of a graded class."""
    if not ok:
        raise ValueError(message)


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


if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4: one autocast query for every device type
    def _autocast_dtype(device_type):
        """The autocast dtype in force for ``device_type``, or None when autocast is off there."""
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
else:  # torch 2.0-2.3: one query per device type, CUDA and CPU only
    def _autocast_dtype(device_type):
        """The autocast dtype in force for ``device_type``, or None when autocast is off there."""
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        return None

if hasattr(torch.amp, "custom_fwd"):  # torch >= 2.4 (torch.cuda.amp's versions are deprecated there)
    _custom_fwd = torch.amp.custom_fwd(device_type="cuda")
    _custom_bwd = torch.amp.custom_bwd(device_type="cuda")
else:
    _custom_fwd, _custom_bwd = torch.cuda.amp.custom_fwd, torch.cuda.amp.custom_bwd


def _autocast_args(input_feats, weight, bias):
    """Cast input, weight and bias to the autocast dtype when autocast is on for their device
    (float64 tensors are left alone, as autocast does), so the GEMMs run in that dtype."""
    dtype = _autocast_dtype(input_feats.device.type)
    if dtype is None:
        return input_feats, weight, bias
    return tuple(t if t is None or t.dtype == torch.float64 else t.to(dtype) for t in (input_feats, weight, bias))


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

    What it cannot compute stops here with a ValueError naming the argument (the course's
    CustomConv2d, kept as provided, checks only that kernel_size, stride and padding are ints):
    a non-square kernel, a stride or padding that is not one int, channels, dtypes or devices
    that do not match, a kernel larger than the padded input. CustomConv2d stores ``dilation``
    and ``groups`` "for compatibility" and never passes them: the convolution has dilation 1
    and groups 1 whatever they hold, as in the course's release.
    """

    @staticmethod
    @_custom_fwd
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
    @_custom_bwd
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


class CustomConv2d(Module):
    """
    The same interface as torch.nn.Conv2D
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
    ):
        super(CustomConv2d, self).__init__()
        assert isinstance(kernel_size, int), "We only support squared filters"
        assert isinstance(stride, int), "We only support equal stride"
        assert isinstance(padding, int), "We only support equal padding"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding

        # not used (for compatibility)
        self.dilation = dilation
        self.groups = groups

        # register weight and bias as parameters
        self.weight = nn.Parameter(
            torch.Tensor(out_channels, in_channels, kernel_size, kernel_size)
        )
        if bias:
            self.bias = nn.Parameter(torch.Tensor(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # initialization using Kaiming uniform
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        # call our custom conv2d op
        return custom_conv2d(input, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        s = (
            "{in_channels}, {out_channels}, kernel_size={kernel_size}"
            ", stride={stride}, padding={padding}"
        )
        if self.bias is None:
            s += ", bias=False"
        return s.format(**self.__dict__)


################################################################################
# Part I.2: the starter's SimpleNet
################################################################################


class AdversarialTrainingMixin:
    """Adversarial training inside ``forward`` for an nn.Module classifier (off by default).

    Adopted as ``class Net(AdversarialTrainingMixin, nn.Module)`` with ``x = self.adversarial_mix(x)`` at
    the top of ``forward``. Once ``enable_adversarial_training`` was called, every training-mode forward
    replaces the first ``round(adv_ratio * B)`` samples of the (shuffled) batch by PGD samples towards their
    least-confident label, made against the current weights (:class:`PGDAttack`: ``forward`` has no labels;
    these are the "iterative least-likely class" samples Kurakin et al., ICLR 2017, trained on). Labels stay
    aligned. The attack runs the model in eval mode, where ``adversarial_mix`` passes inputs through (no
    recursion, no BatchNorm update, no dropout), in float32 with autocast off (as strong under fp16
    autocast), and leaves no ``.grad``; its samples are detached. Cost: about ``adv_ratio * num_steps``
    extra forward+backward passes per training step.
    """

    adv_attack = None
    adv_ratio = 0.0

    def enable_adversarial_training(self, adv_ratio=0.5, num_steps=3, epsilon=0.1, step_size=None,
                                    random_start=False):
        """Train on PGD samples from now on: ``adv_ratio`` in (0, 1] of every training batch, ``num_steps``
        >= 1 steps of ``step_size`` (None: 2.5 * epsilon / num_steps, so that the steps can reach the border
        of the ball, Madry et al., ICLR 2018) within ``epsilon`` (normalized units; 0.1 is about 6 of 255)."""
        _check(0.0 < adv_ratio <= 1.0, f"adv_ratio must lie in (0, 1], got {adv_ratio!r}")
        _check(isinstance(num_steps, int) and num_steps >= 1, f"num_steps must be an int >= 1, got {num_steps!r}")
        step_size = 2.5 * epsilon / num_steps if step_size is None else step_size
        self.adv_attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=num_steps, step_size=step_size,
                                    epsilon=epsilon, random_start=random_start)
        self.adv_ratio = float(adv_ratio)

    def adversarial_mix(self, x):
        """(B, C, H, W) normalized batch -> the same batch with its first ``round(adv_ratio * B)``
        (halves rounded up) samples replaced by PGD samples in training mode; ``x`` itself otherwise."""
        if not self.training or self.adv_attack is None:
            return x
        num_adv = math.floor(self.adv_ratio * x.shape[0] + 0.5)
        if num_adv == 0:
            return x
        x_adv = self.adv_attack.perturb(self, x[:num_adv])  # (num_adv, C, H, W)
        return torch.cat([x_adv, x[num_adv:]])  # (B, C, H, W)


class SimpleNet(AdversarialTrainingMixin, nn.Module):
    """The course's SimpleNet as provided, with the adversarial-training hook it invites: the base
    class AdversarialTrainingMixin and its call at the top of ``forward`` (off by default).

    Input (B, 3, H, W) normalized images -> (B, num_classes) logits; ``conv_op`` builds every
    convolution (nn.Conv2d or CustomConv2d). Like the course's, it keeps PyTorch's default
    initialization (``reset_parameters`` is provided but not called).
    """
    # a simple CNN for image classifcation
    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super(SimpleNet, self).__init__()
        # you can start from here and create a better model
        self.features = nn.Sequential(
            # conv1 block: conv 7x7
            conv_op(3, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            # max pooling 1/2
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            # conv2 block: simple bottleneck
            conv_op(64, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            # max pooling 1/2
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            # conv3 block: simple bottleneck
            conv_op(256, 128, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(128, 128, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(128, 512, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
        )
        # global avg pooling + FC
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def reset_parameters(self):
        # init all params
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.consintat_(m.bias, 0.0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def forward(self, x):
        # you can implement adversarial training here
        x = self.adversarial_mix(x)  # (B, 3, H, W): in training mode, part PGD samples once enabled
        x = self.features(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return x


################################################################################
# Part I.2: the improved CNN
################################################################################


class ConvBN(nn.Sequential):
    """``conv_op`` (no bias, "same" padding) -> BatchNorm2d -> ReLU (nn.Identity() if ``act`` is False).

    Input (B, in_channels, H, W) -> output (B, out_channels, ceil(H / stride), ceil(W / stride))
    for odd ``kernel_size``.
    """

    def __init__(self, conv_op, in_channels, out_channels, kernel_size, stride=1, act=True):
        super().__init__(
            conv_op(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                    padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


class ResidualBlock(nn.Module):
    """Basic residual block: relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)).

    The first conv carries the stride. When the shape changes, the shortcut is a
    ResNet-D projection: 2x2 average pooling (if strided) then conv1x1 + BN, so no
    activation is dropped by a strided 1x1 conv. Input (B, in_channels, H, W) ->
    output (B, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, conv_op, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = ConvBN(conv_op, in_channels, out_channels, 3, stride)
        self.conv2 = ConvBN(conv_op, out_channels, out_channels, 3, act=False)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            pool = (nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False)
                    if stride > 1 else nn.Identity())
            self.shortcut = nn.Sequential(pool, ConvBN(conv_op, in_channels, out_channels, 1, act=False))

    def zero_init_last(self):
        """Zero the residual branch's last BN scale: the block starts as relu(shortcut(x))."""
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class SceneResNet(AdversarialTrainingMixin, nn.Module):
    """A ResNet sized for 128x128 scenes (``default_cnn_model``).

    Stem: three 3x3 ConvBN (3 -> stem_width /2, -> stem_width, -> widths[0] /2), total stride 4 without
    max-pool, so stage 1 sees ResNet18's 32x32 grid at 128x128. Stage i: ``depths[i]`` residual
    blocks of width ``widths[i]``, each stage after the first halving the grid; the blocks beyond
    ResNet18 go to the 16x16 and 8x8 stages, where scene parts and layout are resolved. Head: global
    average pool, dropout (``drop_rate`` in [0, 1)), linear. Kaiming-normal convs, last BN scale of
    every residual branch zeroed (each block starts as its shortcut). Budget per 128x128 image (forward
    FLOPs, FlopCounterMode): 13.90M parameters, 1.68 GFLOPs at the defaults; ResNet18 11.23M, 1.18 GFLOPs;
    SimpleNet 0.37M, 0.32 GFLOPs. ``conv_op`` builds every conv, called as
    conv_op(in, out, kernel_size=int, stride=int, padding=int, bias=bool): nn.Conv2d or CustomConv2d.
    PGD samples in training: ``enable_adversarial_training`` (:class:`AdversarialTrainingMixin`).
    Input (B, 3, H, W) normalized images, any H, W >= 1 (grid sizes round up) -> (B, num_classes) logits.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100, widths=(64, 128, 256, 512),
                 depths=(2, 3, 4, 2), stem_width=32, drop_rate=0.0):
        super().__init__()
        sizes = (num_classes, *widths, *depths, stem_width)
        _check(len(widths) == len(depths) > 0 and all(isinstance(v, int) and v > 0 for v in sizes),
               f"num_classes {num_classes!r}, widths {widths!r}, depths {depths!r} (equal lengths) and stem_width "
               f"{stem_width!r} must be ints > 0")
        _check(0.0 <= drop_rate < 1.0, f"drop_rate must lie in [0, 1), got {drop_rate!r}")
        self.stem = nn.Sequential(
            ConvBN(conv_op, 3, stem_width, 3, stride=2),
            ConvBN(conv_op, stem_width, stem_width, 3),
            ConvBN(conv_op, stem_width, widths[0], 3, stride=2),
        )
        stages, in_channels = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [ResidualBlock(conv_op, in_channels, width, stride=2 if i > 0 else 1)]
            blocks += [ResidualBlock(conv_op, width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():  # every conv built by ConvBN has no bias; BatchNorm keeps its (1, 0) init
            if isinstance(m, (nn.Conv2d, CustomConv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, ResidualBlock):
                m.zero_init_last()

    def forward_features(self, x):
        """(B, 3, H, W) -> (B, widths[-1], H/s, W/s), s = 4 * 2 ** (len(widths) - 1) (32 by default)."""
        return self.stages(self.stem(x))  # stem: (B, widths[0], H/4, W/4)

    def forward_head(self, x):
        """(B, widths[-1], h, w) feature map -> (B, num_classes) logits."""
        return self.fc(self.drop(self.avgpool(x).flatten(1)))  # pooled: (B, widths[-1])

    def forward(self, x):
        x = self.adversarial_mix(x)  # (B, 3, H, W): part PGD samples in adversarial training
        return self.forward_head(self.forward_features(x))


default_cnn_model = SceneResNet


################################################################################
# Part II: self-attention and Vision Transformers
################################################################################


class ConvStem(nn.Module):
    """Convolutional patchify stem (Xiao et al. 2021, "Early convolutions help
    transformers see better"): stride-2 3x3 conv + BatchNorm + ReLU per entry of
    ``channels``, then a 1x1 projection to ``embed_dim``. Convolutions start from
    Kaiming-normal (fan_out) weights, as in ResNets.

    (B, in_chans, H, W) -> (B, H / 2^k, W / 2^k, embed_dim) with k = len(channels);
    H and W must be multiples of 2^k.
    """

    def __init__(self, in_chans=3, embed_dim=256, channels=(64, 128, 256)):
        super().__init__()
        if not channels:
            raise ValueError("ConvStem needs at least one stride-2 stage, got channels=()")
        layers = []
        for c_in, c_out in zip((in_chans,) + tuple(channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels[-1], embed_dim, kernel_size=1)
        self.stride = 2 ** len(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"ConvStem needs H and W divisible by {self.stride}, got {tuple(x.shape[-2:])}")
        x = self.proj(self.convs(x))  # (B, C, H / stride, W / stride)
        return x.permute(0, 2, 3, 1)  # (B, H', W', C)


def sincos_pos_embed_2d(h, w, dim, temperature=10000.0):
    """Fixed 2D sine-cosine position embedding (Beyer et al. 2022, "Better plain
    ViT baselines"): a quarter of the channels each for sin(y), cos(y), sin(x),
    cos(x) at ``dim // 4`` geometric frequencies 1 / temperature^(i / (dim/4)).

    Returns a (h, w, dim) float32 tensor with values in [-1, 1]; ``dim`` must be a
    multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"sincos_pos_embed_2d needs dim divisible by 4, got {dim}")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (dim/4,)
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")  # (h, w) each
    y = y[..., None] * omega  # (h, w, dim/4)
    x = x[..., None] * omega  # (h, w, dim/4)
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=-1)  # (h, w, dim)


class Attention(nn.Module):
    """Multi-head Self-Attention over all tokens of a (B, H, W, C) grid.

    Per head h: softmax(Q_h K_h^T / sqrt(d_head)) V_h with d_head = dim / num_heads; the heads
    are concatenated in order (head h fills channels h*d_head to (h+1)*d_head - 1) and mixed by
    the output projection. ``forward`` computes that formula with explicit matrix products; an
    instance whose ``fused`` is set to True calls F.scaled_dot_product_attention instead (the
    same function: tests/test_attention.py), which only ImprovedViT does.

    Input (B, H, W, dim) -> output (B, H, W, dim), any real values; dim a multiple of num_heads.
    """

    fused = False  # False (every model but ImprovedViT): the formula; True: PyTorch's fused kernel

    def __init__(
        self,
        dim,
        num_heads=8,
        qkv_bias=True,
    ):
        """
        Args:
            dim (int): Number of input channels. We assume Q, K, V will be of
                same dimension as the input.
            num_heads (int): Number of attention heads.
            qkv_bias (bool:  If True, add a learnable bias to query, key, value.
        """
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5

        # linear projection for query, key, value
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # linear projection at the end
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        dim = self.qkv.in_features
        if x.ndim != 4 or x.shape[-1] != dim or dim % self.num_heads:
            raise ValueError(f"Attention({dim} channels, {self.num_heads} heads) expects (B, H, W, {dim}) tokens "
                             f"with {dim} a multiple of the heads, got shape {tuple(x.shape)}")
        # input size (B, H, W, C)
        B, H, W, _ = x.shape
        # qkv with shape (3, B, nHead, H * W, C)
        qkv = (
            self.qkv(x).reshape(
                B, H * W, 3, self.num_heads, -1
            ).permute(2, 0, 3, 1, 4)
        )
        # q, k, v with shape (B * nHead, H * W, C)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        if self.fused:  # 4-D (B, nh, N, hd), which the flash and memory-efficient kernels need
            x = F.scaled_dot_product_attention(*(t.view(B, self.num_heads, H * W, -1) for t in (q, k, v)))
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B * nh, N, hd) @ (B * nh, hd, N) -> (B * nh, N, N)
            attn = attn.softmax(dim=-1)  # each row sums to 1 over the keys
            x = attn @ v  # (B * nh, N, N) @ (B * nh, N, hd) -> (B * nh, N, hd)
        x = x.reshape(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4)  # (B, H, W, nh, hd)
        x = self.proj(x.reshape(B, H, W, dim))  # heads concatenated: (B, H, W, nh * hd)
        return x

    def extra_repr(self):
        return f"num_heads={self.num_heads}, fused={self.fused}"


class TransformerBlock(nn.Module):
    """Transformer blocks with support of local window self-attention"""
    def __init__(
        self,
        dim,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        act_layer=nn.GELU,
        window_size=0,
    ):
        """
        Args:
            dim (int): Number of input channels.
            num_heads (int): Number of attention heads in each ViT block.
            mlp_ratio (float): Ratio of mlp hidden dim to embedding dim.
            qkv_bias (bool): If True, add a learnable bias to query, key, value.
            drop_path (float): Stochastic depth rate.
            norm_layer (nn.Module): Normalization layer.
            act_layer (nn.Module): Activation layer.
            window_size (int): Window size for window attention blocks.
                If it equals 0, then global attention is used.
        """
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
        )

        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = MLP(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer
        )

        self.window_size = window_size

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        # Window partition
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)

        x = self.attn(x)
        # Reverse window partition
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))

        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


def _vit_blocks(depth, drop_path_rate, window_size, window_block_indexes, **block_args):
    """``depth`` TransformerBlocks (``block_args``: dim, num_heads, ...) in an nn.ModuleList: window attention
    in ``window_block_indexes``, global in the others; stochastic depth rising linearly from 0 to
    ``drop_path_rate`` (last block)."""
    bad = [i for i in window_block_indexes if not 0 <= i < depth]
    _check(depth >= 1 and not bad, f"depth ({depth}) must be >= 1 and hold window_block_indexes, got {bad} outside")
    _check(0.0 <= drop_path_rate < 1.0, f"drop_path_rate must lie in [0, 1) (the course's drop_path divides by "
                                         f"1 - rate), got {drop_path_rate}")
    dpr = torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList([TransformerBlock(drop_path=rate, window_size=window_size if i in window_block_indexes else 0,
                                           **block_args) for i, rate in enumerate(dpr)])


class SimpleViT(nn.Module):
    """
    This module implements Vision Transformer (ViT) backbone in
    "Exploring Plain Vision Transformer Backbones for Object Detection",
    https://arxiv.org/abs/2203.16527

    Ours: non-overlapping patch embedding, optional learned absolute positions, ``depth``
    Transformer blocks (window attention in ``window_block_indexes``, global in the others),
    global average pooling of the tokens, LayerNorm and a linear head; its attention runs the
    formula (Attention.fused False).
    Input (B, in_chans, img_size, img_size) normalized images -> (B, num_classes) logits.
    """

    def __init__(
        self,
        img_size=128,
        num_classes=100,
        patch_size=16,
        in_chans=3,
        embed_dim=192,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.1,
        norm_layer=nn.LayerNorm,
        act_layer=nn.GELU,
        use_abs_pos=True,
        window_size=4,
        window_block_indexes=(0, 2),
    ):
        """
        Args:
            img_size (int): Input image size.
            num_classes (int): Number of object categories
            patch_size (int): Patch size.
            in_chans (int): Number of input image channels.
            embed_dim (int): Patch embedding dimension.
            depth (int): Depth of ViT.
            num_heads (int): Number of attention heads in each ViT block.
            mlp_ratio (float): Ratio of mlp hidden dim to embedding dim.
            qkv_bias (bool): If True, add a learnable bias to query, key, value.
            drop_path_rate (float): Stochastic depth rate.
            norm_layer (nn.Module): Normalization layer.
            act_layer (nn.Module): Activation layer.
            use_abs_pos (bool): If True, use absolute positional embeddings.
            window_size (int): Window size for local attention blocks.
            window_block_indexes (list): Indexes for blocks using local attention.
                Local window attention allows more efficient computation, and can be
                coupled with standard global attention. E.g., [0, 2] indicates the
                first and the third blocks will use local window attention, while
                other block use standard attention.

        Feel free to modify the default parameters here.
        """
        super(SimpleViT, self).__init__()
        _check(img_size % patch_size == 0, f"img_size ({img_size}) must be a multiple of patch_size ({patch_size})")
        self.img_size = img_size

        if use_abs_pos:
            # Initialize absolute positional embedding with image size
            # The embedding is learned from data
            self.pos_embed = nn.Parameter(
                torch.zeros(
                    1, img_size // patch_size, img_size // patch_size, embed_dim
                )
            )
        else:
            self.pos_embed = None

        # patch embedding layer
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )

        # Transformer blocks with the stochastic depth decay rule, then the head
        self.blocks = _vit_blocks(depth, drop_path_rate, window_size, window_block_indexes, dim=embed_dim,
                                  num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                  norm_layer=norm_layer, act_layer=act_layer)
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)

        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def no_weight_decay(self):
        """Parameter names to keep out of weight decay."""
        return {"pos_embed"}

    def forward(self, x):
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"SimpleViT needs (B, C, {self.img_size}, {self.img_size}) images, got {tuple(x.shape)}")
        x = self.patch_embed(x)  # (B, h, w, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x.mean(dim=(1, 2)))  # (B, C)
        return self.head(x)


class ImprovedViT(nn.Module):
    """A hybrid ViT for 128x128 scenes trained from scratch on ~100K images.

    Each choice is a known remedy for ViTs on small data: a convolutional stem (Xiao et al. 2021;
    three stride-2 3x3 conv + BN + ReLU and a 1x1 projection) instead of the 16x16 patchify, for
    locality and stable training; stride 8, so 256 tokens of 8x8 pixels (SimpleViT: 64); 12 blocks
    at DeiT-Tiny width (192, 3 heads); 8x8-token window attention in most blocks, global in blocks
    2, 5, 8, 11 (ViTDet); fixed 2D sin-cos positions (Beyer et al. 2022); stochastic depth up to
    0.1, average pooling, LayerNorm, linear head, the course's SimpleViT init. Its attention opts in
    to PyTorch's fused kernel (Attention.fused; the graded SimpleViT runs the formula). Defaults:
    5.78M parameters, 3.36 forward GFLOPs per image. Its training recipe (warmup, label smoothing, AdamW without
    decay on 1-D parameters) lives in main.py.

    Args:
        img_size: side of the square input; a multiple of 2 ** len(stem_channels).
        num_classes, in_chans: output logits and input channels.
        stem_channels: output channels of the stride-2 conv stages of the stem.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: Transformer width (a multiple of 4 and of
            num_heads), blocks, heads, MLP ratio, qkv bias.
        drop_path_rate: stochastic depth of the last block; rates rise linearly from 0.
        norm_layer, act_layer: normalization and activation classes of the blocks.
        window_size, window_block_indexes: window side (tokens), indexes of the window-attention blocks.
    Input (B, in_chans, img_size, img_size) normalized images -> (B, num_classes) logits.
    """

    def __init__(self, img_size=128, num_classes=100, in_chans=3, stem_channels=(64, 128, 256),
                 embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1,
                 norm_layer=nn.LayerNorm, act_layer=nn.GELU, window_size=8,
                 window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10)):
        super().__init__()
        self.img_size = img_size
        self.stem = ConvStem(in_chans, embed_dim, channels=stem_channels)
        _check(img_size % self.stem.stride == 0, f"img_size ({img_size}) must be a multiple of the stem stride "
                                                 f"({self.stem.stride})")
        grid = img_size // self.stem.stride
        self.register_buffer("pos_embed", sincos_pos_embed_2d(grid, grid, embed_dim)[None],
                             persistent=False)  # (1, h, w, C)
        self.blocks = _vit_blocks(depth, drop_path_rate, window_size, window_block_indexes, dim=embed_dim,
                                  num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                  norm_layer=norm_layer, act_layer=act_layer)
        for blk in self.blocks:
            blk.attn.fused = True  # F.scaled_dot_product_attention: faster (results/attention_benchmark.md)
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(self._init_weights)

    _init_weights = SimpleViT._init_weights  # the course's initialization

    def forward(self, x):
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ImprovedViT needs (B, C, {self.img_size}, {self.img_size}) images, got {tuple(x.shape)}")
        x = self.stem(x) + self.pos_embed  # (B, h, w, C)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x.mean(dim=(1, 2)))  # (B, C)
        return self.head(x)


default_vit_model = ImprovedViT


################################################################################
# Data: train and validation transforms
################################################################################


# Our custom_transforms.py adds RandomWarpCrop, FastRandomColor and ToUint8Tensor; the course's has
# none of them. Looked up by name, so that this file also runs beside the course's helpers, with
# the course's classes.
_WARP_CROP = getattr(transforms, "RandomWarpCrop", None)
_FAST_COLOR = getattr(transforms, "FastRandomColor", None)
_TO_UINT8 = getattr(transforms, "ToUint8Tensor", None)


def _to_output(normalize):
    """The last steps: normalized float (3, H, W), or with ``normalize`` False the uint8 (3, H, W)
    tensor that main.py normalizes on the device (float in [0, 1] with the course's helpers)."""
    if normalize:
        return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return [_TO_UINT8() if _TO_UINT8 is not None else transforms.ToTensor()]


# define data augmentation used for training, you can tweak things if you want
def get_train_transforms(normalize=True, single_warp=None):
    """Training augmentation: HWC uint8 RGB image -> (3, 128, 128) tensor, normalized with the
    ImageNet statistics (float, values in about [-2.2, 2.7]), or uint8 in [0, 255] when
    ``normalize`` is False.

    The course's chain (Scale(144), flip, RandomColor(0.15), RandomRotate(15), RandomSizedCrop(128))
    runs with the course's helpers, and with ``single_warp`` False. With our helpers (``single_warp``
    None or True) the geometric part is one affine warp, RandomWarpCrop: a crop of 25-100% of the
    image area (aspect 3/4 to 4/3), a rotation of up to 15 degrees without border pixels, the resize
    to 128 and a horizontal flip in one resampling pass; then the course's colour gains of
    1 +- 0.15 per channel, by FastRandomColor (one cv2.transform instead of the course's cv2.LUT).
    """
    if single_warp and _WARP_CROP is None:
        raise ValueError("single_warp=True needs our custom_transforms.py (RandomWarpCrop)")
    train_transforms = []
    if _WARP_CROP is not None and single_warp is not False:
        train_transforms.append(_WARP_CROP(128, degree_range=15.0))
        train_transforms.append(_FAST_COLOR(0.15))
    else:
        train_transforms.append(transforms.Scale(144))
        train_transforms.append(transforms.RandomHorizontalFlip())
        train_transforms.append(transforms.RandomColor(0.15))
        train_transforms.append(transforms.RandomRotate(15))
        train_transforms.append(transforms.RandomSizedCrop(128))
    train_transforms += _to_output(normalize)
    return transforms.Compose(train_transforms)


# define data augmentation used for validation, you can tweak things if you want
def get_val_transforms(normalize=True):
    """Validation transform: resize the short side to 160, always bilinear (deterministic), and
    centre-crop 128 -> (3, 128, 128) tensor, normalized like training (uint8 when ``normalize`` is
    False). 160, not the course's 144: training crops 25-100% of the image area and resizes the crop
    to 128, which shows objects magnified by a median 1.45 (RandomWarpCrop; 1.48 in the course's
    chain), and 160 / 128 = 1.25 is nearer that than 144 / 128 = 1.125 (train and test should show
    objects at one size: Touvron et al., "Fixing the train-test resolution discrepancy", 2019;
    tests/test_transforms.py measures it). The course's Scale(144) also draws one of three
    interpolations per image, so its validation accuracy would vary from run to run.
    """
    val_transforms = []
    val_transforms.append(transforms.Scale(160, interpolations=None))
    val_transforms.append(transforms.CenterCrop(128))
    val_transforms += _to_output(normalize)
    return transforms.Compose(val_transforms)


################################################################################
# Part III: adversarial samples
################################################################################


class PGDAttack:
    """L-inf PGD towards the least-confident label (the iterative least-likely-class method of Kurakin
    et al., "Adversarial Machine Learning at Scale", ICLR 2017). ``epsilon`` (the radius) and ``step_size``
    are in input units, images normalized with ``mean`` and ``std`` (ImageNet std: 0.1 is about 6 of 255
    levels); channel c of a valid input lies in [(0 - mean[c]) / std[c], (1 - mean[c]) / std[c]].
    ``loss_fn(logits (B, K), target (B,) int64)`` returns a scalar (e.g. nn.CrossEntropyLoss()) or (B,)
    losses. ``random_start``: start from a uniform random point of the ball (off, as in the starter).
    """

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1, random_start=False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        _check(isinstance(num_steps, int) and num_steps >= 0, f"num_steps must be an int >= 0, got {num_steps!r}")
        _check(0 < step_size < math.inf and 0 <= epsilon < math.inf,
               f"step_size must be finite and > 0, epsilon finite and >= 0, got {step_size!r}, {epsilon!r}")
        _check(len(mean) == len(std) and min(std) > 0, f"mean, std: one per channel, std > 0, got {mean}, {std}")
        self.loss_fn, self.num_steps, self.step_size, self.epsilon = loss_fn, num_steps, step_size, epsilon
        self.random_start, self.mean, self.std = random_start, tuple(mean), tuple(std)
        self._bounds = {}  # (device, dtype) -> (low, high) of the valid range, each (1, C, 1, 1); see _valid_range

    def perturb(self, model, input):
        """Adversarial version of normalized images ``input`` (B, C, H, W) for ``model`` (nn.Module, -> (B, K)
        logits): ``num_steps`` steps x <- x - step_size * sign(grad_x loss_fn(model(x), target)) towards the
        label least likely on ``input``, each projected onto the ``epsilon`` ball around it and the valid range.
        The model runs in eval mode, in float32 without autocast, its parameters' requires_grad off; its mode
        and flags come back, its ``.grad`` untouched. Returns (B, C, H, W) of the input's dtype, without graph.
        Raises ValueError for an input outside the valid range (see :meth:`_valid_range`).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("PGDAttack.perturb needs autograd: call it outside torch.inference_mode()")
        low, high = self._valid_range(input)  # (1, C, 1, 1) each, float32 (or float64)
        x0 = input.detach().to(low.dtype)  # fp16 / bf16 -> float32
        ball_low, ball_high = torch.max(x0 - self.epsilon, low), torch.min(x0 + self.epsilon, high)  # (B, C, H, W)
        was_training, params = model.training, [p for p in model.parameters() if p.requires_grad]
        model.eval().requires_grad_(False)  # no BatchNorm update, no dropout, no adversarial hook; no weight grads
        try:
            # fp32 with autocast off: under fp16 autocast the input gradient underflows to 0 (no step)
            with torch.enable_grad(), torch.autocast(x0.device.type, enabled=False):
                target, x = None, x0.clone()
                if self.random_start:
                    with torch.no_grad():
                        target = model(x0).argmin(dim=1)  # (B,) least-confident label of the clean input
                    x = torch.clamp(x + torch.empty_like(x).uniform_(-self.epsilon, self.epsilon), ball_low, ball_high)
                for _ in range(self.num_steps):
                    x.requires_grad_(True)
                    logits = model(x)  # (B, K)
                    if target is None:  # x is the clean input: this forward also gives step 1's gradient
                        target = logits.detach().argmin(dim=1)  # (B,)
                    loss = self.loss_fn(logits, target).sum()  # sum: per-sample losses work too; sign() drops the scale
                    grad, = torch.autograd.grad(loss, x)  # the input's gradient only; no graph kept
                    x = torch.clamp(x.detach() - self.step_size * grad.sign(), ball_low, ball_high)
        finally:
            model.train(was_training)
            for p in params:
                p.requires_grad_(True)
        return x.to(input.dtype)  # no graph: every step starts from a detached x

    def _valid_range(self, input):
        """Per-channel bounds (1, C, 1, 1) of images in [0, 1] normalized with ``mean`` and ``std``, on the input's
        device in float32 (float64 for float64). Raises ValueError unless ``input`` is a (B, C, H, W) floating batch;
        the first call on each device and dtype also checks that it lies within them, then keeps the bounds. Later
        calls reuse them without a check: reading its result is a host sync, which adversarial training would pay
        in every iteration, as it would a copy of the bounds to the device."""
        _check(input.dim() == 4 and input.is_floating_point() and input.shape[1] == len(self.mean),
               f"input must be a (B, {len(self.mean)}, H, W) floating tensor, got {tuple(input.shape)} {input.dtype}")
        key = (input.device, torch.promote_types(input.dtype, torch.float32))
        if key in self._bounds:
            return self._bounds[key]
        bounds = [[(v - m) / s for m, s in zip(self.mean, self.std)] for v in (0.0, 1.0)]  # (2, C): pixels 0 and 1
        low, high = torch.tensor(bounds, dtype=key[1]).to(input.device).view(2, 1, -1, 1, 1)  # (1, C, 1, 1) each
        if not input.numel():  # an empty batch: nothing to check, nothing kept
            return low, high
        tol = max(1e-3, 8 * torch.finfo(input.dtype).eps)  # rounding of a normalized fp16 / bf16 input
        if ((input < low - tol) | (input > high + tol)).any():
            raise ValueError(f"input in [{input.min().item():.3f}, {input.max().item():.3f}] lies outside the valid "
                             f"range {low.flatten().tolist()} to {high.flatten().tolist()} per channel: not [0, 1] "
                             f"images normalized with mean={self.mean}, std={self.std}")
        self._bounds[key] = low, high
        return low, high


default_attack = PGDAttack


def vis_grid(input, n_rows=10):
    """
    Given a batch of image X (torch tensor), compose a mosaic for visualziation.

    Args:
      input: (torch tensor) input image of size N * C * H * W
      n_rows: (int) number of images per row

    Outputs:
      output: (torch tensor) visualizations of size 3 * HH * WW
    """
    # concat all images into a big picture
    output_imgs = make_grid(input.cpu(), nrow=n_rows, normalize=True)
    return output_imgs

default_visfunction = vis_grid
