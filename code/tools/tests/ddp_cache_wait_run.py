"""torchrun target of test_ddp_cache_wait.py: main.py's process group with a timeout of TIMEOUT_S seconds (NCCL's
10 minutes, scaled down) and a first build of the decoded training cache on rank 0 that takes BUILD_S seconds
longer than usual; then every rank builds main.py's loaders (the cache step included) and reads a batch."""
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

import main

real_init, real_cache = dist.init_process_group, main.with_decoded_cache


def init_with_short_timeout(*args, **kwargs):
    kwargs["timeout"] = datetime.timedelta(seconds=float(os.environ["TIMEOUT_S"]))
    return real_init(*args, **kwargs)


def slow_build(dataset, cache_dir, workers=0, build=True):
    if build and dataset.split == "train":
        time.sleep(float(os.environ["BUILD_S"]))
    return real_cache(dataset, cache_dir, workers=workers, build=build)


dist.init_process_group = init_with_short_timeout
main.with_decoded_cache = slow_build

if __name__ == "__main__":
    args = main.get_args_parser().parse_args(sys.argv[1:])
    main.init_distributed(args)
    start = time.time()
    train_loader, val_loader = main.build_loaders(args, torch.device("cpu"))
    images, _ = next(iter(train_loader))
    sys.stdout.write(f"rank {args.rank}: loaders after {time.time() - start:.1f} s, a batch of {images.shape[0]}, "
                     f"{type(train_loader.dataset.dataset).__name__}\n")  # print is rank 0's only
    dist.destroy_process_group()
