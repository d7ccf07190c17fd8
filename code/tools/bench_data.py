"""Images per second of the training-data pipelines, side by side in one run.

    python -m tools.bench_data                      # the demo set in ../data (made if missing)
    python -m tools.bench_data --data ../data --workers 1 2 4 --rounds 7

Rows (every one ends in a (3, 128, 128) tensor for the model):
  course          the course's training chain (Scale 144, flip, colour LUT, rotate 15, sized
                  crop, ToTensor, Normalize): get_train_transforms(single_warp=False), the course's
                  own classes (custom_transforms.py keeps them as provided)
  anchor          our pipeline before the one-warp change (Scale 160 with four interpolations,
                  flip, float colour gains, rotate, sized crop, ToTensor, Normalize)
  warp            get_train_transforms(normalize=False): one affine warp, the course's colour
                  gains by one cv2.transform (FastRandomColor), uint8 out
                  (what main.py's loaders run; normalization happens on the device)
  warp-float      get_train_transforms(): the same, normalized float out (the course's main.py)
  torchvision-v2  torchvision.transforms.v2 with the same ops on uint8 tensors
Each row is measured per core on decoded images (transform only) and through the dataset a
loader worker reads: with the JPEG decode, or ``cached`` from the decoded-image cache. Then the
datasets run in DataLoaders of 1, 2, 4 workers (images/s over whole passes after the first
batch), beside a dataset of one constant image that measures the worker processes and batch
transfer alone. Rounds alternate between rows: a row's rate is its median round, its ratio to
``course`` (with decode for the decode and DataLoader rows) the median of the two rows' ratios
within each round. The cost of the image check (decoded_cache.load_checked_image, which reads
every JPEG that main.py decodes) is measured against ``load_image`` alone in pairs run back to
back in alternating order (three times the rounds, a few percent being what is measured): per
core with and without the warp pipeline, and as the build of the train split's decoded cache
in one process. The table goes to ../results/data_pipeline.md.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from unittest import mock

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

import custom_transforms as T
import decoded_cache
from custom_dataloader import MiniPlacesLoader, collate_uint8
from decoded_cache import CheckedImages, build_cache, image_file_problem, load_checked_image, with_decoded_cache
from student_code import IMAGENET_MEAN, IMAGENET_STD, get_train_transforms
from utils import load_image

from tools import REPO_DIR
from tools.benchmarking import command_line, cpu_model, time_ms
from tools.make_demo_data import DEMO_MARKER, make_demo_dataset

FLAGS = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC]
CPU = torch.device("cpu")


class FloatColor(T.FastRandomColor):
    """The anchor's colour step: per-channel gains 1 + U(-r, r) through a float image."""

    def __call__(self, img):
        gains = self.gains().astype(np.float32)  # (3,)
        return np.clip(img.astype(np.float32) * gains, 0, 255).astype(np.uint8)  # (H, W, 3) * (3,)


class TransposeToTensor:
    """ToTensor as our earlier pipeline ran it: a transposing numpy copy
    to (3, H, W), then float in [0, 1]."""

    def __call__(self, img):
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.float32).div_(255.0)


class TensorGain(torch.nn.Module):
    """Per-channel gains 1 + U(-r, r) on a (3, H, W) uint8 tensor, for the torchvision row."""

    def __init__(self, color_range):
        super().__init__()
        self.color_range = color_range

    def forward(self, x):
        gains = torch.empty(3, 1, 1).uniform_(1 - self.color_range, 1 + self.color_range)  # (3, 1, 1)
        return (x * gains).round_().clamp_(0, 255).to(torch.uint8)


