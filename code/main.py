"""Train, evaluate and attack MiniPlaces scene classifiers.

    python main.py ../data                         # train the default CNN (default_cnn_model)
    python main.py ../data --arch simplenet        # the starter's SimpleNet
    python main.py ../data --use-custom-conv       # ... with the custom convolution
    python main.py ../data --use-vit --wd 0.05 --lr 0.01
    python main.py ../data --resume RUN/models/checkpoint.pth.tar   # continue a run as it was
    python main.py ../data -e --resume PATH        # evaluate a checkpoint (flip TTA)
    python main.py ../data -a -v --resume PATH     # PGD attack, images to TensorBoard

Runs on CUDA when torch can use the GPU (mixed precision, channels_last, pinned memory), on the
CPU on a machine without an NVIDIA GPU or with --device cpu; a GPU that torch cannot use stops it
(exit 2) with the command that installs the build that can. Every run writes TensorBoard logs and
checkpoints into a new folder under ../logs; ``tensorboard --logdir ../logs`` shows the curves. The
file reads in the order it runs: the command line, ``main``, ``train`` and ``evaluate``, then the
helpers of each phase.
"""
import argparse
import builtins
import contextlib
import copy
import datetime
import errno
import glob
import inspect
import io
import math
import os
import pickle
import random
import re
import resource
import shlex
import shutil
import sys
import threading
import time
import zipfile

import torch

TORCH_MIN = (2, 4)  # torch.amp.GradScaler(device) (2.3), fused SGD, v2.MixUp / CutMix; README: torch versions
if tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2]) < TORCH_MIN:
    print(f"error: main.py needs torch >= {'.'.join(map(str, TORCH_MIN))} (this is torch {torch.__version__}); "
          "see requirements.txt", file=sys.stderr)
    sys.exit(2)

import torch.distributed as dist  # noqa: E402  (after the version check, as everything below)
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Sampler  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

import student_code  # noqa: E402
from custom_blocks import param_groups_weight_decay  # noqa: E402
from cuda_build import gpu_problem, query_gpus  # noqa: E402
from custom_dataloader import GET_DATA_HINT, MiniPlacesLoader, collate_uint8  # noqa: E402
from decoded_cache import CacheError, CheckedImages, sigint_held, started, with_decoded_cache  # noqa: E402
from mixed_precision import cuda_amp_dtype, precision_name  # noqa: E402
from pretrained import PretrainedWeightsError, build_resnet18, finetune_param_groups  # noqa: E402
from student_code import (IMAGENET_MEAN, IMAGENET_STD, CustomConv2d, default_attack, default_cnn_model,  # noqa: E402
                          default_visfunction, default_vit_model, get_train_transforms, get_val_transforms)
from utils import AverageMeter, ImageReadError, LinearWarmupCosineAnnealingLR  # noqa: E402
from visualization import vis_adversarial  # noqa: E402

NUM_CLASSES = 100
DEMO_MARKER = "DEMO_DATASET.txt"  # the file tools/make_demo_data.py writes into a demo set (a test keeps them equal)
CHECKPOINT_KEYS = ("epoch", "model_arch", "model_config", "state_dict", "best_acc1", "optimizer",
                   "scheduler")
DEFAULT_LOG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "logs")
ARCH_CHOICES = ("cnn", "simplenet", "vit", "simplevit", "resnet18")
# Flags that define what a run computes: a resumed run keeps its checkpoint's and stops (exit 2)
# when the command line asks for others (--resnet18-weights too: a resumed run's weights come from
# its checkpoint). --epochs may grow: the schedule is re-planned. The other flags (workers, print
# frequency, the data and cache folders, --no-amp, ...) may change, each named in one line, and
# apply; --log-dir and --exp-name that name another place continue in a new run folder there.
RUN_DEFINING_FLAGS = ("batch_size", "lr", "warmup", "momentum", "weight_decay", "clip_grad", "seed",
                      "label_smoothing", "ema_decay", "mixup", "cutmix", "augment", "backbone_lr_scale",
                      "resnet18_weights")
RUN_FOLDER_FLAGS = ("log_dir", "exp_name")  # honoured by open_run, which says where the run goes on
MODEL_FLAGS = ("arch", "use_vit", "use_resnet18", "use_custom_conv", "adv_train", "adv_steps", "adv_eps")
NOT_RESUMED = ("resume", "evaluate", "attack", "start_epoch", "given", "rank", "world_size", "gpu", "device", "vis")
# Under torchrun the other ranks wait for rank 0's first build of the decoded cache in a gloo group of their own
# whose timeout fits the build: this many seconds per image, at least CACHE_WAIT_MIN_S. Decoding 20 images/s, far
# slower than any disk, still fits (MiniPlaces' 100K training images: 83 minutes); NCCL's 10-minute timeout
# stays on the training collectives, where a wait that long means a hang.
CACHE_WAIT_S_PER_IMAGE, CACHE_WAIT_MIN_S = 0.05, 1800


class UserError(Exception):
    """A problem with the user's input or data: printed as one line, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the last checkpoint and how to resume it."""


class LogWriteError(Exception):
    """A write into the log folder failed (a full disk, no permission, a read-only file system, a
    file where a folder must be): ``folder`` and the OSError ``cause``. The phase that wrote turns
    it into one line with a way forward (UserError)."""

    def __init__(self, folder, cause):
        super().__init__(f"{folder}: {cause}")
        self.folder = folder
        self.cause = cause


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that also records which flags the command line gave, as the sorted
    list ``args.given`` of their names (a resumed run takes the others from its checkpoint)."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extra = super().parse_known_args(args, namespace)
        unset = object()
        probe, _ = super().parse_known_args(args, argparse.Namespace(**{k: unset for k in vars(parsed)}))
        parsed.given = sorted(k for k, v in vars(probe).items() if v is not unset and k != "given")
        return parsed, extra


def usable_cores():
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def get_args_parser():
    """The starter's flags (names and defaults unchanged, but -j: at most the usable cores) plus ours."""
    parser = FlagParser(description="MiniPlaces scene recognition",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data_folder", metavar="DIR", help="dataset folder (train.txt, val.txt, images/)")
    parser.add_argument("-j", "--workers", default=min(4, usable_cores()), type=int,
                        help="data loading workers (the starter's 4, or fewer on fewer usable cores)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="folder of the decoded cache: each split decoded once into a uint8 file "
                             "that later epochs and runs memory-map (None: DIR/cache, next to the data)")
    parser.add_argument("--no-cache", action="store_true",
                        help="decode the JPEGs every epoch instead of using the decoded cache")
    parser.add_argument("--epochs", default=90, type=int, help="total epochs to run")
    parser.add_argument("--warmup", default=5, type=int, help="linear warmup epochs")
    parser.add_argument("--clip-grad", default=None, type=float,
                        help="gradient norm clip (None: 1.0 for ViTs, off for CNNs; 0: off)")
    parser.add_argument("--start-epoch", default=0, type=int,
                        help="epoch to start a new run at, counted from 0 (--resume takes the checkpoint's)")
    parser.add_argument("-b", "--batch-size", default=256, type=int, help="training batch size")
    parser.add_argument("--lr", "--learning-rate", default=0.1, type=float, dest="lr",
                        help="peak learning rate")
    parser.add_argument("--momentum", default=0.9, type=float, help="SGD momentum")
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay",
                        help="weight decay")
    parser.add_argument("-p", "--print-freq", default=10, type=int, help="print every N iterations")
    parser.add_argument("--resume", default="", type=str, metavar="PATH",
                        help="checkpoint to continue training from (with its run's flags), or to evaluate/attack")
    parser.add_argument("-e", "--evaluate", action="store_true",
                        help="evaluate the --resume checkpoint on val (horizontal-flip averaging)")
    parser.add_argument("-a", "--attack", action="store_true",
                        help="evaluate the --resume checkpoint under the PGD attack")
    parser.add_argument("-v", "--vis", action="store_true",
                        help="write input (and with -a adversarial) images to TensorBoard")
    parser.add_argument("--use-custom-conv", action="store_true", help="CNNs use CustomConv2d")
    parser.add_argument("--use-vit", action="store_true", help="train default_vit_model (= --arch vit)")
    parser.add_argument("--use-resnet18", action="store_true", help="fine-tune ImageNet ResNet18 (= --arch resnet18)")
    parser.add_argument("--gpu", default=0, type=int, help="CUDA device index (-1: the CPU, as --device cpu)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                        help="auto: the GPU when torch can use it, the CPU on a machine without an NVIDIA GPU, "
                             "and a stop (exit 2, with the fix) when the machine has one that torch cannot use; "
                             "cpu: the CPU in any case; cuda: the GPU or a stop")
    parser.add_argument("--arch", default=None, choices=ARCH_CHOICES,
                        help="cnn = student_code.default_cnn_model (None: cnn), simplenet, vit = "
                             "default_vit_model, simplevit, resnet18")
    parser.add_argument("--resnet18-weights", default=None, metavar="PATH",
                        help="local ImageNet ResNet18 state dict (offline use of --use-resnet18)")
    parser.add_argument("--backbone-lr-scale", default=0.1, type=float,
                        help="ResNet18 fine-tuning: the pretrained backbone learns at lr * this, the "
                             "new head at lr (large steps would wipe out the ImageNet features)")
    parser.add_argument("--seed", default=2024, type=int, help="seed of every random choice")
    parser.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA")
    parser.add_argument("--label-smoothing", default=0.0, type=float,
                        help="cross-entropy smoothing of the training loss (validation loss: none)")
    parser.add_argument("--ema-decay", default=0.0, type=float,
                        help="evaluate and save an exponential moving average of the weights (0: off)")
    parser.add_argument("--mixup", default=0.0, type=float, help="MixUp alpha (0: off)")
    parser.add_argument("--cutmix", default=0.0, type=float,
                        help="CutMix alpha (0: off; with --mixup each batch picks one)")
    parser.add_argument("--adv-train", default=0.0, type=float, metavar="RATIO",
                        help="adversarial training: this fraction of every batch becomes PGD samples "
                             "made inside forward (CNNs; 0: off)")
    parser.add_argument("--adv-steps", default=3, type=int, help="PGD steps of --adv-train")
    parser.add_argument("--adv-eps", default=0.1, type=float, help="PGD epsilon of --adv-train")
    parser.add_argument("--attack-eps", default=None, type=float,
                        help="-a: PGD epsilon in normalized units (None: PGDAttack's)")
    parser.add_argument("--attack-steps", default=None, type=int, help="-a: PGD steps (None: PGDAttack's)")
    parser.add_argument("--attack-step-size", default=None, type=float,
                        help="-a: PGD step size (None: PGDAttack's, scaled with --attack-eps)")
    parser.add_argument("--augment", default="warp", choices=("warp", "chain"),
                        help="training augmentation: warp = one affine warp per image (fast), chain = the "
                             "course's Scale / flip / colour / rotate / sized-crop chain (same ranges)")
    parser.add_argument("--val-batch-size", default=100, type=int, help="validation batch size")
    parser.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help="root folder of all runs")
    parser.add_argument("--exp-name", default="", help="run folder prefix (empty: the --arch name)")
    return parser


