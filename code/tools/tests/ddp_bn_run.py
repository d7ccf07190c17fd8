"""torchrun target of test_main.py's BatchNorm DDP test: main.py's command line with a small
BatchNorm CNN standing in for default_cnn_model. Each rank writes the state of every module
that main.py checks at the end (the model, and the EMA with --ema-decay) to
``$DDP_STATE_DIR/rank<R>.pt`` before the check, so that the test can compare them itself."""
import os

import torch
from torch import nn

import main
import student_code


class TinyBNNet(nn.Module):
    """conv (stride 4) -> BatchNorm -> ReLU -> global pool -> linear: (B, 3, H, W) -> (B, num_classes)."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.features = nn.Sequential(conv_op(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def check_and_dump(modules):
    """Write this rank's states, then run main.py's own check."""
    states = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    torch.save(states, os.path.join(os.environ["DDP_STATE_DIR"], f"rank{os.environ['RANK']}.pt"))
    real_check(modules)


student_code.TinyBNNet = TinyBNNet
main.default_cnn_model = TinyBNNet
real_check = main.check_replicas_in_sync
main.check_replicas_in_sync = check_and_dump

if __name__ == "__main__":
    main.cli()
