"""Compare two checkpoints on the same validation images, with a paired bootstrap.

    python -m tools.compare_checkpoints ../data A.pth.tar B.pth.tar [-o ../results/x.md]

Prints each model's top-1 accuracy, the difference B - A and its 95% confidence interval from
a paired bootstrap over the validation images (both models judged on the same resampled
images), so one seed of each model still gives an honest margin of error.
"""
import argparse
import os
import sys

import torch

import main as driver

from tools import REPO_DIR


@torch.no_grad()
def correct_per_image(path, data_folder, workers, device):
    """(model_arch, bool tensor (N,) on the CPU): which val images the checkpoint's model gets
    right, evaluated in float32 on ``device``."""
    ckpt = driver.load_checkpoint(path)
    model = driver.build_model(ckpt["model_config"])
    driver.load_model_state(model, ckpt["state_dict"], path)
    model.to(device).eval()
    args = driver.get_args_parser().parse_args([data_folder, "-j", str(workers)])
    args.rank, args.world_size = 0, 1
    _, loader = driver.build_loaders(args, device, need_train=False)
    batches = (driver.to_device(images, target, device, channels_last=False) for images, target in loader)
    hits = [model(images).argmax(1).eq(target).cpu() for images, target in batches]  # to_device normalizes uint8
    return ckpt["model_arch"], torch.cat(hits)


def shown_path(path):
    """``path`` relative to the repository root (no absolute paths in results/)."""
    return os.path.relpath(os.path.abspath(path), REPO_DIR)


def paired_bootstrap(hits_a, hits_b, samples=10000, seed=0):
    """(difference of accuracies in points, (low, high) 95% interval) of B - A."""
    g = torch.Generator().manual_seed(seed)
    n = hits_a.numel()
    idx = torch.randint(0, n, (samples, n), generator=g)  # (samples, N) resampled image ids
    diffs = (hits_b[idx].float().mean(1) - hits_a[idx].float().mean(1)) * 100  # (samples,)
    low, high = torch.quantile(diffs, torch.tensor([0.025, 0.975])).tolist()
    return (hits_b.float().mean() - hits_a.float().mean()).item() * 100, (low, high)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_folder")
    parser.add_argument("checkpoint_a")
    parser.add_argument("checkpoint_b")
    parser.add_argument("-o", "--output", help="also write the result as Markdown to this file")
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device index (CPU when no CUDA)")
    args = parser.parse_args(argv)
    try:
        is_demo = driver.check_data_folder(args.data_folder)
        device = driver.resolve_device(args.gpu)
        name_a, hits_a = correct_per_image(args.checkpoint_a, args.data_folder, args.workers, device)
        name_b, hits_b = correct_per_image(args.checkpoint_b, args.data_folder, args.workers, device)
    except driver.UserError as e:
        sys.exit(f"error: {e}")
    diff, (low, high) = paired_bootstrap(hits_a, hits_b)
    data = "the demo set (synthetic, not MiniPlaces)" if is_demo else "MiniPlaces val"
    text = (f"Top-1 on {data}, {hits_a.numel()} images: {name_a} {hits_a.float().mean() * 100:.1f}%, "
            f"{name_b} {hits_b.float().mean() * 100:.1f}%; difference {diff:+.1f} points, "
            f"95% paired-bootstrap interval [{low:+.1f}, {high:+.1f}] (10,000 resamples).\n")
    print(text, end="")
    if args.output:
        with open(args.output, "w") as f:
            f.write(f"A: `{shown_path(args.checkpoint_a)}`  \nB: `{shown_path(args.checkpoint_b)}`\n\n{text}")


if __name__ == "__main__":
    main()