# flag -> (lowest, highest, whether the lowest is allowed); None: no bound
NUMERIC_FLAGS = {
    "workers": (0, None, True), "epochs": (1, None, True), "warmup": (0, None, True),
    "clip_grad": (0, None, True), "start_epoch": (0, None, True), "batch_size": (1, None, True),
    "lr": (0, None, False), "momentum": (0, 1, True), "weight_decay": (0, None, True),
    "print_freq": (1, None, True), "gpu": (-1, None, True), "backbone_lr_scale": (0, 1, True),
    "seed": (0, 2 ** 31 - 1, True), "label_smoothing": (0, 1, True), "ema_decay": (0, 1, True),
    "mixup": (0, None, True), "cutmix": (0, None, True), "adv_train": (0, 1, True), "adv_steps": (1, None, True),
    "adv_eps": (0, None, False), "attack_eps": (0, None, False), "attack_steps": (1, None, True),
    "attack_step_size": (0, None, False), "val_batch_size": (1, None, True),
}
OPEN_ABOVE = ("momentum", "label_smoothing", "ema_decay")  # upper bounds that are excluded
ATTACK_FLAGS = ("attack_eps", "attack_steps", "attack_step_size")  # -a only


def flag_name(dest):
    return "--" + {"weight_decay": "wd"}.get(dest, dest.replace("_", "-"))


def as_float32(value):
    """``value`` rounded to float32, the precision the model, the optimizer and the attack
    compute in (1e308 becomes inf, 1e-50 becomes 0)."""
    return torch.tensor(value, dtype=torch.float64).to(torch.float32).item()


def check_args(args):
    """Reject flag values and combinations that cannot work (UserError: one line, exit 2). A
    float flag must obey its range also as the float32 that the code computes with."""
    for name, (low, high, low_ok) in NUMERIC_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        checked = as_float32(value) if isinstance(value, float) else value
        too_low = checked < low if low_ok else checked <= low
        too_high = high is not None and (checked >= high if name in OPEN_ABOVE else checked > high)
        if not math.isfinite(checked) or too_low or too_high:
            low_text = f"{'>=' if low_ok else '>'} {low}"
            rule = low_text if high is None else f"{low_text} and {'<' if name in OPEN_ABOVE else '<='} {high}"
            if math.isfinite(value) and checked != value:  # in range as a float64 only
                raise UserError(f"{flag_name(name)} must be {rule} and finite as a float32 (the precision it "
                                f"is used in), got {value} ({checked:g} as a float32)")
            raise UserError(f"{flag_name(name)} must be {rule}, got {value}")
    if not args.attack and set(ATTACK_FLAGS) & set(args.given):
        given = [flag_name(name) for name in ATTACK_FLAGS if name in args.given]
        raise UserError(f"{', '.join(given)} set the PGD attack of -a (python main.py DIR -a --resume CHECKPOINT "
                        f"{' '.join(given)} ...); {'it does' if len(given) == 1 else 'they do'} nothing here")
    if args.evaluate and args.attack:
        raise UserError("-e and -a are separate runs: evaluate first, then attack")
    if args.start_epoch >= args.epochs:
        raise UserError(f"--start-epoch {args.start_epoch} leaves nothing of --epochs {args.epochs} to train")
    if args.resume and "start_epoch" in args.given:
        raise UserError("--start-epoch and --resume: a resumed run starts where its checkpoint stopped")
    if args.resnet18_weights and not args.use_resnet18 and args.arch != "resnet18":
        raise UserError("--resnet18-weights is for --use-resnet18")
    if args.gpu < 0 and args.device == "cuda":
        raise UserError("--gpu -1 asks for the CPU and --device cuda for a GPU; pick one")
    if args.no_cache and args.cache_dir:
        raise UserError("--cache-dir names the decoded cache's folder and --no-cache turns it off; pick one")


def cli(argv=None):
    """Command-line entry: one line and exit status 2 on bad input, 130 on Ctrl-C."""
    args = get_args_parser().parse_args(argv)
    threading.excepthook = quiet_writer_thread
    try:
        main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ImageReadError as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]  # last line: the worker's own message
        line = re.sub(r"^[\w.]*ImageReadError: ", "", lines[-1]) if lines else str(e)  # a worker's: the name first
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(str(e) if isinstance(e, Interrupted) else "=> interrupted before training began: nothing saved",
              file=sys.stderr)
        sys.exit(130)


def quiet_writer_thread(hook_args):
    """``threading.excepthook``: TensorBoard's writer thread dies on a failed write (a full disk)
    with a traceback, and its writer raises the same OSError at its next call, which the run
    reports in one line (RunWriter); every other thread's error is printed as Python does."""
    if issubclass(hook_args.exc_type, OSError) and type(hook_args.thread).__name__ == "_AsyncWriterThread":
        return
    threading.__excepthook__(hook_args)


# ----------------------------------------------------------------------------------------------
# main, train, evaluate
# ----------------------------------------------------------------------------------------------