def anchor_pipeline():
    return T.Compose([T.Scale(160, FLAGS + [cv2.INTER_AREA]), T.RandomHorizontalFlip(), FloatColor(0.15),
                      T.RandomRotate(15, FLAGS), T.RandomSizedCrop(128, FLAGS + [cv2.INTER_AREA],
                                                                    ratio_range=(3 / 4, 4 / 3)),
                      TransposeToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def torchvision_pipeline():
    return v2.Compose([v2.RandomResizedCrop(128, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
                       v2.RandomRotation(15), v2.RandomHorizontalFlip(), TensorGain(0.15),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


PIPELINES = {"course": lambda: get_train_transforms(single_warp=False), "anchor": anchor_pipeline,
             "warp": lambda: get_train_transforms(normalize=False), "warp-float": get_train_transforms,
             "torchvision-v2": torchvision_pipeline}


class TorchvisionImages(Dataset):
    """MiniPlaces items decoded by torchvision (uint8 (3, H, W)) and transformed by ``transforms``."""

    def __init__(self, loader, transforms):
        self.loader, self.transforms = loader, transforms

    def __len__(self):
        return len(self.loader)

    def __getitem__(self, index):
        relpath, label = self.loader.file_label_list[index]
        data = read_file(os.path.join(self.loader.root_folder, "images", relpath))
        return self.transforms(decode_jpeg(data)), label


def datasets(root, name, cache_dir):
    """(decode dataset, cached dataset or None) of pipeline ``name`` over the train split."""
    transforms = PIPELINES[name]()
    loader = MiniPlacesLoader(root, split="train", transforms=transforms)
    if name == "torchvision-v2":
        return TorchvisionImages(loader, transforms), None
    return loader, with_decoded_cache(loader, cache_dir)


def per_core(items, fn):
    """Images/s of ``fn`` over ``items`` in this process."""
    return len(items) / (time_ms(lambda: [fn(item) for item in items], CPU) / 1000.0)


def with_loader(dataset, workers, batch_size, passes):
    """Images/s of a DataLoader with ``workers`` processes, from the first batch to the end."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_uint8,
                        persistent_workers=True, drop_last=True)
    it = iter(loader)
    next(it)  # the workers are up
    count, start = 0, time.perf_counter()
    for p in range(passes):
        for images, _ in it if p == 0 else iter(loader):  # no new pass queued after the last
            count += images.shape[0]
    return count / (time.perf_counter() - start)


class ConstantImages(Dataset):
    """``length`` items of one constant uint8 (3, 128, 128) image: what the DataLoader's worker
    processes and batch transfer alone deliver (the ceiling of any pipeline on this machine)."""

    def __init__(self, length):
        self.length = length
        self.image = torch.full((128, 128, 3), 100, dtype=torch.uint8)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.image.permute(2, 0, 1), 0  # (3, 128, 128) view of (128, 128, 3)


def build_rate(files, cache_dir, load):
    """Images/s of building the decoded cache of ``files`` ([(relative path, path)]) in this
    process, each image read by ``load``: main.py's checked reader, or ``load_image`` alone (the
    build before the check)."""
    path = decoded_cache.cache_path(cache_dir, "bench")
    with mock.patch.object(decoded_cache, "load_checked_image", load):
        start = time.perf_counter()
        build_cache(files, path, "bench")
        seconds = time.perf_counter() - start
    os.remove(path)
    return len(files) / seconds


def measure(args):
    """{(row, mode): images/s}, per core the median of ``args.rounds`` alternating rounds; ``decoded``
    runs the transforms on decoded images, ``decode`` and ``cached`` read items from the
    datasets a loader worker reads (JPEG decode or the decoded cache, then the transforms)."""
    torch.set_num_threads(1)
    probe = MiniPlacesLoader(args.data, split="train")
    paths = [os.path.join(args.data, "images", rel) for rel, _ in probe.file_label_list[:args.images]]
    decoded = [load_image(p) for p in paths]
    indices = range(len(paths))
    rows, sets = {}, {}
    for name in PIPELINES:
        decode_set, cached_set = sets[name] = datasets(args.data, name, args.cache_dir)
        tf = decode_set.transforms
        if name == "torchvision-v2":
            rows[(name, "decoded")] = ([decode_jpeg(read_file(p)) for p in paths], tf)
        else:
            rows[(name, "decoded")] = (decoded, tf)
            rows[(name, "cached")] = (indices, cached_set.__getitem__)
        rows[(name, "decode")] = (indices, decode_set.__getitem__)
    rows[("decode only", "decode")] = (paths, load_image)
    rows[("check only", "checked")] = ([open(p, "rb").read() for p in paths], image_file_problem)
    first = [("course", "decoded"), ("warp", "decoded"), ("course", "decode"), ("warp", "cached")]
    rows = {key: rows[key] for key in first + [key for key in rows if key not in first]}  # targets back to back
    rates = {}
    for _ in range(args.rounds):
        for key, (items, fn) in rows.items():
            random.seed(0)
            rates.setdefault(key, []).append(per_core(items, fn))
    files = [(rel, os.path.join(args.data, "images", rel)) for rel, _ in probe.file_label_list]
    warp = sets["warp"][0]
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as build_dir:
        pairs = {"decode": (lambda: per_core(paths, load_image), lambda: per_core(paths, load_checked_image)),
                 "warp": (lambda: per_core(indices, warp.__getitem__),
                          lambda: per_core(indices, CheckedImages(warp).__getitem__)),
                 "cache build": (lambda: build_rate(files, build_dir, load_image),
                                 lambda: build_rate(files, build_dir, load_checked_image))}
        for r in range(3 * args.rounds):
            for name, (before, after) in pairs.items():
                for mode, run in (("before", before), ("after", after))[::1 if r % 2 == 0 else -1]:
                    random.seed(0)
                    rates.setdefault((name, mode), []).append(run())
    loaders = [("constant", "items", ConstantImages(len(probe)))]
    for name in ("course", "warp", "torchvision-v2"):
        loaders += [(name, mode, dataset) for mode, dataset in zip(("decode", "cached"), sets[name]) if dataset]
    for workers in args.workers:
        for name, mode, dataset in loaders:
            rates[(name, f"{workers} workers, {mode}")] = [with_loader(dataset, workers, args.batch_size,
                                                                          args.passes)]
    return rates


def ratio(rates, key, ref):
    """Median over rounds of row ``key``'s rate over row ``ref``'s in the same round: the rows of
    a round run side by side, so a machine that speeds up or slows down between rounds moves both."""
    return statistics.median(a / b for a, b in zip(rates[key], rates[ref]))


def target(rates, key, ref):
    """The ratio of ``key`` to ``ref`` with the range of its rounds, e.g. '8.40x; rounds 7.10x to 9.90x'."""
    rounds = [a / b for a, b in zip(rates[key], rates[ref])]
    return f"{ratio(rates, key, ref):.2f}x; rounds {min(rounds):.2f}x to {max(rounds):.2f}x"


def check_cost(rates, checked, unchecked):
    """'+x.x% (rounds a% to b%)': how much longer the rows ``checked`` take than ``unchecked``,
    the median over rounds of the ratio of their rates within a round."""
    rounds = [100.0 * (a / b - 1.0) for a, b in zip(rates[unchecked], rates[checked])]
    return f"{statistics.median(rounds):+.1f}% (rounds {min(rounds):+.1f}% to {max(rounds):+.1f}%)"


def cell(rates, key, ref):
    """'rate (ratio x)' of row ``key``: its median rate over the rounds and its ratio to ``ref``;
    '-' if it did not run."""
    if key not in rates:
        return "-"
    return f"{statistics.median(rates[key]):,.0f} ({ratio(rates, key, ref):.2f}x)"


def table(rates, args, is_demo):
    """The Markdown report of ``rates`` ({(row, mode): images/s of each round})."""
    modes = ["decoded", "decode", "cached"]
    lines = ["# Training-data pipeline throughput", "",
             f"Data: {'the generated demo set (not MiniPlaces)' if is_demo else 'MiniPlaces'} in `{args.data}`, "
             f"first {args.images} train images, 128x128 JPEG. Hardware: {cpu_model()}, {os.cpu_count()} cores "
             f"(1-minute load average at the end: {os.getloadavg()[0]:.2f}). torch {torch.__version__}, "
             f"OpenCV {cv2.__version__}. Command: `{command_line(__file__, args.argv)}` (from `code/`).", "",
             f"## One core, images/s: median of {args.rounds} alternating rounds (x the course's row: median of "
             "the rounds' ratios)", "",
             "| pipeline | decoded images | with JPEG decode | cached (decoded once) |", "|---|---|---|---|"]
    for name in PIPELINES:
        cells = [cell(rates, (name, mode), ("course", "decoded" if mode == "decoded" else "decode")) for mode in modes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [f"| JPEG decode alone | | {statistics.median(rates[('decode only', 'decode')]):,.0f} | |", "",
              "## DataLoader, images/s (x the course's row with decode, same workers)", "",
              "| pipeline | " + " | ".join(f"{w} workers" for w in args.workers) + " |",
              "|---|" + "---|" * len(args.workers)]
    for name, mode in [("constant", "items")] + [(n, m) for n in ("course", "warp", "torchvision-v2")
                                                  for m in ("decode", "cached")]:
            cells = [cell(rates, (name, f"{w} workers, {mode}"), ("course", f"{w} workers, decode"))
                     for w in args.workers]
            if any(c != "-" for c in cells):
                label = "constant image, transfer only" if name == "constant" else f"{name}, {mode}"
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    def rate(key):
        return f"{statistics.median(rates[key]):,.0f}"

    def micros(key):
        return 1e6 / statistics.median(rates[key])

    lines += ["", f"## The image check, images/s: before (load_image alone) and after (main.py's checked read), "
              f"median of {3 * args.rounds} pairs run back to back", "",
              "| step | before | after | time added by the check |", "|---|---|---|---|",
              *(f"| {label} | {rate((name, 'before'))} | {rate((name, 'after'))} | "
                f"{check_cost(rates, (name, 'after'), (name, 'before'))} |"
                for name, label in (("decode", "JPEG decode, one core"),
                                    ("warp", "warp with JPEG decode, one core"),
                                    ("cache build", f"decoded-cache build of the train split "
                                                    f"({len(MiniPlacesLoader(args.data, split='train'))} images, "
                                                    "one process)"))), "",
              f"The check alone, on a file's bytes in memory: {micros(('check only', 'checked')):.1f} us per image, "
              f"against {micros(('decode only', 'decode')):.0f} us for its decode (medians). The checked read "
              "passes the bytes it read to the same decoder (cv2.imdecode), so the file is read once."]
    lines += ["", "The course row is the course's own chain: get_train_transforms(single_warp=False), on the "
              "course's classes (custom_transforms.py keeps them as provided). The constant-image row is what the "
              "DataLoader's "
              "worker processes and batch transfer alone deliver on this machine.",
              "", f"Targets: warp >= 5x the course per core on decoded images (measured "
              f"{target(rates, ('warp', 'decoded'), ('course', 'decoded'))}); the cached loader path >= 8x the "
              f"course per core with decode (measured {target(rates, ('warp', 'cached'), ('course', 'decode'))}).",
              ""]
    return "\n".join(lines)


def get_args_parser():
    parser = argparse.ArgumentParser(description="Training-data pipeline throughput, side by side")
    parser.add_argument("--data", default=os.path.join(REPO_DIR, "data"), help="dataset folder (demo set made if empty)")
    parser.add_argument("--cache-dir", default=None, help="decoded-cache folder (default: DATA/cache)")
    parser.add_argument("--images", default=600, type=int, help="images per per-core measurement")
    parser.add_argument("--rounds", default=7, type=int, help="alternating rounds; each row's median counts")
    parser.add_argument("--workers", default=[1, 2, 4], type=int, nargs="+", help="DataLoader worker counts")
    parser.add_argument("--batch-size", default=64, type=int, help="DataLoader batch size")
    parser.add_argument("--passes", default=1, type=int, help="passes over the split per DataLoader measurement")
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "results", "data_pipeline.md"))
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    args.cache_dir = args.cache_dir or os.path.join(args.data, "cache")
    if not os.path.isfile(os.path.join(args.data, "train.txt")):
        print(f"=> no dataset in {args.data}: generating the demo set")
        make_demo_dataset(args.data)
    report = table(measure(args), args, os.path.isfile(os.path.join(args.data, DEMO_MARKER)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report)
    print(report)
    print(f"=> wrote {args.out}")


if __name__ == "__main__":
    main()
