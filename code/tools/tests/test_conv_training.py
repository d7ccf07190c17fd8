"""Training with CustomConv2d follows training with nn.Conv2d step for step."""
import torch
from torch import nn
from torch.utils.data import DataLoader

from custom_dataloader import MiniPlacesLoader
from student_code import CustomConv2d, SimpleNet, get_val_transforms

NUM_CLASSES = 100
STEPS = 3


def train_losses(model, loader):
    """Losses of STEPS SGD steps (lr 0.05, momentum 0.9) over the loader's batches."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for images, labels in loader:
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) == STEPS:
            return losses
    raise AssertionError(f"the demo set gave only {len(losses)} batches, need {STEPS}")


def test_custom_conv_training_matches_native(demo_data):
    dataset = MiniPlacesLoader(demo_data, split="train", num_classes=NUM_CLASSES, transforms=get_val_transforms())
    batches = list(DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)))

    torch.manual_seed(0)
    native = SimpleNet(conv_op=nn.Conv2d, num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    custom = SimpleNet(conv_op=CustomConv2d, num_classes=NUM_CLASSES)
    for name, param in custom.named_parameters():
        torch.testing.assert_close(param, native.state_dict()[name], rtol=0, atol=0)

    native_losses = train_losses(native, batches)
    custom_losses = train_losses(custom, batches)
    torch.testing.assert_close(torch.tensor(custom_losses), torch.tensor(native_losses), rtol=1e-4, atol=1e-5)
    assert native_losses[0] != native_losses[-1]  # the steps changed the weights
    for name, param in custom.named_parameters():
        torch.testing.assert_close(param, native.state_dict()[name], rtol=1e-3, atol=1e-5)