def main(args):
    """Train (or with -e / -a evaluate) as the flags say; raises UserError on bad input."""
    check_args(args)
    set_cudnn_flags(args)
    init_distributed(args)
    try:
        is_demo = check_data_folder(args.data_folder)
        if is_demo:
            print_demo_banner(args.data_folder)
        device = resolve_device(args.gpu, args.device)
        asked = "--device cpu" if args.device == "cpu" else "--gpu -1" if args.gpu < 0 else None
        why = "" if device.type == "cuda" else f" ({asked or query_gpus()[1]})"
        print(f"=> device: {device}{why}" + (f", {args.world_size} processes" if args.world_size > 1 else ""))
        if args.evaluate or args.attack:
            return evaluate(args, device, is_demo)
        train(args, device, is_demo)
    finally:
        torch.use_deterministic_algorithms(False)  # set for -e / -a by set_cudnn_flags
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args, device, is_demo):
    """The training loop: build everything, resume if asked, train and validate each epoch.
    Ctrl-C at any point stops it with the line naming the last checkpoint saved and how to resume
    it; a failed write into the log folder stops it with one line (UserError) that says so too."""
    saved = args.resume or None  # the newest checkpoint on disk
    run_folder = None
    try:
        ckpt, config = resume_config(args)
        if ckpt is not None and ckpt["epoch"] >= args.epochs:
            print(f"=> {args.resume} finished its {ckpt['epoch']} epochs: nothing to train "
                  f"(--epochs N > {ckpt['epoch']} trains on, re-planning the schedule)")
            return
        warmup = warmup_epochs(args)
        print(precision_line(device, args))
        torch.manual_seed(args.seed)
        model = build_model(config, args.resnet18_weights, pretrained=ckpt is None)
        if ckpt is not None:
            load_model_state(model, ckpt.get("train_state_dict", ckpt["state_dict"]), args.resume)
        vit = config["family"] == "vit"
        channels_last = device.type == "cuda" and not vit
        model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        ema = ModelEma(model, args.ema_decay) if args.ema_decay > 0 else None
        if ema is not None and ckpt is not None:
            load_model_state(ema.module, ckpt["state_dict"], args.resume)
        net = model
        if args.world_size > 1:
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_loader, val_loader = build_loaders(args, device)
        criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        optimizer = build_optimizer(model, args, config["family"])
        iters = len(train_loader)
        scheduler = LinearWarmupCosineAnnealingLR(optimizer, warmup * iters, args.epochs * iters)
        scaler = make_grad_scaler(device, autocast_dtype(device, args))
        start_epoch = args.start_epoch
        if ckpt is not None:
            start_epoch = ckpt["epoch"]
            load_training_state(ckpt, optimizer, scaler)
        set_schedule_position(scheduler, start_epoch * iters)
        if ckpt is not None or start_epoch > 0:
            print(schedule_line(args, ckpt, optimizer, start_epoch))
        run_folder, writer, continuing = open_run(args, config, ckpt, is_demo)
        best_acc1, best_epoch = -math.inf, None  # a new folder's model_best starts with its first epoch
        if continuing:
            best_acc1, best_epoch = reconcile_best(run_folder, ckpt, args.resume)
        print(f"=> {model_line(config)}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
              f"logs and checkpoints in {run_folder}", flush=True)
        if args.vis and writer is not None:
            write_images(writer, to_device(*next(started(train_loader)), torch.device("cpu"), False)[0])
        mix = build_mix(args)
        for epoch in range(start_epoch, args.epochs):
            torch.manual_seed(args.seed * 100003 + epoch)
            train_loader.sampler.set_epoch(epoch)
            reset_peak_memory(device)
            start = time.time()
            loss, top1_tr, top5_tr, ips, data_wait = train_one_epoch(
                train_loader, net, criterion, optimizer, scheduler, scaler, epoch, device, args, writer,
                channels_last, clip_norm(args, vit), mix, ema)
            print(data_wait_line(epoch, ips, data_wait, args.workers), flush=True)
            if args.world_size > 1:
                broadcast_buffers(model)
                if ema is not None:
                    broadcast_buffers(ema.module)
            val = validate(val_loader, ema.module if ema is not None else net, nn.CrossEntropyLoss(), device,
                           args, channels_last, is_demo=is_demo)
            is_best = val["top1"] > best_acc1
            if is_best:
                best_acc1, best_epoch = val["top1"], epoch + 1
            if writer is None:
                continue
            with sigint_held():  # the epoch's logs and checkpoints are written whole, then Ctrl-C acts
                log_epoch(writer, epoch + 1, {
                    "data/top1_accuracy": val["top1"], "data/top5_accuracy": val["top5"],
                    "data/train_top1_accuracy": top1_tr, "data/train_top5_accuracy": top5_tr,
                    "data/train_loss": loss, "data/val_loss": val["loss"],
                    "perf/epoch_seconds": time.time() - start, "perf/images_per_second": ips,
                    "perf/data_wait_fraction": data_wait, "perf/peak_memory_mb": peak_memory_mb(device)})
                state = train_state_dict(epoch + 1, config, model, ema, (best_acc1, best_epoch), optimizer,
                                         scheduler, scaler, args)
                saved = save_checkpoint(state, is_best, run_folder)
        if args.world_size > 1:
            check_replicas_in_sync({"model": model, **({"EMA": ema.module} if ema is not None else {})})
        if writer is not None:
            writer.close()
            print(f"=> done: best Acc@1 {best_acc1:.3f}; checkpoints in {os.path.join(run_folder, 'models')}")
    except KeyboardInterrupt:
        raise Interrupted(interrupted_line(args, saved)) from None
    except LogWriteError as e:
        raise UserError(write_error_line(e, args, newest_saved(saved, run_folder))) from e


def evaluate(args, device, is_demo):
    """-e / -a: rebuild the checkpoint's model and evaluate it on val, with -e without and with
    flip averaging, with -a clean and under the PGD attack; the accuracies also go to TensorBoard."""
    if not args.resume:
        raise UserError(f"{'-e' if args.evaluate else '-a'} needs --resume CHECKPOINT")
    ckpt = load_checkpoint(args.resume)
    config = ckpt["model_config"]
    model = build_model(config)
    load_model_state(model, ckpt["state_dict"], args.resume)
    channels_last = device.type == "cuda" and config["family"] != "vit"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    adv = config.get("adv_training")
    print(precision_line(device, args))
    print(f"=> evaluating {model_line(config)} from {args.resume} (epoch {ckpt['epoch']}"
          + (f", adversarially trained: {adv})" if adv else ")"))
    _, val_loader = build_loaders(args, device, need_train=False)
    try:
        run = make_run_folder(args.log_dir, f"{run_name(config)}-{'attack' if args.attack else 'eval'}")
    except LogWriteError as e:
        raise UserError(write_error_line(e, args, None)) from e
    try:
        measure(args, device, is_demo, ckpt, config, model, val_loader, channels_last, run)
    except BaseException as e:  # a run folder without its results is removed, nothing half-written stays
        shutil.rmtree(run, ignore_errors=True)
        if isinstance(e, LogWriteError):
            raise UserError(write_error_line(e, args, None)) from e
        if isinstance(e, KeyboardInterrupt):
            raise Interrupted(f"=> interrupted: {'-a' if args.attack else '-e'} stopped before it finished; "
                              f"nothing written (its folder {run} removed)") from None
        raise


def measure(args, device, is_demo, ckpt, config, model, val_loader, channels_last, run):
    """-e: validate without and with flip averaging; -a: clean and under the PGD attack. Prints
    the accuracies and logs them (and with -v the images) to TensorBoard in ``run``."""
    criterion = nn.CrossEntropyLoss()
    writer = RunWriter(run)
    writer.add_text("run/args", " ".join(sys.argv) + ("  [DEMO DATA: not MiniPlaces]" if is_demo else ""))
    print(f"=> accuracies{' and images' if args.vis else ''} go to TensorBoard in {run}")
    step = ckpt["epoch"]
    if args.evaluate:
        print("=> without flip averaging (the number training logged):")
        plain = validate(val_loader, model, criterion, device, args, channels_last, is_demo=is_demo)
        print("=> with horizontal-flip averaging:")
        flip = validate(val_loader, model, criterion, device, args, channels_last, flip_tta=True,
                        writer=writer if args.vis else None, is_demo=is_demo)
        log_epoch(writer, step, {"eval/top1_accuracy": plain["top1"], "eval/top5_accuracy": plain["top5"],
                                 "eval/flip_top1_accuracy": flip["top1"], "eval/flip_top5_accuracy": flip["top5"]})
    else:
        attack = build_attack(args, criterion)
        settings = {"epsilon": attack.epsilon, "num_steps": attack.num_steps, "step_size": attack.step_size}
        print(f"=> PGD attack: epsilon {attack.epsilon:g}, {attack.num_steps} steps of size {attack.step_size:g} "
              "(normalized units)")
        res = validate(val_loader, model, criterion, device, args, channels_last, attack=attack,
                       writer=writer if args.vis else None, is_demo=is_demo, quiet=True)
        print(f"=> clean:       Acc@1 {res['clean_top1']:.3f} Acc@5 {res['clean_top5']:.3f}\n"
              f"=> adversarial: Acc@1 {res['top1']:.3f} Acc@5 {res['top5']:.3f}")
        print(f"******Acc@1 {res['top1']:.3f} Acc@5 {res['top5']:.3f}", flush=True)
        log_epoch(writer, step, {"attack/clean_top1_accuracy": res["clean_top1"],
                                 "attack/clean_top5_accuracy": res["clean_top5"],
                                 "attack/adversarial_top1_accuracy": res["top1"],
                                 "attack/adversarial_top5_accuracy": res["top5"],
                                 **{f"attack/{k}": v for k, v in settings.items()}})
    writer.close()


# ----------------------------------------------------------------------------------------------
# Setting up: cuDNN, processes, device, data
# ----------------------------------------------------------------------------------------------

def set_cudnn_flags(args):
    """cuDNN picks the fastest algorithms for training (benchmark, fixed input sizes) and
    deterministic ones for -e / -a, so that an evaluation repeats exactly (the course's main.py).
    -e and -a also run torch.use_deterministic_algorithms: on a GPU every op that has a
    deterministic kernel uses it (cuBLAS one with CUBLAS_WORKSPACE_CONFIG, set here before CUDA
    starts), and one that has none warns, naming itself (README: GPU machines)."""
    evaluating = args.evaluate or args.attack
    torch.backends.cudnn.benchmark = not evaluating
    torch.backends.cudnn.deterministic = evaluating
    if evaluating:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(evaluating, warn_only=True)


