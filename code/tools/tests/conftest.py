"""Shared fixtures: a tiny generated demo set, zip_submission.py, CPU threads; the ``cuda``
marker (tests that need a CUDA device: skipped without one, run by ``pytest -m cuda``, as
gpu_check.sh does). From code/: ``python -m pytest tools/tests`` (tools/ and tools/tests/ are
packages, so pytest imports from code/: ``import main``, ``from tools import run_experiments``)."""
import importlib.util
import os

import pytest
import torch

from tools import REPO_DIR

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
    from tools.make_demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(str(root), num_classes=4, train_per_class=16, val_per_class=4, seed=0)
    return str(root)


@pytest.fixture(scope="session")
def zip_submission():
    """The repository's zip_submission.py (the course's script at the root, outside code/), loaded
    from its file."""
    spec = importlib.util.spec_from_file_location("zip_submission", os.path.join(REPO_DIR, "zip_submission.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
