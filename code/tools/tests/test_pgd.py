"""Part III: PGDAttack towards the least-confident label, and the TensorBoard helpers.

The attack is checked on a small CNN (with BatchNorm and dropout, so that the model's mode
matters) that this module trains itself on faint oriented stripes, on CPU, in about a second.
"""
import copy
import pickle
import warnings
import weakref

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import student_code
from student_code import (IMAGENET_MEAN, IMAGENET_STD, CustomConv2d, PGDAttack, SimpleNet, default_attack,
                          default_visfunction, vis_grid)
from visualization import vis_adversarial

from tools.tests.stripes import stripe_images

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)  # (1, 3, 1, 1)
LOW = (0.0 - MEAN) / STD  # (1, 3, 1, 1): valid range of a normalized [0, 1] image
HIGH = (1.0 - MEAN) / STD
EPS = 0.1


def normalize(pixels):
    return (pixels - MEAN) / STD


class TinyNet(nn.Module):
    """conv-BN-ReLU-pool, conv-BN-ReLU, global pool, dropout, linear: (B, 3, H, W) -> (B, K)."""

    def __init__(self, num_classes=4, width=8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width, num_classes),
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads; on this busy 2-core machine two threads ran the
    training below in 22 s against 1.3 s for one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread):
    """(model in eval mode, normalized validation images (128, 3, 16, 16), labels (128,))."""
    torch.manual_seed(0)
    pixels, labels = stripe_images(512, seed=0)
    x = normalize(pixels)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    val_pixels, val_labels = stripe_images(128, seed=1)
    return model, normalize(val_pixels), val_labels


def reference_pgd(model, x0, num_steps, step_size, epsilon, random_start=False):
    """Textbook least-likely PGD: target from a separate clean forward, delta clipped to the
    ball, then the image clipped to the valid range (as Madry et al. and torchattacks write it)."""
    with torch.no_grad():
        target = model(x0).argmin(dim=1)
    x = x0.clone()
    if random_start:
        x = (x0 + torch.empty_like(x0).uniform_(-epsilon, epsilon)).clamp(LOW.to(x0), HIGH.to(x0))
    for _ in range(num_steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), target)
        grad, = torch.autograd.grad(loss, x)
        x = x.detach() - step_size * grad.sign()
        delta = (x - x0).clamp(-epsilon, epsilon)
        x = (x0 + delta).clamp(LOW.to(x0), HIGH.to(x0))
    return x


def test_perturbation_stays_in_the_ball_and_the_valid_range(trained):
    model, x, _ = trained
    pixels = x * STD + MEAN
    pixels[:8, :, :4] = 0.0  # saturated rows, so that the range clip has to act
    pixels[8:16, :, -4:] = 1.0
    x = normalize(pixels)
    for random_start in (False, True):
        adv = PGDAttack(nn.CrossEntropyLoss(), epsilon=EPS, random_start=random_start).perturb(model, x)
        assert adv.shape == x.shape and adv.dtype == x.dtype
        assert ((adv - x).abs() <= EPS + 1e-6).all()
        assert (adv >= LOW - 1e-6).all() and (adv <= HIGH + 1e-6).all()
        assert (adv - x).abs().max() > 0.9 * EPS  # the budget is used, not left at zero
    assert (adv[:8, :, :4] - LOW).abs().max() <= EPS + 1e-6


def test_least_confident_label_becomes_more_likely(trained):
    model, x, _ = trained
    with torch.no_grad():
        clean_prob = model(x).softmax(dim=1)  # (B, K)
    target = clean_prob.argmin(dim=1)
    adv = default_attack(nn.CrossEntropyLoss()).perturb(model, x)
    with torch.no_grad():
        adv_prob = model(adv).softmax(dim=1)
    rows = torch.arange(len(x))
    assert (adv_prob[rows, target] > clean_prob[rows, target]).all()
    assert (adv_prob.argmax(dim=1) == target).float().mean() >= 0.9