def init_distributed(args):
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on CUDA,
    gloo on the CPU. Sets ``args.rank`` and ``args.world_size``; only rank 0 prints."""
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.rank = int(os.environ.get("RANK", "0"))
    if args.world_size == 1:
        return
    if args.evaluate or args.attack:
        raise UserError("-e and -a run in one process: start them with python, not torchrun")
    cuda = args.device != "cpu" and args.gpu >= 0 and torch.cuda.is_available()
    if cuda:
        args.gpu = int(os.environ.get("LOCAL_RANK", "0"))
    dist.init_process_group("nccl" if cuda else "gloo")
    if args.rank != 0:
        builtins.print = lambda *a, **k: None


def check_data_folder(data_folder):
    """Fail fast on a missing dataset; returns True for the generated demo set."""
    if not os.path.isdir(data_folder):
        raise UserError(f"data folder {data_folder} not found; {GET_DATA_HINT}")
    for name in ("train.txt", "val.txt"):
        if not os.path.isfile(os.path.join(data_folder, name)):
            raise UserError(f"label file {os.path.join(data_folder, name)} not found; {GET_DATA_HINT}")
    return os.path.isfile(os.path.join(data_folder, DEMO_MARKER))


def print_demo_banner(data_folder):
    line = "#" * 78
    print(f"{line}\n# DEMO DATA: {data_folder} holds the small generated demo set, NOT MiniPlaces.\n"
          f"# Accuracies of this run say nothing about MiniPlaces. {GET_DATA_HINT}.\n{line}",
          flush=True)


def resolve_device(gpu, device="auto"):
    """``cuda:<gpu>`` when torch can use the GPU; the CPU when asked (``device`` "cpu", or ``gpu`` -1 as
    in the course's main.py) or on a machine without an NVIDIA GPU. A GPU that torch cannot use (no kernels
    for its compute capability, a driver too old for torch's CUDA) stops the run with one line naming the
    fix (UserError): never a silent CPU run."""
    if device == "cpu" or gpu < 0:
        return torch.device("cpu")
    problem = gpu_problem(torch, gpu)
    if problem:
        raise UserError(f"{problem}; or --device cpu to run on the CPU")
    if torch.cuda.is_available():
        if not 0 <= gpu < torch.cuda.device_count():
            raise UserError(f"--gpu {gpu}: only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    if device == "cuda":
        raise UserError(f"--device cuda: torch {torch.__version__} sees no CUDA device ({query_gpus()[1]})")
    return torch.device("cpu")


def autocast_dtype(device, args):
    """The autocast dtype of a run: the GPU's native one on CUDA (bf16 from compute capability
    8.0, fp16 with a GradScaler below, see cuda_amp_dtype); None (float32) on the CPU or with
    --no-amp."""
    if device.type != "cuda" or args.no_amp:
        return None
    return cuda_amp_dtype(device)


def precision_line(device, args):
    """One line naming the arithmetic of the run (printed at start-up); without AMP on CUDA it
    names what the backend flags leave of float32 (cuDNN convolutions run in TF32 by default)."""
    dtype = autocast_dtype(device, args)
    if dtype is None:
        if device.type != "cuda":
            return "=> precision: float32 (no AMP on the CPU)"
        return f"=> precision: float32 (--no-amp; arithmetic: {precision_name(device)})"
    capability = "compute capability {}.{}".format(*torch.cuda.get_device_capability(device))
    if dtype == torch.bfloat16:
        return f"=> precision: AMP bfloat16 ({capability}: native bf16)"
    return f"=> precision: AMP float16 with GradScaler ({capability} < 8.0: no native bf16)"


class SeededSampler(Sampler):
    """Yields (index, sample_seed) pairs: the order (shuffled or not) and each sample's
    augmentation seed depend only on (seed, epoch), so a resumed run sees exactly the
    data an uninterrupted one would, whatever the number of workers.

    Under DistributedDataParallel each of ``world_size`` ranks takes every
    ``world_size``-th pair; with ``pad`` the list is first padded by repeating its
    start, so that all ranks run the same number of iterations.
    """

    def __init__(self, num_items, shuffle, seed, rank=0, world_size=1, pad=True):
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.pad:
            return math.ceil(self.num_items / self.world_size)
        return len(range(self.rank, self.num_items, self.world_size))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.num_items, generator=g) if self.shuffle else torch.arange(self.num_items)
        seeds = torch.randint(0, 2 ** 31 - 1, (self.num_items,), generator=g)
        pairs = list(zip(order.tolist(), seeds[order].tolist()))
        if self.pad:
            pairs += pairs[:len(self) * self.world_size - self.num_items]
        return iter(pairs[self.rank::self.world_size])


class SeededDataset(Dataset):
    """Wraps a dataset so that item (index, seed) is transformed under ``random.seed(seed)``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        random.seed(seed)
        return self.dataset[index]


def decoded(dataset, args):
    """``dataset`` read from its decoded cache (decoded_cache.py), or with --no-cache or when its
    images differ in size decoded from its JPEGs, each checked whole first (decoded_cache.CheckedImages).
    Under DDP rank 0 builds the cache while the other ranks wait in a gloo barrier of their own, with a
    timeout that fits the build (CACHE_WAIT_S_PER_IMAGE)."""
    if args.no_cache:
        return CheckedImages(dataset)
    cache_dir = args.cache_dir or os.path.join(args.data_folder, "cache")
    if args.world_size > 1:
        wait = datetime.timedelta(seconds=max(CACHE_WAIT_MIN_S, CACHE_WAIT_S_PER_IMAGE * len(dataset)))
        group = dist.new_group(backend="gloo", timeout=wait)
    try:
        if args.rank == 0:
            cached = with_decoded_cache(dataset, cache_dir, workers=args.workers)
        if args.world_size > 1:
            try:
                dist.barrier(group=group)
            except RuntimeError as e:
                raise UserError(f"rank {args.rank} waited {wait} for rank 0 to build the decoded cache in {cache_dir}: "
                                "build it first with one process (python main.py, Ctrl-C after its "
                                "'=> decoded cache: wrote' line), or train with --no-cache") from e
        if args.rank != 0:
            cached = with_decoded_cache(dataset, cache_dir, build=False)
    except CacheError as e:
        raise UserError(str(e)) from e
    return cached


def build_loaders(args, device, need_train=True):
    """(train_loader or None, val_loader) over MiniPlacesLoader (read from the decoded cache
    unless --no-cache) with seeded sampling; under DDP each rank loads its share,
    ``--batch-size`` staying the global batch."""
    def loader(split, transforms, batch_size, shuffle):
        try:
            dataset = MiniPlacesLoader(args.data_folder, split=split, num_classes=NUM_CLASSES,
                                       transforms=transforms)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        dataset = decoded(dataset, args)
        sampler = SeededSampler(len(dataset), shuffle, args.seed, args.rank, args.world_size, pad=shuffle)
        return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler, collate_fn=collate_uint8,
                          num_workers=args.workers, pin_memory=device.type == "cuda",
                          persistent_workers=args.workers > 0, drop_last=False)

    if args.batch_size % args.world_size:
        raise UserError(f"--batch-size {args.batch_size} must be divisible by the {args.world_size} processes")
    train_batch = args.batch_size // args.world_size
    train_tf = get_train_transforms(normalize=False, single_warp=args.augment == "warp")
    train_loader = loader("train", train_tf, train_batch, True) if need_train else None
    val_loader = loader("val", get_val_transforms(normalize=False), args.val_batch_size, False)
    return train_loader, val_loader


# ----------------------------------------------------------------------------------------------
# Building the model, the optimizer and the schedule
# ----------------------------------------------------------------------------------------------

def resolve_arch(args):
    """The architecture choice of the flags: one of ARCH_CHOICES."""
    chosen = [a for a, on in (("vit", args.use_vit), ("resnet18", args.use_resnet18)) if on]
    if args.arch:
        chosen.append(args.arch)
    if len(set(chosen)) > 1:
        raise UserError(f"conflicting model flags: {sorted(set(chosen))}; pick one")
    arch = chosen[0] if chosen else "cnn"
    if args.use_custom_conv and arch not in ("cnn", "simplenet"):
        raise UserError(f"--use-custom-conv works with the CNNs (cnn, simplenet), not {arch}")
    return arch


def model_config_from_args(args):
    """The checkpoint's description of the model, enough to rebuild it: the class name
    (``model_arch``), its family (cnn, vit or resnet18), the conv op and the classes."""
    arch = resolve_arch(args)
    model_arch, family = arch_models()[arch]
    adv = None
    if args.adv_train > 0:
        if family != "cnn":
            raise UserError(f"--adv-train works with the CNNs (cnn, simplenet), not {arch}")
        adv = {"adv_ratio": args.adv_train, "num_steps": args.adv_steps, "epsilon": args.adv_eps}
    return {"model_arch": model_arch, "family": family, "custom_conv": args.use_custom_conv,
            "num_classes": NUM_CLASSES, "adv_training": adv}


