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


class CustomConv2DFunction(Function):
    """2D convolution as an autograd Function (placeholder until Part I.1 lands)."""

    @staticmethod
    def forward(ctx, input_feats, weight, bias, stride=1, padding=0):
        raise NotImplementedError("CustomConv2DFunction.forward is not implemented yet")

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError("CustomConv2DFunction.backward is not implemented yet")


custom_conv2d = CustomConv2DFunction.apply


class CustomConv2d(nn.Module):
    """Drop-in for nn.Conv2d (square kernels, dilation 1, groups 1) that runs
    :class:`CustomConv2DFunction`. Input (N, Ci, H, W) -> output (N, Co, Ho, Wo)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        assert isinstance(kernel_size, int), "We only support squared filters"
        assert isinstance(stride, int), "We only support equal stride"
        assert isinstance(padding, int), "We only support equal padding"
        assert dilation == 1 and groups == 1, "We only support dilation 1 and groups 1"
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
        return custom_conv2d(input, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


################################################################################
# Part I.2: the starter's SimpleNet
################################################################################


class AdversarialTrainingMixin:
    """Adversarial training inside ``forward`` for an nn.Module classifier (off by default).

    Adopt it with one line in the class statement, ``class Net(AdversarialTrainingMixin,
    nn.Module)``, and one call at the top of ``forward``: ``x = self.adversarial_mix(x)``.
    Once ``enable_adversarial_training`` was called, every training-mode forward replaces the
    first ``round(adv_ratio * B)`` (halves rounded up) samples of the batch (the loader shuffles, so they are a random
    subset) by PGD samples built against the current weights; labels stay aligned.

    ``forward`` has no labels, so the attack is the course's PGD towards the least-confident
    label (:class:`PGDAttack`), the "iterative least-likely class" samples that Kurakin et al.
    (ICLR 2017) trained on: it needs no label, it does not leak the true label into the sample,
    and it is the attack that ``main.py -a`` evaluates. Pushing away from the model's own clean
    prediction instead would, on every misclassified sample, push away from a wrong label (often
    towards the true one) and so make the sample easier rather than harder.

    Safety: :meth:`PGDAttack.perturb` runs the model in eval mode, and ``adversarial_mix`` passes
    eval-mode inputs through, so the attack's forwards never recurse into the attack, never update
    BatchNorm running statistics and never draw dropout masks; the training forward that follows
    sees the mixed batch once. The samples are detached, so the weights get no gradient through
    the attack, and the attack leaves no ``.grad`` on the parameters.

    Cost: each training step adds about ``adv_ratio * num_steps`` forward+backward passes
    (backward to the input only) of the model on the whole batch; hence the few default steps.
    """

    adv_attack = None
    adv_ratio = 0.0

    def enable_adversarial_training(self, adv_ratio=0.5, num_steps=3, epsilon=0.1, step_size=None,
                                    random_start=False):
        """Train on PGD samples from now on.

        Args:
            adv_ratio: fraction in (0, 1] of every training batch replaced by PGD samples.
            num_steps: PGD steps per sample (int >= 1).
            epsilon: L-inf radius in normalized input units (0.1 is about 6 of 255 levels).
            step_size: per-step change; None picks 2.5 * epsilon / num_steps so that the steps
                can reach the border of the ball (Madry et al., ICLR 2018).
            random_start: start each attack from a random point of the ball.
        Raises:
            ValueError: ``adv_ratio`` outside (0, 1] or ``num_steps`` < 1 (and PGDAttack's checks).
        """
        if not 0.0 < adv_ratio <= 1.0:
            raise ValueError(f"adv_ratio must lie in (0, 1], got {adv_ratio!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1 for adversarial training, got {num_steps!r}")
        if step_size is None:
            step_size = 2.5 * epsilon / num_steps
        self.adv_attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=num_steps, step_size=step_size,
                                    epsilon=epsilon, random_start=random_start)
        self.adv_ratio = float(adv_ratio)

    def disable_adversarial_training(self):
        """Back to clean training."""
        self.adv_attack = None
        self.adv_ratio = 0.0

    def adversarial_training_config(self):
        """The keyword arguments of ``enable_adversarial_training`` in force, or None when off
        (plain Python values, for checkpoints)."""
        if self.adv_attack is None:
            return None
        return {"adv_ratio": self.adv_ratio, "num_steps": self.adv_attack.num_steps,
                "epsilon": self.adv_attack.epsilon, "step_size": self.adv_attack.step_size,
                "random_start": self.adv_attack.random_start}

    def adversarial_mix(self, x):
        """(B, C, H, W) normalized batch -> the same batch with its first ``round(adv_ratio * B)``
        samples replaced by PGD samples in training mode; ``x`` itself otherwise."""
        if not self.training or self.adv_attack is None:
            return x
        num_adv = math.floor(self.adv_ratio * x.shape[0] + 0.5)
        if num_adv == 0:
            return x
        x_adv = self.adv_attack.perturb(self, x[:num_adv])  # (num_adv, C, H, W)
        return torch.cat([x_adv, x[num_adv:]])  # (B, C, H, W)


class SimpleNet(AdversarialTrainingMixin, nn.Module):
    """The starter's CNN: 7x7/2 stem, two bottlenecks with max-pooling, GAP, linear.

    Input (B, 3, H, W) normalized images; output (B, num_classes) logits.
    ``conv_op`` builds every convolution (nn.Conv2d or CustomConv2d).
    ``enable_adversarial_training`` (from :class:`AdversarialTrainingMixin`) switches on PGD
    samples in training; off by default.
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
        x = self.adversarial_mix(x)  # (B, 3, H, W): part PGD samples in adversarial training
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
    """L-inf projected gradient descent towards the least-confident label.

    ``perturb(model, input)`` picks, for every image, the label that the model finds least
    likely on the clean input, then takes ``num_steps`` steps
    ``x <- x - step_size * sign(grad_x loss_fn(model(x), target))`` that make that label more
    likely, each followed by a projection onto the L-inf ball of radius ``epsilon`` around the
    input intersected with the valid image range (the iterative least-likely-class method of
    Kurakin et al., "Adversarial Machine Learning at Scale", ICLR 2017).

    Units: ``epsilon`` and ``step_size`` are in the units of the model's input, i.e. of images
    normalized with ``mean`` and ``std``; with the ImageNet std, 0.1 is about 0.0225 of the [0, 1]
    pixel range (about 6 of 255 levels). Channel c of a valid input lies in
    [(0 - mean[c]) / std[c], (1 - mean[c]) / std[c]].

    Args:
        loss_fn: callable (logits (B, K), target (B,) int64) -> loss, either a scalar (mean or
            sum over the batch, e.g. nn.CrossEntropyLoss()) or (B,) per-sample losses.
        num_steps: int >= 0, number of sign-gradient steps.
        step_size: float > 0, change of every element per step.
        epsilon: float >= 0, radius of the L-inf ball around the input.
        random_start: start from a uniform random point of the ball instead of the input itself
            (off by default, as in the course's starter).
        mean, std: per-channel statistics that the inputs were normalized with.
    """

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1, random_start=False,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        if not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"mean and std need one entry per channel and std > 0, got mean={mean}, std={std}")
        self.loss_fn = loss_fn
        self.num_steps = num_steps
        self.step_size = step_size
        self.epsilon = epsilon
        self.random_start = random_start
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.low = torch.tensor([(0.0 - m) / s for m, s in zip(mean, std)], dtype=torch.float64)  # (C,)
        self.high = torch.tensor([(1.0 - m) / s for m, s in zip(mean, std)], dtype=torch.float64)  # (C,)

    def perturb(self, model, input):
        """Adversarial version of ``input`` for ``model``.

        Args:
            model: nn.Module mapping (B, C, H, W) to logits (B, K). It runs in eval mode while
                attacked and gets its mode back afterwards; the ``.grad`` of its parameters are
                left as they were.
            input: (B, C, H, W) floating tensor normalized with ``mean``/``std`` (every channel
                within its valid range). It is not modified.
        Returns:
            (B, C, H, W) detached tensor of the input's dtype and device, with
            ``|output - input| <= epsilon`` and every channel within its valid range.
        Raises:
            TypeError: ``model`` is not an nn.Module.
            ValueError: ``input`` is not a 4-D floating tensor with len(mean) channels, or lies
                outside the valid range (not normalized with ``mean``/``std``).
            RuntimeError: called inside torch.inference_mode(), where autograd cannot run.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("PGDAttack.perturb needs autograd: call it outside torch.inference_mode()")
        x0 = input.detach()
        low, high = self._check_range(x0)
        ball_low = torch.maximum(x0 - self.epsilon, low)  # (B, C, H, W)
        ball_high = torch.minimum(x0 + self.epsilon, high)  # (B, C, H, W)
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                return self._descend(model, x0, ball_low, ball_high)
        finally:
            model.train(was_training)

    def _check_range(self, x0):
        """Valid-range bounds (1, C, 1, 1) for ``x0``; raise if ``x0`` is no normalized batch."""
        if x0.dim() != 4 or not x0.is_floating_point() or x0.shape[1] != len(self.mean):
            raise ValueError(f"input must be a (B, {len(self.mean)}, H, W) floating tensor, "
                             f"got {tuple(x0.shape)} {x0.dtype}")
        low = self.low.to(device=x0.device, dtype=x0.dtype).view(1, -1, 1, 1)  # (1, C, 1, 1)
        high = self.high.to(device=x0.device, dtype=x0.dtype).view(1, -1, 1, 1)  # (1, C, 1, 1)
        tol = max(1e-3, 8 * torch.finfo(x0.dtype).eps)
        if x0.numel() and ((x0 < low - tol).any() or (x0 > high + tol).any()):
            raise ValueError(
                f"input has values in [{x0.min().item():.3f}, {x0.max().item():.3f}] outside the valid "
                f"range per channel, low={self.low.tolist()} high={self.high.tolist()}: it must be "
                f"normalized [0, 1] images with mean={self.mean}, std={self.std}")
        return low, high

    def _descend(self, model, x0, ball_low, ball_high):
        """The PGD loop (eval mode, grad enabled); returns the detached (B, C, H, W) result."""
        target = None
        x = x0.clone()
        if self.random_start:
            with torch.no_grad():
                target = model(x0).argmin(dim=1)  # (B,) least-confident label of the clean input
            x = torch.clamp(x + torch.empty_like(x).uniform_(-self.epsilon, self.epsilon), ball_low, ball_high)
        for _ in range(self.num_steps):
            x.requires_grad_(True)
            logits = model(x)  # (B, K)
            if target is None:
                # x is still the clean input: this forward also gives the gradient of step 1
                target = logits.detach().argmin(dim=1)  # (B,)
            loss = self.loss_fn(logits, target).sum()  # sum: per-sample losses work too; sign() drops the scale
            grad, = torch.autograd.grad(loss, x)
            x = torch.clamp(x.detach() - self.step_size * grad.sign(), ball_low, ball_high)
        return x.detach()


default_attack = PGDAttack


def denormalize(input, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Undo the input normalization: (B, C, H, W) normalized -> pixels in [0, 1] (clamped)."""
    if input.dim() != 4 or input.shape[1] != len(mean):
        raise ValueError(f"input must be (B, {len(mean)}, H, W), got {tuple(input.shape)}")
    mean = torch.as_tensor(mean, dtype=input.dtype, device=input.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    std = torch.as_tensor(std, dtype=input.dtype, device=input.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (input.detach() * std + mean).clamp_(0.0, 1.0)


def _check_n_rows(n_rows):
    """Raise unless ``n_rows`` (images per mosaic row) is an int >= 1."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows (images per row) must be an int >= 1, got {n_rows!r}")


def vis_grid(input, n_rows=10):
    """Mosaic of a normalized batch, de-normalized so that it looks like the photos.

    Args:
        input: (B, 3, H, W) images normalized with IMAGENET_MEAN / IMAGENET_STD.
        n_rows: images per row of the mosaic (torchvision's ``nrow``).
    Returns:
        (3, H', W') float tensor in [0, 1], ready for ``SummaryWriter.add_image``.
    """
    _check_n_rows(n_rows)
    return make_grid(denormalize(input), nrow=n_rows)


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
    _check_n_rows(n_rows)
    org, adv = denormalize(input), denormalize(adv_input)  # (B, 3, H, W) each
    diff = adv - org
    peak = diff.abs().max()
    diff = 0.5 + 0.5 * diff / peak if peak > 0 else torch.full_like(diff, 0.5)
    return make_grid(org, nrow=n_rows), make_grid(adv, nrow=n_rows), make_grid(diff, nrow=n_rows)


default_visfunction = vis_grid