def test_accuracy_drops_sharply(trained):
    model, x, labels = trained
    adv = default_attack(nn.CrossEntropyLoss()).perturb(model, x)
    with torch.no_grad():
        clean_acc = (model(x).argmax(dim=1) == labels).float().mean().item()
        adv_acc = (model(adv).argmax(dim=1) == labels).float().mean().item()
    assert clean_acc >= 0.95
    assert adv_acc <= 0.1


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("random_start", [False, True])
def test_matches_reference_pgd(trained, reduction, random_start):
    model, x, _ = trained
    model64 = TinyNet().double()
    model64.load_state_dict(model.state_dict())
    model64.eval()
    x64 = x[:32].double()
    attack = PGDAttack(nn.CrossEntropyLoss(reduction=reduction), num_steps=7, step_size=0.03,
                       epsilon=EPS, random_start=random_start)
    torch.manual_seed(5)
    got = attack.perturb(model64, x64)
    torch.manual_seed(5)
    want = reference_pgd(model64, x64, num_steps=7, step_size=0.03, epsilon=EPS, random_start=random_start)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_input_and_grads_are_left_untouched(trained, mode):
    model, x, _ = trained
    model.train(mode == "train")
    params = list(model.parameters())
    for i, p in enumerate(params):  # half of the grads preset, half absent
        p.grad = torch.randn_like(p) if i % 2 == 0 else None
    grads_before = [None if p.grad is None else p.grad.clone() for p in params]
    buffers_before = [b.clone() for b in model.buffers()]
    modes_seen = []
    hook = model.register_forward_pre_hook(lambda m, args: modes_seen.append(m.training))
    x = x.clone().requires_grad_(False)
    x_before, version_before = x.clone(), x._version
    try:
        adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=4).perturb(model, x)
    finally:
        hook.remove()
    assert modes_seen == [False] * 4  # eval mode only; the first step reuses the clean forward
    assert model.training == (mode == "train")
    for p, before in zip(params, grads_before):
        assert (p.grad is None) if before is None else torch.equal(p.grad, before)
        p.grad = None
    for b, before in zip(model.buffers(), buffers_before):
        assert torch.equal(b, before)  # BatchNorm running statistics
    assert torch.equal(x, x_before) and x._version == version_before and not x.requires_grad
    assert not adv.requires_grad and adv.grad_fn is None
    model.eval()


def test_parameters_are_frozen_during_the_attack_and_restored(trained):
    model, x, _ = trained
    params = list(model.parameters())
    params[0].requires_grad_(False)  # a frozen layer stays frozen
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append([p.requires_grad for p in params]))
    try:
        PGDAttack(nn.CrossEntropyLoss(), num_steps=2).perturb(model, x[:8])
        assert seen and all(not any(flags) for flags in seen), "no parameter requires grad while attacked"
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)

        def failing_loss(logits, target):
            raise RuntimeError("loss failed")

        with pytest.raises(RuntimeError, match="loss failed"):
            PGDAttack(failing_loss, num_steps=2).perturb(model, x[:8])
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1), "restored on errors"
    finally:
        hook.remove()
        params[0].requires_grad_(True)


def test_custom_conv_computes_no_weight_gradients_during_the_attack(monkeypatch):
    """CustomConv2DFunction decides at forward time (needs_input_grad) which gradients its backward
    computes; the attack wants only the input's."""
    real_backward = student_code.CustomConv2DFunction.backward
    weight_grads = []

    def counting_backward(ctx, grad_output):
        grads = real_backward(ctx, grad_output)
        weight_grads.append(grads[1] is not None)
        return grads

    monkeypatch.setattr(student_code.CustomConv2DFunction, "backward", staticmethod(counting_backward))
    torch.manual_seed(0)
    model = SimpleNet(conv_op=CustomConv2d, num_classes=4).eval()
    x = normalize(torch.rand(2, 3, 32, 32))
    adv = PGDAttack(nn.CrossEntropyLoss(), num_steps=2).perturb(model, x)
    assert len(weight_grads) == 2 * 7 and not any(weight_grads), "2 steps x 7 convs, input gradients only"
    assert not torch.equal(adv, x)
    weight_grads.clear()
    F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()  # control: training needs them
    assert weight_grads == [True] * 7


