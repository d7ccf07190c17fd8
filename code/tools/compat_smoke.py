"""A seconds-long, main.py-free training check; compat_check.py runs it in each PyTorch's venv.

    python -m tools.compat_smoke      # from a code/ folder: checks the student_code.py found there

Generates a tiny demo set (4 classes, 4 training images each), loads one batch of 4 through
MiniPlacesLoader and get_train_transforms(), then:
  - SimpleNet, the improved CNN with nn.Conv2d and with CustomConv2d, and the ViT each take
    2 SGD steps on the batch; every loss must be finite;
  - default_attack(criterion).perturb(model, batch) on SimpleNet must return a finite batch of the
    same shape, changed, and within the attack's epsilon of the clean batch.
Prints one line per part; the last line is "smoke: all passed" or names the first failure.
Exit status 1 if any part fails.
"""
import sys
import tempfile
import time
import traceback

import torch
from torch import nn

from custom_dataloader import MiniPlacesLoader
from student_code import (CustomConv2d, SimpleNet, default_attack, default_cnn_model, default_vit_model,
                          get_train_transforms)

from tools.make_demo_data import make_demo_dataset

STEPS, BATCH = 2, 4


def demo_batch():
    """One (4, 3, 128, 128) training batch of the demo set and its (4,) labels."""
    with tempfile.TemporaryDirectory() as root:
        make_demo_dataset(root, num_classes=4, train_per_class=4, val_per_class=1, seed=0)
        dataset = MiniPlacesLoader(root, split="train", transforms=get_train_transforms())
        return next(iter(torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)))


def train(model, x, y):
    """Take STEPS SGD steps on (x, y); returns the losses, all of which must be finite."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(STEPS):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite loss: {losses}"
    return f"losses {' '.join(f'{v:.3f}' for v in losses)}"


def attack(model, x):
    """Run default_attack on x; the result must be a changed, finite batch in the epsilon ball."""
    pgd = default_attack(nn.CrossEntropyLoss())
    adv = pgd.perturb(model.eval(), x)
    distance = (adv - x).abs().max().item()
    assert adv.shape == x.shape and torch.isfinite(adv).all(), "not a finite batch of the input's shape"
    assert 0 < distance <= pgd.epsilon + 1e-5, f"max |adv - x| = {distance:.4g}, epsilon {pgd.epsilon}"
    return f"max |adv - x| = {distance:.4f} <= epsilon {pgd.epsilon}"


def main():
    torch.manual_seed(0)
    x, y = demo_batch()
    simple_net = SimpleNet()
    parts = [
        ("SimpleNet", lambda: train(simple_net, x, y)),
        ("CNN nn.Conv2d", lambda: train(default_cnn_model(), x, y)),
        ("CNN CustomConv2d", lambda: train(default_cnn_model(conv_op=CustomConv2d), x, y)),
        ("ViT", lambda: train(default_vit_model(), x, y)),
        ("PGD", lambda: attack(simple_net, x)),
    ]
    failures = []
    for name, run in parts:
        start = time.perf_counter()
        try:
            result = run()
            print(f"ok   {name} ({time.perf_counter() - start:.1f} s): {result}", flush=True)
        except Exception as error:  # report every part, then fail
            traceback.print_exc()
            failures.append(f"{name}: {type(error).__name__}: {error}")
            print(f"FAIL {failures[-1]}", flush=True)
    if failures:
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"smoke: FAILED {failures[0]}{more}")
        return 1
    print("smoke: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