def arch_models():
    """--arch -> (the model's name in student_code or torchvision, family); "cnn" and "vit" are
    student_code's default_cnn_model and default_vit_model."""
    return {"cnn": (default_cnn_model.__name__, "cnn"), "simplenet": ("SimpleNet", "cnn"),
            "vit": (default_vit_model.__name__, "vit"), "simplevit": ("SimpleViT", "vit"),
            "resnet18": ("resnet18", "resnet18")}


def arch_of(config):
    """The --arch name of a checkpoint's model: "cnn" for default_cnn_model (also for checkpoints
    written while it was named SceneResNet), else the name itself."""
    names = {model_arch: arch for arch, (model_arch, _) in arch_models().items()}
    return names.get(config["model_arch"], "cnn" if config["model_arch"] == "SceneResNet"
                     else config["model_arch"].lower())


def run_name(config):
    """The model's part of a run folder's name: the --arch name, "-customconv" with CustomConv2d."""
    return arch_of(config) + ("-customconv" if config["custom_conv"] else "")


def model_line(config):
    """How output lines name the model, e.g. "cnn (student_code.default_cnn_model, SceneResNet)"."""
    arch = arch_of(config)
    where = {"cnn": "student_code.default_cnn_model, ", "vit": "student_code.default_vit_model, ",
             "resnet18": "torchvision, "}.get(arch, "student_code.")
    return f"{run_name(config)} ({where}{config['model_arch']})"


def build_model(config, resnet18_weights=None, pretrained=False):
    """Build the model that ``config`` (see model_config_from_args) describes. ResNet18
    starts from ImageNet weights only when ``pretrained`` (a new training run)."""
    if config["family"] == "resnet18":
        try:
            return build_resnet18(config["num_classes"], weights_path=resnet18_weights, pretrained=pretrained)
        except PretrainedWeightsError as e:
            raise UserError(" ".join(str(e).split())) from e
    cls = getattr(student_code, config["model_arch"], None)
    if cls is None and arch_of(config) == "cnn":  # a checkpoint of default_cnn_model under an older name
        cls = default_cnn_model
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise UserError(f"unknown model architecture {config['model_arch']!r} (no such model in student_code.py)")
    if config["family"] == "vit":
        return cls(num_classes=config["num_classes"])
    model = cls(conv_op=CustomConv2d if config["custom_conv"] else nn.Conv2d, num_classes=config["num_classes"])
    if config.get("adv_training"):
        try:
            model.enable_adversarial_training(**config["adv_training"])
        except ValueError as e:
            raise UserError(f"adversarial training: {e}") from e
    return model


def build_optimizer(model, args, family):
    """AdamW for Vision Transformers (no decay on biases, norms and position embeddings),
    SGD with momentum for CNNs (as the starter); for ResNet18 fine-tuning the backbone's
    learning rate is scaled by --backbone-lr-scale. On CUDA the fused kernels: they take the
    GradScaler's inf check on the device, where the others read it on the host every step."""
    fused = next(model.parameters()).device.type == "cuda"
    if family == "vit":
        return torch.optim.AdamW(param_groups_weight_decay(model, args.weight_decay), lr=args.lr, fused=fused)
    params = model.parameters()
    if family == "resnet18":
        params = finetune_param_groups(model, args.lr, args.backbone_lr_scale)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                           fused=fused)


def make_grad_scaler(device, amp_dtype):
    """A GradScaler for ``device``, enabled only under fp16 autocast (bf16 and float32 need no
    loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)


def build_mix(args):
    """MixUp and/or CutMix on whole batches (None when both are off)."""
    mixes = []
    if args.mixup > 0:
        mixes.append(v2.MixUp(alpha=args.mixup, num_classes=NUM_CLASSES))
    if args.cutmix > 0:
        mixes.append(v2.CutMix(alpha=args.cutmix, num_classes=NUM_CLASSES))
    return v2.RandomChoice(mixes) if mixes else None


class ModelEma:
    """Exponential moving average of a model's floating-point state (weights and BatchNorm
    statistics): ``ema = decay * ema + (1 - decay) * model`` after every optimizer step.
    ``module`` is the averaged copy, used for validation and saved as the checkpoint's
    ``state_dict``."""

    def __init__(self, model, decay):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        pairs = [(e, m) for e, m in zip(self.module.state_dict().values(), model.state_dict().values())]
        floats = [(e, m) for e, m in pairs if e.dtype.is_floating_point]
        torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1.0 - self.decay)
        for e, m in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(m)


def warmup_epochs(args):
    """The warmup epochs of the schedule: --warmup, or all of a run shorter than it (a quick
    ``--epochs 1`` check with the default --warmup 5), said in one line. ``args.warmup`` stays
    the user's: the checkpoint records it, a resume compares against it, and a resume to a longer
    --epochs re-plans with it."""
    if args.warmup > args.epochs:
        print(f"=> --warmup {args.warmup} is longer than --epochs {args.epochs}: "
              f"warming up over all {args.epochs} epoch(s)")
        return args.epochs
    return args.warmup


def set_schedule_position(scheduler, step):
    """Put ``scheduler`` (LinearWarmupCosineAnnealingLR, stepped per iteration) at iteration
    ``step`` of its plan: every group's lr becomes the plan's lr there."""
    scheduler.last_epoch = step
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
        group["lr"] = lr


# ----------------------------------------------------------------------------------------------
# Resuming: the run as it was, on any device and in any precision
# ----------------------------------------------------------------------------------------------

def resume_config(args):
    """(checkpoint or None, model config) of a training run. With --resume, ``args`` becomes the
    checkpoint's run: each flag that the command line did not give takes the checkpoint's value.
    Given flags that differ are named in one line; those that change what the run computes
    (RUN_DEFINING_FLAGS, MODEL_FLAGS) stop it (UserError). A longer --epochs re-plans the schedule."""
    if not args.resume:
        return None, model_config_from_args(args)
    ckpt = load_checkpoint(args.resume)
    if "args" in ckpt:
        restore_run_flags(args, ckpt["args"])
    else:
        print(f"=> {args.resume} records no flags (an older checkpoint): the command line's flags apply")
    config = model_config_from_args(args)
    if ckpt["model_config"] != config:
        raise UserError(f"--resume: {args.resume} holds {ckpt['model_config']}, but the flags ask for {config}")
    done = ckpt["epoch"]
    if args.epochs < done:
        raise UserError(f"--epochs {args.epochs}: {args.resume} has already trained {done} epochs")
    return ckpt, config


def restore_run_flags(args, saved):
    """Set every flag that the command line did not give to its value in ``saved`` (a checkpoint's
    ``args``); name the given ones that differ in one line, or stop (UserError) where they would
    change what the run computes."""
    given = set(args.given)
    if given & set(MODEL_FLAGS):  # the command line names a model: resume_config compares it as a whole
        given |= set(MODEL_FLAGS)
    changed, refused = [], []
    for name, value in saved.items():
        if name in NOT_RESUMED or not hasattr(args, name):
            continue
        if name not in given:
            setattr(args, name, value)
            continue
        ours = getattr(args, name)
        paths = name in ("data_folder", "resnet18_weights") and ours is not None and value is not None
        same = os.path.realpath(ours) == os.path.realpath(value) if paths else ours == value
        if same or name in MODEL_FLAGS or name in RUN_FOLDER_FLAGS:
            continue
        flag = flag_name(name) if name != "data_folder" else "DIR"
        text = f"{flag} {flag_text(ours)} (the run's: {flag_text(value)})"
        (refused if name in RUN_DEFINING_FLAGS else changed).append(text)
    if refused:
        raise UserError(f"--resume continues {args.resume} as it was trained, but the command line changes "
                        f"{'; '.join(refused)}; start a new run (without --resume) for that")
    if changed:
        print(f"=> resuming with flags that differ from the checkpoint's: {'; '.join(changed)}")


def flag_text(value):
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def resume_folder(checkpoint_path):
    """The run folder to continue in: the checkpoint's own run when it is that run's latest
    ``models/checkpoint.pth.tar``; None (a new folder) for any other file, so nothing of
    the old run is overwritten."""
    path = os.path.abspath(checkpoint_path)
    if os.path.basename(path) == "checkpoint.pth.tar" and os.path.basename(os.path.dirname(path)) == "models":
        return os.path.dirname(os.path.dirname(path))
    return None


def load_checkpoint(path):
    """Load and check a checkpoint written by :func:`save_checkpoint`, onto the CPU (every tensor
    then goes to the device and layout of what it belongs to)."""
    if not os.path.isfile(path):
        raise UserError(f"--resume: checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's message may advise weights_only=False: unsafe, and no help here
        raise UserError(f"--resume: {path} is not a readable checkpoint ({unreadable_reason(path, e)}); "
                        "name a checkpoint.pth.tar or model_best.pth.tar that main.py wrote") from e
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"--resume: {path} is not a checkpoint of main.py (missing {missing})")
    return ckpt


def unreadable_reason(path, error):
    """Why ``torch.load(path, weights_only=True)`` failed, in our words."""
    if not zipfile.is_zipfile(path):
        return "not a file written by torch.save, or one cut short"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds Python objects other than tensors and plain values, which main.py does not load"
    return f"a damaged archive: {type(error).__name__}"


def load_model_state(model, state_dict, path):
    """Load weights, naming the checkpoint and the first mismatches when they do not fit."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"--resume: the weights in {path} do not fit the model ({detail})") from e


