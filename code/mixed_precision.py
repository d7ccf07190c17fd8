"""The arithmetic of a run: the autocast dtype that a CUDA device runs natively (one rule for
main.py and tools/bench_train.py) and the name of the precision that convolutions and matrix
products actually use, read from PyTorch's backend flags (for every benchmark row and main.py)."""
import torch

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bfloat16 tensor cores


def cuda_amp_dtype(device):
    """torch.bfloat16 on a GPU of compute capability >= 8.0 (Ampere and newer), torch.float16
    (to be used with a GradScaler) below. ``torch.cuda.is_bf16_supported()`` is no guide: it
    is also True on older GPUs, which only emulate bfloat16, slower than float32."""
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else torch.float16


def precision_name(device, amp_dtype=None):
    """The precision of convolutions and matrix products on ``device``: "bf16" or "fp16" under
    autocast to ``amp_dtype``; otherwise "fp32", or on CUDA "tf32" where the backend flags let
    cuDNN convolutions (``torch.backends.cudnn.allow_tf32``, True by default) and cuBLAS matrix
    products (``torch.backends.cuda.matmul.allow_tf32``, False by default) round their inputs to
    TF32, e.g. "tf32 conv, fp32 matmul" with PyTorch's defaults. The CPU has no TF32."""
    if amp_dtype is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    if torch.device(device).type != "cuda":
        return "fp32"
    conv = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    matmul = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return conv if conv == matmul else f"{conv} conv, {matmul} matmul"


class Float32Flags:
    """Context manager: set cuDNN's and cuBLAS's TF32 flags (``tf32`` True or False) and restore
    them on exit, e.g. ``with Float32Flags(False):`` for true-fp32 convolutions and GEMMs."""

    def __init__(self, tf32):
        self.tf32 = tf32

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.tf32
        return self

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False
