"""ImageNet-pretrained ResNet18 for MiniPlaces fine-tuning (``--use-resnet18``).

The weights are torchvision's ``ResNet18_Weights.IMAGENET1K_V1``. They come from,
in order: a local state dict passed as ``weights_path`` (``--resnet18-weights PATH``),
the torch hub cache (``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth``), or
a download into that cache. Every failure (offline, missing, corrupt or mismatched
file) raises :class:`PretrainedWeightsError` with a message that names the file and
says how to provide it.

The data pipeline normalizes with the ImageNet mean/std, the statistics these
weights were trained with, so the pretrained stem sees the inputs it expects.
"""
import os

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

RESNET18_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
WEIGHTS_FLAG = "--resnet18-weights"
HEAD_PREFIX = "fc."


class PretrainedWeightsError(RuntimeError):
    """The ImageNet weights cannot be downloaded, read, or do not fit ResNet18."""


def resnet18_cache_path():
    """Where torch hub keeps (and looks for) the ImageNet ResNet18 weights file."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(RESNET18_WEIGHTS.url))


def _how_to_provide():
    return (f"Download {RESNET18_WEIGHTS.url} on a machine with internet access and either copy it "
            f"to {resnet18_cache_path()} (the torch hub cache; replace a corrupt file there) or pass it "
            f"with {WEIGHTS_FLAG} PATH.")


def load_resnet18_state_dict(path):
    """Load and check a local torchvision ResNet18 state dict.

    Every backbone tensor (all keys but ``fc.*``) must be present with the shape of
    torchvision's resnet18; the ``fc.*`` entries, if any, are dropped because the
    classifier is replaced.

    Args:
        path: a file written by ``torch.save(resnet18().state_dict(), path)``, e.g.
            the torchvision download ``resnet18-f37072fd.pth``.
    Returns:
        dict name -> tensor of the backbone (fc excluded), on the CPU.
    Raises:
        PretrainedWeightsError: naming ``path``, when the file is missing, not a
            state dict, or its keys or shapes do not match ResNet18.
    """
    if not os.path.isfile(path):
        raise PretrainedWeightsError(f"ResNet18 weights file {path} does not exist. {_how_to_provide()}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file raises any type: UnpicklingError, IndexError, EOFError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
        raise PretrainedWeightsError(
            f"cannot read ResNet18 weights file {path} as a PyTorch state dict "
            f"({type(exc).__name__}: {reason}). {_how_to_provide()}") from exc
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        held = ("a dict with non-tensor values (a training checkpoint?)" if isinstance(state_dict, dict)
                else f"a {type(state_dict).__name__}")
        raise PretrainedWeightsError(
            f"{path} is not a state dict (a dict of tensors), it holds {held}. "
            f"Save one with torch.save(model.state_dict(), path).")
    with torch.device("meta"):
        reference = resnet18()
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith(HEAD_PREFIX)}
    backbone = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIX)}
    missing = sorted(expected.keys() - backbone.keys())
    unexpected = sorted(backbone.keys() - expected.keys())
    wrong_shape = [f"{k} {tuple(backbone[k].shape)} (expected {tuple(shape)})"
                   for k, shape in expected.items() if k in backbone and backbone[k].shape != shape]
    if missing or unexpected or wrong_shape:
        raise PretrainedWeightsError(
            f"{path} is not a torchvision ResNet18 state dict: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}, wrong shapes {wrong_shape[:5]} (first 5 of each). "
            f"{_how_to_provide()}")
    return backbone


def _imagenet_state_dict():
    path = resnet18_cache_path()
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hash_prefix = torch.hub.HASH_REGEX.search(os.path.basename(path)).group(1)
        try:
            torch.hub.download_url_to_file(RESNET18_WEIGHTS.url, path, hash_prefix=hash_prefix)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; RuntimeError: hash mismatch
            raise PretrainedWeightsError(
                f"cannot download the ImageNet ResNet18 weights ({exc}). {_how_to_provide()}") from exc
    return load_resnet18_state_dict(path)


def build_resnet18(num_classes=100, weights_path=None, pretrained=True):
    """torchvision ResNet18 with a new ``num_classes``-way linear head.

    Args:
        num_classes: number of output logits (> 0).
        weights_path: local ImageNet state dict to load (``--resnet18-weights PATH``);
            None fetches the torchvision weights through the torch hub cache.
        pretrained: False builds a randomly initialized network (to restore a
            fine-tuned checkpoint, or to benchmark) and needs ``weights_path=None``.
    Returns:
        nn.Module mapping (B, 3, H, W) ImageNet-normalized images to (B, num_classes)
        logits; the backbone is pretrained if asked, ``fc`` is freshly initialized.
    Raises:
        ValueError: bad ``num_classes``, or ``weights_path`` with ``pretrained=False``.
        PretrainedWeightsError: the weights cannot be obtained or do not fit.
    """
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if weights_path is not None and not pretrained:
        raise ValueError(f"weights_path={weights_path!r} was given with pretrained=False")
    model = resnet18()
    in_features = model.fc.in_features
    if pretrained:
        backbone = (_imagenet_state_dict() if weights_path is None
                    else load_resnet18_state_dict(weights_path))
        model.fc = nn.Identity()  # so the backbone keys match the model exactly
        model.load_state_dict(backbone, strict=True)
    model.fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(model.fc.weight, std=0.01)
    nn.init.zeros_(model.fc.bias)
    return model


def finetune_param_groups(model, lr, backbone_lr_scale):
    """Optimizer parameter groups for fine-tuning: new head at ``lr``, backbone at
    ``lr * backbone_lr_scale``.

    The head starts random and needs full-size steps; the pretrained backbone
    already computes good features, and the large steps a random head needs
    (SGD lr 0.1 in the default recipe) overwrite them early in training.

    1-D parameters (BatchNorm scales/shifts and biases) get ``weight_decay=0``:
    BN makes the preceding conv scale-invariant, so decaying a BN scale only
    shrinks activations, and biases do not add capacity that L2 should limit.
    The other groups carry no ``weight_decay`` key, so the optimizer's default
    applies. Schedulers scale every group's lr by the same factor, which keeps
    the backbone/head ratio for the whole run.

    Args:
        model: a network whose classifier is ``model.fc`` (e.g. :func:`build_resnet18`).
        lr: head learning rate (> 0).
        backbone_lr_scale: backbone lr / head lr, in [0, 1]; 0 leaves the backbone
            weights unchanged (a linear probe, BN statistics still update), 1 is plain
            fine-tuning.
    Returns:
        list of up to 4 dicts {"params", "lr"[, "weight_decay"]}, non-empty groups
        only, covering every parameter with ``requires_grad`` exactly once.
    Raises:
        ValueError: bad ``lr``/``backbone_lr_scale``, or a model without ``fc``.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0 <= backbone_lr_scale <= 1:
        raise ValueError(f"backbone_lr_scale must be in [0, 1], got {backbone_lr_scale!r}")
    if not isinstance(getattr(model, "fc", None), nn.Module):
        raise ValueError(f"{type(model).__name__} has no `fc` classifier to tell head from backbone")
    groups = {(is_head, decay): [] for is_head in (False, True) for decay in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[(name.startswith(HEAD_PREFIX), param.ndim > 1)].append(param)
    param_groups = []
    for (is_head, decay), params in groups.items():
        if params:
            group = {"params": params, "lr": lr if is_head else lr * backbone_lr_scale}
            if not decay:
                group["weight_decay"] = 0.0
            param_groups.append(group)
    return param_groups