def load_training_state(ckpt, optimizer, scaler):
    """The optimizer's and the GradScaler's state of a checkpoint, whatever device and precision
    it was saved in (the schedule's position is set by the caller: set_schedule_position)."""
    load_optimizer_state(optimizer, ckpt["optimizer"])
    note = load_scaler_state(scaler, ckpt.get("scaler"))
    if note:
        print(note)


def load_optimizer_state(optimizer, state):
    """Load a checkpoint's optimizer state for this run's parameters and kernels.

    The saved param groups carry the kernel choice of the device they were saved on (fused on
    CUDA), and ``Optimizer.load_state_dict`` places ``step`` by it and keeps each state tensor's
    layout. So this run's choice is restored, then every state tensor is moved to its
    parameter's device, dtype and memory format (the fused kernels take equal strides for
    parameters, gradients and state, and on the CPU compute wrong updates without them), and
    ``step`` goes to the parameter's device for fused or capturable groups, to the CPU otherwise."""
    kernels = [{k: group[k] for k in ("fused", "foreach", "capturable") if k in group}
               for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, kernels):
        group.update(kept)
        step_device = lambda p: p.device if group.get("fused") or group.get("capturable") else "cpu"  # noqa: E731
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(value):
                    continue
                if key == "step":
                    value = value.to(step_device(p), copy=True)
                elif value.shape == p.shape:  # p's dtype (floating state), device and strides
                    dtype = p.dtype if value.is_floating_point() else value.dtype
                    value = torch.empty_like(p, dtype=dtype).copy_(value)
                else:
                    value = value.to(p.device, copy=True)
                optimizer.state[p][key] = value


def load_scaler_state(scaler, state):
    """Resume the GradScaler across AMP modes and devices. Only an fp16 run's checkpoint holds
    a loss scale; a bf16, float32 or CPU run saves its disabled scaler's empty state. An
    enabled scaler takes the saved scale when there is one and starts afresh otherwise; a
    disabled one needs none. Returns a line for the user when the modes differ, else None."""
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)
        return None
    if scaler.is_enabled():
        return ("=> GradScaler: the checkpoint holds no fp16 loss scale (saved in bf16, float32 or on the "
                f"CPU); starting from the default scale {scaler.get_scale():g}")
    if state:
        return "=> GradScaler: the checkpoint's fp16 loss scale is not needed here (no fp16 autocast)"
    return None


def schedule_line(args, ckpt, optimizer, start_epoch):
    """The line that says where a resumed (or --start-epoch) run goes on: from which epoch to
    which, at what lr (the head's for ResNet18), and whether the schedule was re-planned."""
    lr = max(group["lr"] for group in optimizer.param_groups)
    span = f"epochs {start_epoch + 1} to {args.epochs} start at lr {lr:.6g}"
    if ckpt is None:
        return f"=> --start-epoch {start_epoch}: {span}"
    line = f"=> resumed {args.resume} after epoch {start_epoch} (best Acc@1 {ckpt['best_acc1']:.3f}): {span}"
    planned = ckpt.get("args", {}).get("epochs")
    if planned is not None and planned != args.epochs:
        line += f", the warmup + cosine schedule re-planned from {planned} to {args.epochs} epochs"
    return line


def train_state_dict(epoch, config, model, ema, best, optimizer, scheduler, scaler, args):
    """A checkpoint: the model (the EMA weights with --ema-decay, the trained ones then under
    ``train_state_dict``), the best (Acc@1, epoch) of its run folder so far (``best_acc1``,
    ``best_epoch``), the training state and the run's flags (``args``, for --resume)."""
    best_acc1, best_epoch = best
    state = {"epoch": epoch, "model_arch": config["model_arch"], "model_config": config,
             "state_dict": (ema.module if ema is not None else model).state_dict(), "best_acc1": best_acc1,
             "best_epoch": best_epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "args": vars(args)}
    if ema is not None:
        state["train_state_dict"] = model.state_dict()
    return state


def interrupted_line(args, saved):
    """The line for Ctrl-C: the last checkpoint saved and the command that resumes it."""
    if saved is None:
        return ("=> interrupted before the first checkpoint: nothing saved to resume "
                "(run the same command to start again)")
    return (f"=> interrupted; the last checkpoint saved is {saved}; resume with: python main.py "
            f"{shlex.quote(args.data_folder)} --resume {shlex.quote(saved)}")


# ----------------------------------------------------------------------------------------------
# Training one epoch
# ----------------------------------------------------------------------------------------------

def train_one_epoch(train_loader, model, criterion, optimizer, scheduler, scaler, epoch, device,
                    args, writer, channels_last, clip_grad, mix=None, ema=None):
    """One epoch of training (``mix``: an optional MixUp/CutMix batch transform; ``ema``:
    a ModelEma updated after every step).

    Returns (mean loss, top-1 %, top-5 %, images/s, the fraction of the epoch's time spent
    waiting for the loader), the first four over all DDP ranks. The iterations
    queue their work without waiting for the device; only the print interval reads it back.
    """
    model.train()
    amp_dtype = autocast_dtype(device, args)
    batch_time, data_time = AverageMeter(), AverageMeter()
    sums = torch.zeros(3, device=device)  # loss * n, top-1 hits, top-5 hits
    count = 0  # images, counted on the host
    num_iters, start, end = len(train_loader), time.time(), time.time()
    for i, (images, target) in enumerate(started(train_loader)):
        data_time.update(time.time() - end)  # waiting for the loader
        images, target = to_device(images, target, device, channels_last)
        labels = target
        if mix is not None:
            images, target = mix(images, target)  # target: (B, num_classes) soft labels
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            output = model(images)
            loss = criterion(output, target)
        optimizer_step(loss, model, optimizer, scaler, clip_grad)
        scheduler.step()
        if ema is not None:
            ema.update(model)
        n = images.shape[0]
        sums += torch.stack([loss.detach().float() * n, *accuracy_counts(output.detach(), labels)])
        count += n
        batch_time.update(time.time() - end)
        end = time.time()
        if (i + 1) % args.print_freq == 0 or i + 1 == num_iters:
            log_progress(writer, sums / count, loss, optimizer, epoch, i, num_iters, batch_time)
    (mean_loss, top1, top5), total = means_over_ranks(sums, count)
    seconds = time.time() - start
    return mean_loss, 100.0 * top1, 100.0 * top5, total / seconds, data_time.sum / seconds


def log_progress(writer, means, loss, optimizer, epoch, i, num_iters, batch_time):
    """Print and log a training interval (reading the device's numbers: the one host sync of
    the interval); stop on a non-finite loss.

    ``means`` = (mean loss, top-1 rate, top-5 rate) since the epoch started, on the device. The
    lr logged is --lr's (the head's when ResNet18's backbone learns slower: that one is logged
    as data/backbone_learning_rate). Epochs are printed counted from 1, as "=> epoch N" lines.
    """
    mean_loss, top1, top5 = means.tolist()
    lrs = [group["lr"] for group in optimizer.param_groups]
    lr = max(lrs)
    backbone_lr = min(lrs) if len({group["initial_lr"] for group in optimizer.param_groups}) > 1 else None
    if not math.isfinite(mean_loss):
        kind = "NaN" if math.isnan(mean_loss) else "infinite"
        raise UserError(f"training loss became {kind} at epoch {epoch + 1}, iteration {i + 1}; "
                        "lower --lr (or raise --warmup) and start again")
    if writer is not None:
        step = epoch * num_iters + i + 1
        writer.add_scalar("data/training_loss", loss.item(), step)
        writer.add_scalar("data/learning_rate", lr, step)
        if backbone_lr is not None:
            writer.add_scalar("data/backbone_learning_rate", backbone_lr, step)
    print(f"Epoch: [{epoch + 1}][{i + 1}/{num_iters}]\tTime {batch_time.val:.3f} ({batch_time.avg:.3f})\t"
          f"Loss {mean_loss:.4f}\tAcc@1 {100 * top1:.2f}\tAcc@5 {100 * top5:.2f}\tLR {lr:.5f}"
          + (f" (backbone {backbone_lr:.5f})" if backbone_lr is not None else ""), flush=True)


