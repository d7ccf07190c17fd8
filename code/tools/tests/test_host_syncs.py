"""main.py's loops queue their work without waiting for the GPU: no host sync per iteration
outside the print interval; cuDNN autotunes for training and is deterministic for -e / -a.

On the CPU nothing blocks, so the CPU tests count the torch calls that would block the host on
a GPU (a TorchFunctionMode sees every one) and check that an epoch of 6 iterations makes no more
of them than one of 2. The CUDA tests (run by gpu_check.sh) turn torch's sync debug mode to
"error" for the iterations between the first and the last."""
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import main as driver
from student_code import IMAGENET_MEAN, IMAGENET_STD, SimpleNet
from utils import LinearWarmupCosineAnnealingLR

# reading a tensor's values, or making a (device) tensor from host values
HOST_SYNCS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu", "nonzero",
              "tensor", "as_tensor", "new_tensor"}


MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)


class HostSyncCounter(TorchFunctionMode):
    """Records the name of every torch call in HOST_SYNCS made while it is active."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNCS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def tiny_bn_net(num_classes=4):
    """conv-BN-ReLU, global pool, linear: (B, 3, H, W) -> (B, num_classes)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


def adversarial_net(num_classes=4):
    """The starter's SimpleNet with adversarial training on (half of every batch: 2-step PGD samples)."""
    model = SimpleNet(num_classes=num_classes)
    model.enable_adversarial_training(0.5, num_steps=2, epsilon=0.1)
    return model


def batches(num, pin=False):
    """``num`` (images (4, 3, 16, 16), labels (4,)) batches as a DataLoader yields them: normalized
    images of pixels in [0, 1] (PGD's valid range)."""
    g = torch.Generator().manual_seed(num)
    out = [((torch.rand(4, 3, 16, 16, generator=g) - MEAN) / STD, torch.randint(0, 4, (4,), generator=g))
           for _ in range(num)]
    return [(x.pin_memory(), y.pin_memory()) for x, y in out] if pin else out


def loop_args(*extra):
    return driver.get_args_parser().parse_args(["unused", "-p", "1000", *extra])


def train_epoch(loader, device, use_ema, clip_grad, args, make_model=tiny_bn_net):
    torch.manual_seed(0)
    model = make_model().to(device)
    optimizer = driver.build_optimizer(model, args, "cnn")
    scheduler = LinearWarmupCosineAnnealingLR(optimizer, 2, 20)
    scaler = driver.make_grad_scaler(device, driver.autocast_dtype(device, args))
    ema = driver.ModelEma(model, 0.9) if use_ema else None
    return driver.train_one_epoch(loader, model, nn.CrossEntropyLoss(), optimizer, scheduler, scaler, 0, device,
                                  args, None, False, clip_grad, None, ema)


def count_syncs(run):
    with HostSyncCounter() as counter:
        run()
    return counter.calls


@pytest.mark.parametrize("use_ema, clip_grad", [(False, 0.0), (True, 1.0)])
def test_training_iterations_do_not_sync(use_ema, clip_grad):
    cpu, args = torch.device("cpu"), loop_args()
    short, long = (count_syncs(lambda n=n: train_epoch(batches(n), cpu, use_ema, clip_grad, args)) for n in (2, 6))
    assert short == long, f"per-iteration host syncs: {sorted(set(long) - set(short)) or long}"
    assert len(long) <= 3, long  # the print at the last iteration and the epoch's result


def test_adversarial_training_iterations_do_not_sync():
    """PGD inside forward: its valid range is made and checked once (the first iteration), not per call."""
    cpu, args = torch.device("cpu"), loop_args()
    short, long = (count_syncs(lambda n=n: train_epoch(batches(n), cpu, False, 0.0, args, adversarial_net))
                   for n in (2, 6))
    assert short == long, f"per-iteration host syncs: {sorted(set(long) - set(short)) or long}"
    assert len(long) <= 5, long  # the range check, the print at the last iteration and the epoch's result


def test_validation_iterations_do_not_sync():
    cpu, args = torch.device("cpu"), loop_args()
    model = tiny_bn_net()
    short, long = (count_syncs(lambda n=n: driver.validate(batches(n), model, nn.CrossEntropyLoss(), cpu, args,
                                                            False)) for n in (2, 6))
    assert short == long, f"per-iteration host syncs: {long}"


def test_print_interval_still_reads_the_numbers(capsys):
    cpu = torch.device("cpu")
    calls = count_syncs(lambda: train_epoch(batches(6), cpu, False, 0.0, loop_args("-p", "2")))
    assert calls.count("tolist") >= 3 and capsys.readouterr().out.count("Epoch: [1]") == 3


@pytest.mark.parametrize("flags, benchmark, deterministic", [
    ([], True, False), (["-e", "--resume", "x"], False, True), (["-a", "--resume", "x"], False, True)])
def test_cudnn_flags(demo_data, monkeypatch, flags, benchmark, deterministic):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not benchmark)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", not deterministic)
    seen = []

    def record(*a):
        seen.append((torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic))

    monkeypatch.setattr(driver, "train", record)
    monkeypatch.setattr(driver, "evaluate", record)
    driver.main(driver.get_args_parser().parse_args([demo_data, *flags]))
    assert seen == [(benchmark, deterministic)]


class SyncGuarded:
    """The batches, with CUDA host syncs raising in the iterations between the first (warm-up,
    cuDNN autotuning) and the last (which prints)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        try:
            for i, item in enumerate(self.items):
                torch.cuda.set_sync_debug_mode("error" if 0 < i < len(self.items) - 1 else "default")
                yield item
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["main.py's dtype", "--no-amp"])
@pytest.mark.parametrize("use_ema, clip_grad", [(False, 0.0), (True, 1.0)])
def test_cuda_training_iterations_do_not_sync(amp, use_ema, clip_grad):
    """In the autocast dtype main.py picks for this GPU (fp16 with its GradScaler below compute capability 8.0,
    bf16 from 8.0), and in float32."""
    device = torch.device("cuda", torch.cuda.current_device())
    args = loop_args(*[amp] * (amp == "--no-amp"))
    loss, top1, *_ = train_epoch(SyncGuarded(batches(5, pin=True)), device, use_ema, clip_grad, args)
    assert loss > 0 and 0 <= top1 <= 100


@pytest.mark.cuda
def test_cuda_adversarial_training_iterations_do_not_sync():
    """--adv-train: PGD inside forward, in main.py's autocast dtype for this GPU."""
    device = torch.device("cuda", torch.cuda.current_device())
    loss, top1, *_ = train_epoch(SyncGuarded(batches(5, pin=True)), device, False, 0.0, loop_args(),
                                   adversarial_net)
    assert loss > 0 and 0 <= top1 <= 100


@pytest.mark.cuda
def test_cuda_validation_iterations_do_not_sync():
    device = torch.device("cuda", torch.cuda.current_device())
    model = tiny_bn_net().to(device)
    result = driver.validate(SyncGuarded(batches(5, pin=True)), model, nn.CrossEntropyLoss(), device,
                             loop_args(), False)
    assert result["loss"] > 0 and 0 <= result["top1"] <= 100