def test_attack_copies_and_pickles(trained):
    model, x, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=1)
    for clone in (copy.deepcopy(attack), pickle.loads(pickle.dumps(attack))):
        assert torch.equal(clone.perturb(model, x[:2]), attack.perturb(model, x[:2]))


def test_works_inside_no_grad_and_never_aliases_the_input(trained):
    model, x, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=3)
    with torch.no_grad():
        inside = attack.perturb(model, x)
    torch.testing.assert_close(inside, attack.perturb(model, x), rtol=0, atol=0)
    unchanged = PGDAttack(nn.CrossEntropyLoss(), num_steps=0).perturb(model, x)
    assert torch.equal(unchanged, x) and unchanged.data_ptr() != x.data_ptr()


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def peak_saved_tensors(run):
    """Largest number of tensors that autograd graphs held alive at once while ``run()`` ran."""
    live, peak = weakref.WeakSet(), [0]

    def pack(tensor):
        saved = _Saved(tensor)
        live.add(saved)
        peak[0] = max(peak[0], len(live))
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved.tensor):
        run()
    return peak[0]


def leaky_pgd(model, x0, num_steps, step_size=0.01, epsilon=EPS):
    """A wrong PGD that keeps the graph across steps (no detach): the control of the memory test."""
    with torch.no_grad():
        target = model(x0).argmin(dim=1)
    x = x0.clone().requires_grad_(True)
    for _ in range(num_steps):
        grad, = torch.autograd.grad(F.cross_entropy(model(x), target), x, retain_graph=True)
        x = torch.min(torch.max(x - step_size * grad.sign(), x0 - epsilon), x0 + epsilon)
    return x


def test_memory_does_not_grow_with_num_steps(trained):
    model, x, _ = trained
    x = x[:16]
    short, long = (peak_saved_tensors(lambda n=n: PGDAttack(nn.CrossEntropyLoss(), num_steps=n).perturb(model, x))
                   for n in (2, 12))
    assert short == long
    leak_short = peak_saved_tensors(lambda: leaky_pgd(model, x, 2))
    leak_long = peak_saved_tensors(lambda: leaky_pgd(model, x, 12))
    assert leak_long > leak_short  # the measurement does see a graph kept across steps


def test_random_start_draws_a_point_of_the_ball(trained):
    model, x, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=0, epsilon=EPS, random_start=True)
    torch.manual_seed(3)
    first = attack.perturb(model, x)
    torch.manual_seed(3)
    assert torch.equal(first, attack.perturb(model, x))
    delta = first - x
    assert (delta.abs() <= EPS + 1e-6).all()
    inside = (x - EPS > LOW) & (x + EPS < HIGH)  # where the range clip cannot act
    assert abs(delta[inside].abs().mean().item() - EPS / 2) < 0.01  # uniform on [-eps, eps]


def test_random_start_stays_in_the_valid_range(trained):
    """num_steps=0 returns the random start itself: no step's projection hides a missing clamp."""
    model, x, _ = trained
    pixels = x * STD + MEAN
    pixels[:, :, :4] = 0.0  # black and white rows: noise of either sign would leave the range
    pixels[:, :, -4:] = 1.0
    x = normalize(pixels)
    torch.manual_seed(4)
    start = PGDAttack(nn.CrossEntropyLoss(), num_steps=0, epsilon=EPS, random_start=True).perturb(model, x)
    assert (start >= LOW - 1e-6).all() and (start <= HIGH + 1e-6).all()
    assert ((start - x).abs() <= EPS + 1e-6).all()
    assert (start[:, :, :4] > LOW + EPS / 10).float().mean() > 0.4, "the black rows still move, upwards"


def test_default_attack_keeps_the_starter_settings():
    attack = default_attack(nn.CrossEntropyLoss())
    assert isinstance(attack, PGDAttack)
    assert (attack.num_steps, attack.step_size, attack.epsilon, attack.random_start) == (10, 0.01, 0.1, False)