def to_device(images, target, device, channels_last):
    """Copy a batch to ``device`` without blocking (pinned memory), channels_last for CNNs.

    A uint8 batch (B, 3, H, W) in [0, 255], as the loaders deliver it, is converted to float32
    and normalized with the ImageNet statistics there, on the device (a quarter of the bytes
    through the worker queues and the host-to-device copy); a float batch is taken as normalized.
    """
    images = images.to(device, non_blocking=True)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if images.dtype == torch.uint8:
        images = images.to(torch.float32, memory_format=layout)  # (B, 3, H, W) in [0, 255]
        for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
            images[:, c].mul_(1.0 / (255.0 * std)).sub_(mean / std)  # Python scalars: no host-to-device copy
    elif channels_last:
        images = images.contiguous(memory_format=layout)
    return images, target.to(device, non_blocking=True)


def clip_norm(args, vit):
    """The gradient-norm clip of a run: --clip-grad, or by default 1.0 for ViTs (the course's) and
    none for CNNs (0: off)."""
    if args.clip_grad is None:
        return 1.0 if vit else 0.0
    return args.clip_grad


def optimizer_step(loss, model, optimizer, scaler, clip_grad):
    """Backward (scaled for fp16), optional gradient-norm clipping, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()


def accuracy_counts(output, target, topk=(1, 5)):
    """Number of samples whose label is in the top-k logits, one float 0-d tensor per k."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(target[:, None])  # (B, maxk)
    return [hit[:, :min(k, maxk)].any(dim=1).sum().float() for k in topk]


def all_reduce_sum(tensor):
    """Sum ``tensor`` over DDP ranks (identity in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def means_over_ranks(sums, count):
    """(sums / count as floats, count), both summed over the DDP ranks first: ``sums`` is a
    device tensor, ``count`` the number of samples counted on the host. One host sync."""
    totals = all_reduce_sum(torch.cat([sums, sums.new_full((1,), float(count))])).tolist()
    return [t / totals[-1] for t in totals[:-1]], totals[-1]


def data_wait_line(epoch, images_per_second, data_wait, workers):
    """The epoch's speed line; says when waiting for the loader took over a quarter of the time."""
    line = (f"=> epoch {epoch + 1}: {images_per_second:.0f} images/s, {100 * data_wait:.0f}% of the time "
            f"waiting for data (-j {workers})")
    if data_wait > 0.25:
        line += ": the loader is the bottleneck; more -j workers (up to the CPU cores) would help"
    return line


def reset_peak_memory(device):
    """Start a new peak for peak_memory_mb: CUDA's allocator statistics, or on Linux the
    process's peak resident set (VmHWM), reset through /proc/self/clear_refs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: peak_memory_mb gives the peak since the process started
        pass


def peak_memory_mb(device):
    """Peak CUDA memory allocated, or the process's peak resident memory on the CPU (MiB), since
    the last reset_peak_memory (on a CPU without /proc: since the process started)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------
# Validating and attacking
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def validate(val_loader, model, criterion, device, args, channels_last, flip_tta=False,
             attack=None, writer=None, is_demo=False, quiet=False):
    """Top-1 / top-5 accuracy (%) and mean loss on val; prints ``******Acc@1 X Acc@5 Y`` last
    (unless ``quiet``).

    ``flip_tta`` averages the softmax of each image and its mirror image. ``attack`` (a
    PGDAttack) replaces each batch by its adversarial version, whose accuracies are returned
    with the clean ones (``clean_top1``, ``clean_top5``); with ``writer`` the first batch's
    images go to TensorBoard. Returns {"top1", "top5", "loss"[, "clean_top1", "clean_top5"]}.
    """
    model.eval()
    amp_dtype = autocast_dtype(device, args)
    sums = torch.zeros(5 if attack is not None else 3, device=device)  # loss * n, top-1, top-5 hits[, clean]
    count = 0  # images, counted on the host
    for i, (images, target) in enumerate(started(val_loader)):
        images, target = to_device(images, target, device, channels_last)
        clean = images
        if attack is not None:
            with torch.enable_grad():
                images = attack.perturb(model, images)
        if writer is not None and i == 0:
            write_images(writer, clean, images if attack is not None else None)
        output = predict(model, images, flip_tta, amp_dtype)
        loss = nn.functional.nll_loss(output.clamp_min(1e-12).log(), target) if flip_tta else criterion(output, target)
        n = images.shape[0]
        hits = accuracy_counts(output, target)
        if attack is not None:
            hits += accuracy_counts(predict(model, clean, False, amp_dtype), target)
        sums += torch.stack([loss * n, *hits])
        count += n
        if (i + 1) % args.print_freq == 0:
            top1, top5 = (100.0 * sums[1:3] / count).tolist()  # the print interval's host sync
            print(f"Test: [{i + 1}/{len(val_loader)}]\tAcc@1 {top1:.2f}\tAcc@5 {top5:.2f}", flush=True)
    means, _ = means_over_ranks(sums, count)
    result = {"loss": means[0], "top1": 100.0 * means[1], "top5": 100.0 * means[2]}
    if attack is not None:
        result.update(clean_top1=100.0 * means[3], clean_top5=100.0 * means[4])
    if is_demo:
        print("[DEMO DATA] these accuracies are on the generated demo set, not on MiniPlaces")
    if not quiet:
        print(f"******Acc@1 {result['top1']:.3f} Acc@5 {result['top5']:.3f}", flush=True)
    return result


def predict(model, images, flip_tta, amp_dtype):
    """Logits (B, num_classes) in float32, or with ``flip_tta`` the mean softmax of the
    images and their mirror images."""
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        output = model(images).float()
        if flip_tta:
            output = 0.5 * (output.softmax(1) + model(images.flip(3)).float().softmax(1))
    return output


def build_attack(args, criterion):
    """``default_attack(criterion)`` with the --attack-* flags that were given. A new
    --attack-eps without --attack-step-size scales the step size with it (the default
    step / epsilon ratio), so that the steps can still reach the border of the ball."""
    kwargs = {name: value for name, value in (("epsilon", args.attack_eps), ("num_steps", args.attack_steps),
                                               ("step_size", args.attack_step_size)) if value is not None}
    if args.attack_eps is not None and args.attack_step_size is None:
        defaults = inspect.signature(default_attack).parameters
        kwargs["step_size"] = args.attack_eps * defaults["step_size"].default / defaults["epsilon"].default
    return default_attack(criterion, **kwargs)


def write_images(writer, clean, adversarial=None):
    """Input images to TensorBoard (Image/Org_Image, by default_visfunction) and, with an attack,
    de-normalized originals, adversarial versions (Image/Adv_Image) and their amplified difference
    (Image/Diff_Image)."""
    if adversarial is None:
        writer.add_image("Image/Org_Image", default_visfunction(clean.detach().float()), 0)
        return
    org, adv, diff = vis_adversarial(clean.detach().float(), adversarial.detach().float())
    for tag, grid in (("Image/Org_Image", org), ("Image/Adv_Image", adv), ("Image/Diff_Image", diff)):
        writer.add_image(tag, grid, 0)


# ----------------------------------------------------------------------------------------------
# Run folders, TensorBoard and checkpoints
# ----------------------------------------------------------------------------------------------

def open_run(args, config, ckpt, is_demo):
    """(run folder, RunWriter, whether it continues the checkpoint's own run) on rank 0, (None,
    None, False) on the other ranks. A resume of a run's latest checkpoint continues in its folder,
    unless --log-dir or --exp-name name another place (then a new folder under --log-dir, or
    beside the run's); any other start gets a new folder named after the model under --log-dir. A
    new folder that cannot be written is removed again.

    Raises:
        LogWriteError: the folder cannot be made or written.
    """
    if args.rank != 0:
        return None, None, False
    run_folder = resume_folder(args.resume) if ckpt is not None else None
    log_root = args.log_dir
    if run_folder is not None and names_another_folder(args, config, run_folder):
        log_root = args.log_dir if "log_dir" in args.given else os.path.dirname(run_folder)
        print(f"=> --log-dir / --exp-name name another folder: the run goes on in a new folder under "
              f"{log_root} ({run_folder} stays as it is)")
        run_folder = None
    continuing = run_folder is not None
    if not continuing:
        run_folder = make_run_folder(log_root, args.exp_name or run_name(config))
        if ckpt is not None:
            print(f"=> {args.resume} goes on in a new run folder: its model_best.pth.tar is the best of the "
                  "epochs trained there, from the first one")
    try:
        writer = RunWriter(run_folder)
        with writer.writing():
            os.makedirs(os.path.join(run_folder, "models"), exist_ok=True)
        writer.add_text("run/args", " ".join(sys.argv) + ("  [DEMO DATA: not MiniPlaces]" if is_demo else ""))
    except LogWriteError:
        if not continuing:
            shutil.rmtree(run_folder, ignore_errors=True)
        raise
    return run_folder, writer, continuing


