"""Session-wide servers for the flow tests: ONE local Ray cluster and ONE Prefect test server (a real
Prefect API on a temporary SQLite database), started on first use and stopped at the end. In-process
flows use them directly; subprocesses of the CLI reach them through RAY_ADDRESS / PREFECT_API_URL. The tests of
deployments use a real `prefect server start` and `ray start --head` instead, also one of each per session."""

from __future__ import annotations

import os

import pytest
import torch
import transformers
from attn_audit.flows.prefect_settings import configure_environment
from attn_audit.storage.datasets import CLASS_NAMES
from PIL import Image

from tests import tiny_models
from tests.tiny_models import SMALL

configure_environment()  # the settings the CLI uses (analytics off, quiet logs, 90 s start-up)


@pytest.fixture(scope="session")
def ray_cluster():
    """A fresh local Ray (2 CPUs) for the whole session; yields its RayInfo (address for subprocesses)."""
    from attn_audit.flows.ray_cluster import ray_session

    saved = os.environ.pop("RAY_ADDRESS", None)  # never a cluster of the developer's
    try:
        with ray_session(num_cpus=2) as info:
            yield info
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="session")
def prefect_api():
    """Prefect's test harness (one temporary server for the session); yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def external_servers(tmp_path_factory):
    """A real `prefect server start` and `ray start --head` (tests/e2e/servers.py), shared by the tests of
    scheduled and external runs; yields their Servers."""
    from tests.e2e.servers import servers

    with servers(tmp_path_factory.mktemp("servers")) as found:
        yield found


@pytest.fixture(scope="module")
def image_world(tmp_path_factory):
    """A tiny stock ViT (32x32 RGB, labels alpha/beta/gamma) in vit/, and images/ of class folders with five
    images and one corrupt file (beta/corrupt.png)."""
    root = tmp_path_factory.mktemp("world")
    tiny_models.vit().save_pretrained(root / "vit")
    for i, sample in enumerate(tiny_models.images(5)):
        folder = root / "images" / ("alpha" if i % 2 else "beta")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample["image"]).save(folder / f"{i}.png")
    (root / "images" / "beta" / "corrupt.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="session")
def canvas_vit(tmp_path_factory):
    """A tiny random stock ViT for builtin:fashion-canvas (64x64 grey, 10 classes; 4x4 patch grid), saved
    with save_pretrained like a user's checkpoint."""
    folder = tmp_path_factory.mktemp("canvas_vit")
    config = transformers.ViTConfig(image_size=64, patch_size=16, num_channels=1,
                                    id2label=dict(enumerate(CLASS_NAMES)), **SMALL)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    return folder
