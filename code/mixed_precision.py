"""The autocast dtype that a CUDA device runs natively: one rule for main.py and bench_train.py."""
import torch

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bfloat16 tensor cores


def cuda_amp_dtype(device):
    """torch.bfloat16 on a GPU of compute capability >= 8.0 (Ampere and newer), torch.float16
    (to be used with a GradScaler) below. ``torch.cuda.is_bf16_supported()`` is no guide: it
    is also True on older GPUs, which only emulate bfloat16, slower than float32."""
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= BF16_MIN_CAPABILITY else torch.float16