def names_another_folder(args, config, run_folder):
    """Whether a given --log-dir or --exp-name names another place than ``run_folder``, the
    folder of the run being resumed."""
    other_root = "log_dir" in args.given and (os.path.realpath(args.log_dir)
                                               != os.path.realpath(os.path.dirname(run_folder)))
    other_name = "exp_name" in args.given and not os.path.basename(run_folder).startswith(
        f"{args.exp_name or run_name(config)}_")
    return other_root or other_name


def make_run_folder(log_root, name):
    """Create ``log_root/<name>_<YYYYmmdd-HHMMSS>[-k]``, never reusing an existing folder.

    Raises:
        LogWriteError: ``log_root`` is a file, or the folder cannot be created there.
    """
    if os.path.exists(log_root) and not os.path.isdir(log_root):
        raise LogWriteError(log_root, NotADirectoryError(errno.ENOTDIR, "it is a file, not a folder"))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(log_root, f"{name}_{stamp}")
    path, k = base, 0
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            k += 1
            path = f"{base}-{k}"
        except OSError as e:
            raise LogWriteError(log_root, e) from e


class RunWriter:
    """The TensorBoard SummaryWriter of a run folder whose failed writes raise LogWriteError
    naming the folder. (TensorBoard writes in a thread: a write that fails there is raised by the
    writer's next call. An event file is a sequence of records that TensorBoard reads up to the
    last whole one, so a record cut short by a full disk loses nothing before it.)"""

    def __init__(self, folder):
        self.folder = folder
        with self.writing():
            self.writer = SummaryWriter(folder)

    @contextlib.contextmanager
    def writing(self):
        """A block whose OSError becomes LogWriteError naming this run folder."""
        try:
            yield
        except OSError as e:
            raise LogWriteError(self.folder, e) from e

    def add_text(self, *args):
        with self.writing():
            self.writer.add_text(*args)

    def add_scalar(self, *args):
        with self.writing():
            self.writer.add_scalar(*args)

    def add_image(self, *args):
        with self.writing():
            self.writer.add_image(*args)

    def flush(self):
        with self.writing():
            self.writer.flush()

    def close(self):
        with self.writing():
            self.writer.close()


WRITE_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "the file system is read-only"}


def write_error_line(error, args, saved):
    """The line for a LogWriteError: the folder, the cause, a way forward and, when a training
    checkpoint exists, that it is kept and the command that resumes it."""
    code, text = error.cause.errno, error.cause.strerror or str(error.cause)
    cause = WRITE_CAUSES.get(code, text) if text == os.strerror(code or 0) else text  # ours: kept as is
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there or pass another --log-dir"
    elif code == errno.ENOTDIR:
        fix = "pass a folder as --log-dir"
    else:
        fix = "make it writable or pass another --log-dir"
    line = f"cannot write to {error.folder} ({cause}): {fix}"
    if saved:
        line += (f"; the last checkpoint, {saved}, is kept: resume with python main.py "
                 f"{shlex.quote(args.data_folder)} --resume {shlex.quote(saved)} (add --log-dir DIR to go on "
                 "in a new folder there)")
    return line


def log_epoch(writer, step, scalars):
    """Write one epoch's scalars (step = epochs done) and flush them to disk."""
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, step)
    writer.flush()


def save_checkpoint(state, is_best, run_folder):
    """Write ``models/model_best.pth.tar`` when best, then ``models/checkpoint.pth.tar``, each
    whole or not at all (write_atomically). In this order a kill at any point leaves
    model_best.pth.tar at least as new as the best epoch that checkpoint.pth.tar records (a
    resume of that checkpoint redoes the epochs after it). Returns the checkpoint's path.

    Raises:
        LogWriteError: a file could not be written (the older one is kept, no temporary file left).
    """
    folder = os.path.join(run_folder, "models")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for name in (["model_best.pth.tar"] if is_best else []) + ["checkpoint.pth.tar"]:
        write_atomically(os.path.join(folder, name), buffer.getbuffer())
    return os.path.join(folder, "checkpoint.pth.tar")


def write_atomically(path, data):
    """Write the bytes ``data`` to ``path`` whole or not at all: through the hidden temporary file
    ``.<name>.tmp`` beside it (first checked to fit the free space), fsynced and renamed over
    ``path``, then the folder fsynced (the renames stay in order through a power loss too). A
    failure removes the temporary file and leaves ``path`` as it was; a kill may leave the
    temporary file, which a resume removes (reconcile_best).

    Raises:
        LogWriteError: naming the folder, e.g. the disk is full (bytes needed and free).
    """
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < len(data):
            raise OSError(errno.ENOSPC, f"the disk is full: {os.path.basename(path)} needs {len(data):,} bytes, "
                                        f"{free:,} are free")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        fsync_folder(folder)
    except OSError as e:
        raise LogWriteError(folder, e) from e


def fsync_folder(folder):
    """fsync ``folder``, so that the renames into it are on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reconcile_best(run_folder, ckpt, checkpoint_path):
    """(best Acc@1, best epoch) that a run resumed in its own folder goes on from, after making
    its ``models`` folder whole again: temporary files of killed saves are removed, and a
    model_best.pth.tar missing or older than the best epoch the checkpoint records is restored
    from the checkpoint when that epoch is the checkpoint's own; otherwise (its weights are gone)
    the best goes on from model_best.pth.tar's record. Each repair is said in one line.

    Raises:
        LogWriteError: the folder cannot be written.
    """
    models = os.path.join(run_folder, "models")
    try:
        for tmp in sorted(glob.glob(os.path.join(glob.escape(models), ".*.tmp"))):
            os.remove(tmp)
            print(f"=> removed {tmp}, left by a save that was killed")
    except OSError as e:
        raise LogWriteError(models, e) from e
    best_acc1, best_epoch = ckpt["best_acc1"], ckpt.get("best_epoch")
    best_path = os.path.join(models, "model_best.pth.tar")
    have = saved_best(best_path)
    if best_epoch is None or (have is not None and have[1] >= best_epoch):
        return best_acc1, best_epoch  # an older checkpoint records no best epoch: nothing to compare
    if best_epoch == ckpt["epoch"]:
        with open(checkpoint_path, "rb") as f:
            write_atomically(best_path, f.read())
        print(f"=> {best_path} was older than epoch {best_epoch}, the best that {checkpoint_path} records: "
              "restored from it")
        return best_acc1, best_epoch
    print(f"=> {best_path} is missing or older than epoch {best_epoch}, the best that {checkpoint_path} records, "
          "whose weights are gone: the best goes on from " + (f"{best_path} (epoch {have[1]})" if have else "here"))
    return have if have is not None else (-math.inf, None)


def newest_saved(saved, run_folder):
    """The newer of ``saved`` (the last checkpoint saved, or None) and ``run_folder``'s
    model_best.pth.tar, which a save that failed halfway may have written after it."""
    best = os.path.join(run_folder, "models", "model_best.pth.tar") if run_folder else None
    epochs = {path: saved_best(path) for path in (saved, best) if path}
    readable = [path for path, record in epochs.items() if record is not None]
    return max(readable, key=lambda path: epochs[path][1], default=saved)  # a tie: saved


def saved_best(path):
    """(best Acc@1, epoch) of the checkpoint file ``path``, or None when it is missing or unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return ckpt["best_acc1"], ckpt["epoch"]
    except Exception:  # missing, cut short or not ours: there is no best file to keep
        return None


# ----------------------------------------------------------------------------------------------
# DistributedDataParallel
# ----------------------------------------------------------------------------------------------

def broadcast_buffers(module):
    """Give every DDP rank rank 0's buffers (BatchNorm statistics). DDP broadcasts them only at
    the start of a training forward, after which each rank updates its own from its batch, and
    the EMA averages each rank's own; so they are broadcast after every epoch."""
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def check_replicas_in_sync(modules):
    """After DDP training every rank must hold rank 0's weights and buffers in each of
    ``modules`` (dict name -> nn.Module); raise if one does not."""
    states = [t for m in modules.values() for t in m.state_dict().values()]
    mismatches = torch.zeros(1, device=states[0].device)
    for t in states:
        ref = t.detach().clone()
        dist.broadcast(ref, src=0)
        mismatches += float(not torch.equal(ref, t))
    dist.all_reduce(mismatches)
    if mismatches.item():
        raise RuntimeError(f"DDP replicas diverged: {int(mismatches.item())} tensors of "
                           f"{', '.join(modules)} differ from rank 0")
    print(f"=> DDP: weights and buffers identical on all {dist.get_world_size()} ranks ({', '.join(modules)})")


if __name__ == "__main__":
    cli()
