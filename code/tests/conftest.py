"""Shared fixtures: code/ on sys.path, a tiny generated demo set, CPU threads; the ``cuda``
marker (tests that need a CUDA device: skipped without one, run by ``pytest -m cuda``, as
gpu_check.sh does)."""
import os
import sys

import pytest
import torch

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)

torch.set_num_threads(min(2, torch.get_num_threads()))

collect_ignore = ["course_release"]  # the course's files, test data: its test_conv.py is no test of this suite


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one; bash gpu_check.sh runs them)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny demo set in the MiniPlaces layout: 4 classes, 16 train / 4 val images each."""
    from make_demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(str(root), num_classes=4, train_per_class=16, val_per_class=4, seed=0)
    return str(root)
