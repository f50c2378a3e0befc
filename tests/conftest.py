"""Fixtures shared by the test folders: the seed, the GPU skip, tiny synthetic sets (built once per session)
and W&B in offline mode."""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from segdcn.data import SyntheticConfig, generate_synthetic
from tests.helpers import offline_wandb

settings.register_profile("segdcn", deadline=None, print_blob=True)
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "segdcn")

# The two sizes the tests share: "tiny" for readers and apps that need a few files, "small" (64 px, the
# training tests' crop) for runs whose loss or offsets must move within a few iterations.
SYNTHETIC_SIZES = {
    "tiny": {"image_size": 32, "num_train": 4, "num_val": 2, "min_extent": 4, "max_extent": 28},
    "small": {"image_size": 64, "num_train": 16, "num_val": 4, "min_extent": 6, "max_extent": 48},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """`synthetic_set(size="tiny", **settings)`: the root of a synthetic set in the VOC layout, one of
    SYNTHETIC_SIZES with `settings` (SyntheticConfig fields) changed, generated once per session for each
    config. Shared between tests: read it, or copy it (shutil.copytree) to change files."""
    built: dict[SyntheticConfig, Path] = {}

    def make(size: str = "tiny", **changes) -> Path:
        config = SyntheticConfig(**{**SYNTHETIC_SIZES[size], **changes})
        if config not in built:
            root = tmp_path_factory.mktemp(f"synthetic_{size}")
            generate_synthetic(root, config, workers=1, progress=False)
            built[config] = root
        return built[config]

    return make


@pytest.fixture
def wandb_env(monkeypatch, tmp_path_factory):
    """W&B offline for one test (see offline_wandb), with caches of its own."""
    offline_wandb(monkeypatch, tmp_path_factory.mktemp("wandb_home"))
