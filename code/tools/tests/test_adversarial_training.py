"""Adversarial training inside ``forward`` (AdversarialTrainingMixin, adopted by SimpleNet).

A BatchNorm CNN adopts the mixin in one line, as the improved CNN will; its training forward is
compared with an independent reference: a copy of the model without the hook, attacked by a
textbook PGD in eval mode, then run once in training mode on the mixed batch.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from student_code import IMAGENET_MEAN, IMAGENET_STD, AdversarialTrainingMixin, PGDAttack, SimpleNet

from tools.tests.stripes import stripe_images

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)
LOW = (0.0 - MEAN) / STD  # (1, 3, 1, 1): valid range of a normalized [0, 1] image
HIGH = (1.0 - MEAN) / STD
EPS = 0.1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine two threads were many
    times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def stripe_batch(n, num_classes=4, size=16, seed=0):
    """Normalized stripe images (n, 3, size, size) and labels (n,), see stripes.stripe_images."""
    pixels, labels = stripe_images(n, num_classes, size, seed)
    return (pixels - MEAN) / STD, labels


class TinyBNNet(AdversarialTrainingMixin, nn.Module):
    """A BatchNorm CNN with the hook: (B, 3, H, W) -> (B, K)."""

    def __init__(self, num_classes=4, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.adversarial_mix(x)  # (B, 3, H, W)
        return self.head(self.features(x))


def reference_pgd(model, x0, num_steps, step_size, epsilon):
    """Textbook least-likely PGD on a model in eval mode (target from a separate clean forward)."""
    with torch.no_grad():
        target = model(x0).argmin(dim=1)
    x = x0.clone()
    for _ in range(num_steps):
        x.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x), target), x)
        x = x0 + (x.detach() - step_size * grad.sign() - x0).clamp(-epsilon, epsilon)
        x = x.clamp(LOW, HIGH)
    return x


def warmed_up(model, steps=3):
    """Give BatchNorm non-trivial running statistics with a few clean training forwards."""
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(stripe_batch(16, seed=10 + i)[0])
    return model


def inputs_seen_by(module, model, x):
    """Inputs that ``module`` received during one training forward of ``model``, as
    [(model.training, input)] in call order."""
    seen = []
    hook = module.register_forward_pre_hook(lambda m, args: seen.append((model.training, args[0].detach().clone())))
    try:
        model.train()
        model(x)
    finally:
        hook.remove()
    return seen


def test_off_by_default_and_simplenet_unchanged():
    torch.manual_seed(0)
    model = SimpleNet(conv_op=nn.Conv2d, num_classes=100)
    assert model.adv_attack is None
    assert all(k.startswith(("features.", "fc.")) for k in model.state_dict())
    x = stripe_batch(4, size=32)[0]
    model.train()
    with torch.no_grad():
        want = model.fc(model.avgpool(model.features(x)).flatten(1))
        assert torch.equal(model(x), want)


def test_training_forward_matches_reference_and_keeps_batchnorm_clean():
    torch.manual_seed(0)
    model = warmed_up(TinyBNNet())
    reference = copy.deepcopy(model)  # no hook enabled
    model.enable_adversarial_training(adv_ratio=0.5, num_steps=3, epsilon=EPS)
    x, labels = stripe_batch(8, seed=1)

    reference.eval()
    x_adv = reference_pgd(reference, x[:4], num_steps=3, step_size=2.5 * EPS / 3, epsilon=EPS)
    reference.train()
    want = reference(torch.cat([x_adv, x[4:]]))
    model.train()
    got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for (name, b), b_ref in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b, b_ref, rtol=1e-5, atol=1e-6, msg=f"buffer {name}")  # one update

    assert all(p.grad is None for p in model.parameters())  # the attack left no gradients
    F.cross_entropy(got, labels).backward()
    F.cross_entropy(want, labels).backward()
    for p, p_ref in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5)


def test_attack_runs_in_eval_mode_without_recursion():
    model = warmed_up(TinyBNNet())
    model.enable_adversarial_training(adv_ratio=0.5, num_steps=4)
    modes = []
    hook = model.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    try:
        model.train()
        model(stripe_batch(8)[0])
    finally:
        hook.remove()
    assert modes == [True] + [False] * 4  # the training call, then one eval call per PGD step
    assert model.training


@pytest.mark.parametrize("adv_ratio, num_adv", [(0.25, 2), (0.5, 4), (0.3125, 3), (1.0, 8)])
def test_mix_ratio_replaces_the_first_samples(adv_ratio, num_adv):
    model = warmed_up(TinyBNNet())
    model.enable_adversarial_training(adv_ratio=adv_ratio, num_steps=2)
    x = stripe_batch(8)[0]
    seen = inputs_seen_by(model.features, model, x)
    trained_on = [inp for training, inp in seen if training]
    assert len(trained_on) == 1
    assert all(inp.shape[0] == num_adv for training, inp in seen if not training)  # attacks only those
    batch = trained_on[0]
    assert torch.equal(batch[num_adv:], x[num_adv:])
    changed = (batch[:num_adv] - x[:num_adv]).flatten(1).abs().amax(dim=1)  # (num_adv,)
    assert (changed > 0.5 * EPS).all() and (changed <= EPS + 1e-6).all()


def test_eval_forward_ignores_the_hook():
    model = warmed_up(TinyBNNet())
    x = stripe_batch(8)[0]
    model.eval()
    with torch.no_grad():
        clean = model(x)
        model.enable_adversarial_training(adv_ratio=1.0)
        assert torch.equal(model(x), clean)


def test_enable_sets_the_attack():
    model = TinyBNNet()
    model.enable_adversarial_training(adv_ratio=0.5, num_steps=4, epsilon=0.05)
    attack = model.adv_attack
    assert (model.adv_ratio, attack.num_steps, attack.epsilon, attack.random_start) == (0.5, 4, 0.05, False)
    assert attack.step_size == pytest.approx(2.5 * 0.05 / 4), "steps that can reach the border of the ball"
    model.enable_adversarial_training(num_steps=2, step_size=0.01, random_start=True)
    assert (model.adv_attack.step_size, model.adv_attack.random_start) == (0.01, True)


@pytest.mark.parametrize("kwargs", [{"adv_ratio": 0.0}, {"adv_ratio": 1.5}, {"adv_ratio": -0.1},
                                    {"num_steps": 0}, {"epsilon": -1.0}])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        TinyBNNet().enable_adversarial_training(**kwargs)


def test_simplenet_trains_on_pgd_samples():
    torch.manual_seed(0)
    model = SimpleNet(num_classes=4)
    model.enable_adversarial_training(adv_ratio=0.5, num_steps=2)
    x, labels = stripe_batch(4, size=32)
    seen = inputs_seen_by(model.features, model, x)
    assert [training for training, _ in seen] == [False, False, True]
    batch = seen[-1][1]
    assert torch.equal(batch[2:], x[2:]) and not torch.equal(batch[:2], x[:2])
    assert (batch - x).abs().max() <= EPS + 1e-6
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    loss = F.cross_entropy(model(x), labels)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None for p in model.parameters())


def robust_accuracy(model, x, labels):
    """Accuracy under the evaluation attack (``main.py -a``: 10 steps, step 0.01, epsilon 0.1)."""
    adv = PGDAttack(nn.CrossEntropyLoss()).perturb(model, x)
    with torch.no_grad():
        return (model(adv).argmax(dim=1) == labels).float().mean().item()


def test_adversarial_training_buys_robustness():
    x, labels = stripe_batch(512, seed=0)
    x_val, labels_val = stripe_batch(128, seed=1)
    torch.manual_seed(0)
    clean_model = TinyBNNet()
    adv_model = copy.deepcopy(clean_model)
    adv_model.enable_adversarial_training(adv_ratio=0.5, num_steps=3, epsilon=EPS)
    for model in (clean_model, adv_model):
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        model.train()
        for _ in range(200):
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = F.cross_entropy(model(x[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    with torch.no_grad():
        adv_clean_acc = (adv_model(x_val).argmax(dim=1) == labels_val).float().mean().item()
    assert adv_clean_acc >= 0.85
    assert robust_accuracy(clean_model, x_val, labels_val) <= 0.2
    assert robust_accuracy(adv_model, x_val, labels_val) >= 0.45