@pytest.mark.parametrize("kwargs", [
    {"num_steps": -1}, {"num_steps": 2.5}, {"step_size": 0.0}, {"step_size": float("nan")},
    {"step_size": float("inf")}, {"epsilon": -0.1}, {"epsilon": float("inf")},
    {"mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)}, {"std": (0.2, 0.0, 0.2)},
])
def test_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        PGDAttack(nn.CrossEntropyLoss(), **kwargs)


def test_rejects_bad_calls(trained):
    model, x, _ = trained
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=1)
    with pytest.raises(ValueError, match="floating tensor"):
        attack.perturb(model, x[0])
    with pytest.raises(ValueError, match="floating tensor"):
        attack.perturb(model, x[:, :1])
    with pytest.raises(ValueError, match="valid range"):
        attack.perturb(model, x * 0 + 255.0)  # raw pixels, not normalized
    with pytest.raises(TypeError):
        attack.perturb(lambda t: t, x)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        attack.perturb(model, x)


def tile(grid, index, n_per_row, size, pad=2):
    """Image ``index`` of a make_grid mosaic with ``n_per_row`` images of ``size`` per row."""
    top = pad + (index // n_per_row) * (size + pad)
    left = pad + (index % n_per_row) * (size + pad)
    return grid[:, top:top + size, left:left + size]


def test_vis_grid_is_the_courses_mosaic():
    pixels = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    grid = vis_grid(normalize(pixels), n_rows=2)
    assert default_visfunction is vis_grid
    assert grid.shape == (3, 2 + 3 * 10, 2 + 2 * 10)  # 3 rows of 2 images, 2-pixel padding
    assert grid.min() >= 0 and grid.max() <= 1, "stretched to [0, 1] by make_grid(normalize=True)"


def test_vis_adversarial_returns_photos_and_an_amplified_difference():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(4, 3, 8, 8, generator=g) * 0.9 + 0.05
    adv_pixels = pixels + 0.02 * torch.randn(4, 3, 8, 8, generator=g).clamp(-1, 1)
    org, adv, diff = vis_adversarial(normalize(pixels), normalize(adv_pixels), n_rows=4)
    change = adv_pixels - pixels
    expected_diff = 0.5 + 0.5 * change / change.abs().max()
    for i in range(4):
        torch.testing.assert_close(tile(org, i, 4, 8), pixels[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(tile(adv, i, 4, 8), adv_pixels[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(tile(diff, i, 4, 8), expected_diff[i], atol=1e-4, rtol=0)
    assert diff.min() >= 0 and diff.max() <= 1 and (diff.max() > 0.99 or diff.min() < 0.01)
    _, _, same = vis_adversarial(normalize(pixels), normalize(pixels))
    assert torch.equal(tile(same, 0, 4, 8), torch.full((3, 8, 8), 0.5))
    with pytest.raises(ValueError, match="shapes differ"):
        vis_adversarial(normalize(pixels), normalize(pixels[:2]))


def cuda_model_and_batch(trained):
    model, x, _ = trained
    return copy.deepcopy(model).cuda(), x.cuda()


def host_syncs(run):
    """Number of CUDA host synchronizations while ``run()`` runs (sync debug mode "warn")."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.cuda
def test_cuda_attack_syncs_the_host_only_in_its_first_call(trained):
    model, x = cuda_model_and_batch(trained)
    attacks = [PGDAttack(nn.CrossEntropyLoss(), num_steps=n, random_start=True) for n in (1, 6)]
    first = host_syncs(lambda: attacks[1].perturb(model, x))  # also the first kernels, cuDNN
    short, long = (host_syncs(lambda a=a: a.perturb(model, x)) for a in attacks)
    assert first > 0 and short > 0 and long == 0, "the range check once per device: none per later call or step"
    adv = attacks[1].perturb(model, x)
    assert ((adv - x).abs() <= EPS + 1e-6).all()
    model.cpu()


@pytest.mark.cuda
def test_cuda_range_check_raises_at_once(trained):
    model, x = cuda_model_and_batch(trained)
    attack = PGDAttack(nn.CrossEntropyLoss(), num_steps=1)
    with pytest.raises(ValueError, match="valid range"):
        attack.perturb(model, x * 0 + 255.0)  # raw pixels, not normalized
    attack.perturb(model, x)
    model.cpu()
